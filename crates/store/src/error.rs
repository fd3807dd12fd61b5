//! What can go wrong in the store.

use pulse_bus::BusError;

/// What a [`StoreError`] came from, kept whole: the Redis, bus or decoding
/// error, or a message where the store itself found the fault (a script
/// that answered something it never answers). Print a `StoreError` with
/// its sources (`pulse_bus::error_chain`, `{:#}` of `anyhow`) to see it.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// A store operation that failed. Nothing was changed and nothing was
/// published, unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (Redis down, pool exhausted, timed
    /// out). Retrying later may succeed; HTTP services answer 503.
    #[error("the store is unavailable")]
    Unavailable(#[source] Source),
    /// The backend answered with an error (a failed command or script).
    #[error("the store's backend failed")]
    Backend(#[source] Source),
    /// Stored data that is not what the store writes (edited by hand, or
    /// written by an incompatible version).
    #[error("corrupt {what} in the store")]
    Corrupt {
        what: String,
        #[source]
        source: Source,
    },
    /// Concurrent changes of the same agent kept invalidating this one.
    #[error("agent {agent_id} is changing too fast: gave up after {attempts} attempts")]
    Contention { agent_id: String, attempts: usize },
}

impl StoreError {
    /// Whether retrying later may succeed (answer 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn corrupt(what: impl Into<String>, source: impl Into<Source>) -> Self {
        Self::Corrupt { what: what.into(), source: source.into() }
    }

    /// A fault the store found itself, with what it was doing.
    pub(crate) fn backend(message: impl Into<String>) -> Self {
        Self::Backend(message.into().into())
    }
}

impl From<BusError> for StoreError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::Unavailable(_) | BusError::OutcomeUnknown(_) | BusError::Closed => Self::Unavailable(err.into()),
            BusError::Redis(err) => err.into(),
            BusError::Corrupt { channel, reason } => {
                Self::Corrupt { what: format!("event in {channel}"), source: reason.into() }
            }
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        // The bus's classifier: one rule for what is transient.
        if pulse_bus::redis_unavailable(&err) { Self::Unavailable(err.into()) } else { Self::Backend(err.into()) }
    }
}

impl From<pulse_bus::deadline::CallError> for StoreError {
    fn from(err: pulse_bus::deadline::CallError) -> Self {
        match err {
            pulse_bus::deadline::CallError::Failed(err) => err.into(),
            other => Self::Unavailable(other.into()),
        }
    }
}

impl From<deadpool_redis::PoolError> for StoreError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        // The bus decides what a pool failure means, for both.
        BusError::from(err).into()
    }
}

/// The source of the [`StoreError::Unavailable`] of a change that was
/// made, and whose events could not all be published (or replicated) at
/// once: they go out with the agent's next change or the heartbeat
/// checker's sweep.
#[derive(Debug, thiserror::Error)]
#[error("{made} change(s) made; their events are not all published (or replicated) yet, and will be")]
pub struct EventsDelayed {
    /// How many changes were made.
    pub made: usize,
    /// Why their events could not be published at once.
    #[source]
    pub source: StoreError,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cause travels as the error's source, not as text in its message,
    /// so a caller can print the chain or look at the cause itself.
    #[test]
    fn keeps_the_cause_as_its_source() {
        let redis = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = StoreError::from(redis);
        assert!(err.is_unavailable());
        assert_eq!(err.to_string(), "the store is unavailable");
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<redis::RedisError>().is_some(), "{source:?}");
        assert!(pulse_bus::error_chain(&err).starts_with("the store is unavailable: "));

        let err = StoreError::from(BusError::Closed);
        let source = std::error::Error::source(&err).expect("a source");
        assert!(matches!(source.downcast_ref::<BusError>(), Some(BusError::Closed)), "{source:?}");
    }
}
