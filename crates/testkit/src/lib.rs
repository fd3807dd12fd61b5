//! Test helpers for Pulse: real parts, nothing faked.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port for one
//!   test, stopped when dropped (also on panic), which can be stopped,
//!   restarted on the same port, or have its clients killed to inject faults.
//! - [`RedisCluster`]: a private six-node Redis Cluster (three masters with
//!   a replica each), shared by the tests of a binary or started by one
//!   test of its own, which can lose a master (and fail over) or move a
//!   slot to another master while a test runs.
//! - [`WsClient`]: a real WebSocket client speaking the browser protocol.
//! - [`TcpProxy`]: a TCP forwarder that can freeze (stop moving bytes, keep
//!   the sockets) or cut its connections, for partitions and failovers.
//! - [`wait_until`]: poll a condition with a generous deadline instead of
//!   sleeping.
//!
//! Tests are run on loaded 2-core machines: every wait here takes a deadline
//! measured in seconds and fails with a message saying what did not happen.

mod proxy;
mod redis_cluster;
mod redis_server;
mod ws;

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

pub use proxy::TcpProxy;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use ws::WsClient;

/// The default deadline for a condition a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `condition` every 20 ms until it returns true; fails with `what`
/// after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future`, failing with `what` after `deadline`.
pub async fn within<T>(what: &str, deadline: Duration, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(deadline, future).await.map_err(|_| anyhow::anyhow!("timed out after {deadline:?}: {what}"))
}
