//! The store's one Redis connection, and the deadline of every call on it.

use std::future::Future;

use pulse_bus::RedisConnection;
use pulse_bus::deadline;

use super::RedisStore;
use crate::StoreError;

/// The store's multiplexed connections: one per thread that uses the store.
///
/// Concurrent commands of a thread are pipelined on its connection, where a
/// pool of connections would hold one connection per command in flight (and
/// check each one with a `PING` round trip when it is handed out). Each
/// connection is opened on the thread that uses it, so its driver task runs
/// on that thread's runtime (every actix worker has its own): a command and
/// its answer never wake another thread. With one connection shared by all
/// workers, those wake-ups (an `eventfd` write and an `epoll` return per
/// command and per answer) were about a tenth of ingest's CPU. When a
/// connection fails (Redis restarted, a command timed out) it is dropped and
/// the thread's next operation opens a fresh one.
///
/// Opening is done by one operation at a time: the operations that find no
/// connection (all of a thread's requests in flight, on the first burst or
/// after Redis restarted) wait for the one being opened and share it,
/// rather than each opening its own and dropping all but one.
#[derive(Default)]
pub(super) struct SharedConnection {
    /// At most one entry per thread (the workers of a process: a handful).
    current: std::sync::Mutex<Vec<(std::thread::ThreadId, RedisConnection)>>,
    /// Held while a connection is being opened.
    opening: tokio::sync::Mutex<()>,
}

impl SharedConnection {
    fn current(&self) -> std::sync::MutexGuard<'_, Vec<(std::thread::ThreadId, RedisConnection)>> {
        // Entries are only ever added or removed whole: a panic elsewhere
        // cannot leave one half-written.
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn get(&self, bus: &pulse_bus::RedisBus) -> Result<RedisConnection, StoreError> {
        let thread = std::thread::current().id();
        if let Some(connection) = self.of(thread) {
            return Ok(connection);
        }
        // Boxed: opening is rare, and its future would make every call's
        // future larger.
        Box::pin(self.open(bus, thread)).await
    }

    fn of(&self, thread: std::thread::ThreadId) -> Option<RedisConnection> {
        self.current().iter().find(|(t, _)| *t == thread).map(|(_, connection)| connection.clone())
    }

    async fn open(
        &self,
        bus: &pulse_bus::RedisBus,
        thread: std::thread::ThreadId,
    ) -> Result<RedisConnection, StoreError> {
        let _opening = self.opening.lock().await;
        // Opened by another operation of this thread while this one waited.
        if let Some(connection) = self.of(thread) {
            return Ok(connection);
        }
        let connection = bus.open_connection().await?;
        self.current().push((thread, connection.clone()));
        Ok(connection)
    }

    /// Drops this thread's connection; its next operation opens a new one.
    fn forget(&self) {
        let thread = std::thread::current().id();
        self.current().retain(|(t, _)| *t != thread);
    }
}

impl RedisStore {
    pub(super) async fn conn(&self) -> Result<RedisConnection, StoreError> {
        self.connection.get(&self.bus).await
    }

    /// Sends `cmd` on this thread's connection and awaits it with
    /// [`call`](Self::call)'s deadline. Several queries awaited together
    /// are pipelined on that one connection (separate commands, not a
    /// `MULTI`: see `read_for_report`).
    pub(super) async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        self.call(cmd.query_async(&mut conn)).await
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

    /// Waits until replicas have every write sent on `conn` so far, as the
    /// bus's publishes do (`redis.replicas_to_ack`; on a cluster, on the
    /// master of `key`'s slot): a failover then cannot lose a change whose
    /// events are out, nor an event whose outbox entry is removed.
    pub(super) async fn replicated(&self, conn: &mut RedisConnection, key: &str) -> Result<(), StoreError> {
        if !self.bus.waits_for_replicas() {
            return Ok(());
        }
        // Boxed: the wait's future would triple the size of every change's
        // future, which is moved into a box per call, replicas or not.
        Box::pin(self.bus.wait_replicas(conn, key)).await.map_err(StoreError::from)
    }
}
