//! The store's one Redis connection, and the deadline of every call on it.

use std::future::Future;

use pulse_bus::deadline;
use redis::aio::MultiplexedConnection;

use super::RedisStore;
use crate::StoreError;

/// One multiplexed connection shared by every operation of the store.
///
/// Concurrent commands are pipelined on it, where a pool of connections
/// would hold one connection per command in flight (and check each one with
/// a `PING` round trip when it is handed out). The connection is taken from
/// the bus's pool, so it has the bus's settings; when it fails (Redis
/// restarted, a command timed out) it is dropped and the next operation
/// takes a fresh one.
#[derive(Default)]
pub(super) struct SharedConnection {
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        // The guarded value is only ever replaced whole: a panic elsewhere
        // cannot leave it half-written.
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn get(&self, pool: &deadpool_redis::Pool) -> Result<MultiplexedConnection, StoreError> {
        if let Some(connection) = self.current().clone() {
            return Ok(connection);
        }
        let connection = deadpool_redis::Connection::take(pool.get().await?);
        *self.current() = Some(connection.clone());
        Ok(connection)
    }

    fn forget(&self) {
        self.current().take();
    }
}


impl RedisStore {
    pub(super) async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        self.connection.get(self.bus.pool()).await
    }

    /// Awaits one request sent on the shared connection within the bus's
    /// `redis.request_timeout` ([`deadline::within`], the one deadline of
    /// every Redis call), so that a Redis that hangs is treated like one
    /// that is down ([`StoreError::Unavailable`]). A script cut off this way
    /// has either run completely or not at all: a caller that retries a
    /// report gets the dedupe answer if it had run. A connection that
    /// failed is replaced for the next call.
    pub(super) async fn call<T>(&self, request: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        deadline::within(self.bus.request_timeout(), request).await.map_err(|err| {
            if !err.connection_usable() {
                self.connection.forget();
            }
            StoreError::from(err)
        })
    }
}
