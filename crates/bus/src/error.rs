/// What a [`BusError`] came from, kept whole: the Redis, pool or deadline
/// error, or a message where the bus itself found the fault. Print a
/// `BusError` with its sources ([`error_chain`]) to see it.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backing store cannot be reached (Redis down, pool exhausted,
    /// timed out). Retrying later may succeed; HTTP services answer 503.
    #[error("the event bus is unavailable")]
    Unavailable(#[source] Source),
    /// A request was sent but not answered in time, and its connection was
    /// discarded: it may or may not have taken effect. A publish with an
    /// idempotency key can be retried with the same key; one without cannot
    /// be retried without risking a duplicate.
    #[error("the event bus did not answer in time; the request may have taken effect")]
    OutcomeUnknown(#[source] Source),
    /// Redis answered with an error other than a connection failure.
    #[error("redis command failed")]
    Redis(#[source] redis::RedisError),
    /// An entry in history or on the live channel is not a valid event.
    #[error("malformed event in channel {channel:?}: {reason}")]
    Corrupt { channel: String, reason: String },
    /// The bus has shut down.
    #[error("the event bus has shut down")]
    Closed,
}

impl BusError {
    /// The error of a read: a read that may or may not have run changed
    /// nothing, so an unknown outcome is plain unavailability.
    pub(crate) fn read(self) -> Self {
        match self {
            Self::OutcomeUnknown(reason) => Self::Unavailable(reason),
            other => other,
        }
    }

    /// Whether retrying later may succeed (answer 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_) | Self::Closed)
    }
}

impl From<redis::RedisError> for BusError {
    fn from(err: redis::RedisError) -> Self {
        if is_unavailable(&err) { Self::Unavailable(err.into()) } else { Self::Redis(err) }
    }
}

/// Whether a Redis error is transient unavailability (answer 503, retry
/// later) rather than a bug or bad data (500): the connection failed or
/// timed out, or Redis refused the command without running it (see
/// [`not_serving`]). The one classifier of the bus and the store.
pub fn is_unavailable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || not_serving(err)
}

/// Whether Redis refused the command because it cannot serve it now, and
/// ran none of it: a replica after a failover (`READONLY`), a server loading
/// its data (`LOADING`), a busy script (`BUSY`), or a cluster or master in
/// transition. Such a refusal is transient (503), not a bug (500).
pub(crate) fn not_serving(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    ) || err.code() == Some("BUSY")
}

impl From<crate::deadline::CallError> for BusError {
    fn from(err: crate::deadline::CallError) -> Self {
        use crate::deadline::CallError;
        match err {
            CallError::TimedOut(_) | CallError::Lost(_) => Self::OutcomeUnknown(err.into()),
            CallError::Refused(_) => Self::Unavailable(err.into()),
            CallError::Failed(err) => err.into(),
        }
    }
}

/// An error and its sources, as one line: `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

impl From<deadpool_redis::PoolError> for BusError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        match err {
            deadpool_redis::PoolError::Backend(err) => err.into(),
            other => Self::Unavailable(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cause travels as the error's source, not as text in its message:
    /// a caller can print the chain or look at the cause itself.
    #[test]
    fn keeps_the_cause_as_its_source() {
        let redis = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = BusError::from(redis);
        assert!(err.is_unavailable());
        assert_eq!(err.to_string(), "the event bus is unavailable");
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<redis::RedisError>().is_some(), "{source:?}");
        assert!(error_chain(&err).starts_with("the event bus is unavailable: "), "{}", error_chain(&err));
        // A read whose outcome is unknown is unavailable, with the same cause.
        let unknown = BusError::OutcomeUnknown("no answer".into()).read();
        assert!(matches!(unknown, BusError::Unavailable(_)));
        assert_eq!(error_chain(&unknown), "the event bus is unavailable: no answer");
    }
}
