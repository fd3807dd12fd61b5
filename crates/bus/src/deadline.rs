//! The one deadline of a Redis call, used by the bus and the store alike:
//! a request either is answered within `redis.request_timeout` or fails, and
//! the error says whether its connection may serve the next request.

use std::future::Future;
use std::time::Duration;

/// How a Redis call with a deadline failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Sent, but not answered in time. It may still run later (Redis holds
    /// the writes of paused clients): its outcome is unknown, and its
    /// connection must not serve another request.
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
    /// The connection failed after the request went out: outcome unknown,
    /// connection unusable.
    #[error("the redis connection failed")]
    Lost(#[source] redis::RedisError),
    /// Redis refused the request without running it because it cannot
    /// serve now (a replica after a failover, loading, busy): this
    /// connection may lead to the old primary; a new one may not.
    #[error("redis cannot serve the request now")]
    Refused(#[source] redis::RedisError),
    /// Redis answered with an error (a failed command or script): the
    /// connection is fine.
    #[error("redis answered with an error")]
    Failed(#[source] redis::RedisError),
}

impl CallError {
    /// Whether the connection the call ran on may serve another request.
    pub fn connection_usable(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the request may have taken effect although it failed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::TimedOut(_) | Self::Lost(_))
    }

    /// Whether retrying later may succeed (503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Failed(err) => crate::error::is_unavailable(err),
            _ => true,
        }
    }
}

/// Awaits `request` for at most `timeout`, classifying how it failed.
///
/// # Errors
///
/// [`CallError`]: timed out, connection lost, refused, or answered with an
/// error.
pub async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if err.is_timeout() || err.is_io_error() || err.is_connection_dropped() => {
            Err(CallError::Lost(err))
        }
        Ok(Err(err)) if crate::error::not_serving(&err) => Err(CallError::Refused(err)),
        Ok(Err(err)) => Err(CallError::Failed(err)),
        Err(_) => Err(CallError::TimedOut(timeout)),
    }
}
