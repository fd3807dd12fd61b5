//! What can go wrong in the store.

use pulse_bus::BusError;

/// A store operation that failed. Nothing was changed and nothing was
/// published, unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (Redis down, pool exhausted, timed
    /// out). Retrying later may succeed; HTTP services answer 503.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error (a failed command or script).
    #[error("store backend error: {0}")]
    Backend(String),
    /// Stored data that is not what the store writes (edited by hand, or
    /// written by an incompatible version).
    #[error("corrupt {what} in the store: {reason}")]
    Corrupt { what: String, reason: String },
    /// Concurrent changes of the same agent kept invalidating this one.
    #[error("agent {agent_id} is changing too fast: gave up after {attempts} attempts")]
    Contention { agent_id: String, attempts: usize },
}

impl StoreError {
    /// Whether retrying later may succeed (answer 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Corrupt { what: what.into(), reason: reason.to_string() }
    }
}

impl From<BusError> for StoreError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::Unavailable(_) | BusError::OutcomeUnknown(_) | BusError::Closed => {
                Self::Unavailable(err.to_string())
            }
            BusError::Redis(err) => err.into(),
            BusError::Corrupt { channel, reason } => Self::Corrupt { what: format!("event in {channel}"), reason },
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        // The bus's classifier: one rule for what is transient.
        if pulse_bus::redis_unavailable(&err) {
            Self::Unavailable(pulse_bus::error_chain(&err))
        } else {
            Self::Backend(pulse_bus::error_chain(&err))
        }
    }
}

impl From<pulse_bus::deadline::CallError> for StoreError {
    fn from(err: pulse_bus::deadline::CallError) -> Self {
        match err {
            pulse_bus::deadline::CallError::Failed(err) => err.into(),
            other => Self::Unavailable(pulse_bus::error_chain(&other)),
        }
    }
}

impl From<deadpool_redis::PoolError> for StoreError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        // The bus decides what a pool failure means, for both.
        BusError::from(err).into()
    }
}
