/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backing store cannot be reached (Redis down, pool exhausted,
    /// timed out). Retrying later may succeed; HTTP services answer 503.
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    /// A request was sent but not answered in time, and its connection was
    /// discarded: it may or may not have taken effect. A publish with an
    /// idempotency key can be retried with the same key; one without cannot
    /// be retried without risking a duplicate.
    #[error("the event bus did not answer in time; the request may have taken effect: {0}")]
    OutcomeUnknown(String),
    /// Redis answered with an error other than a connection failure.
    #[error("redis command failed: {0}")]
    Redis(redis::RedisError),
    /// An entry in history or on the live channel is not a valid event.
    #[error("malformed event in channel {channel:?}: {reason}")]
    Corrupt { channel: String, reason: String },
    /// The bus has shut down.
    #[error("the event bus has shut down")]
    Closed,
}

impl BusError {
    /// Whether retrying later may succeed (answer 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_) | Self::Closed)
    }
}

impl From<redis::RedisError> for BusError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Redis(err)
        }
    }
}

impl From<deadpool_redis::PoolError> for BusError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        match err {
            deadpool_redis::PoolError::Backend(err) => err.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
