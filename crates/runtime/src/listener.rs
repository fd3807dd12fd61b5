//! [`listen`]: a TCP listener with an accept queue deep enough for bursts.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};

use tokio::net::TcpSocket;

/// Connections the kernel holds for a server that has not accepted them yet.
pub const BACKLOG: u32 = 4096;

/// Binds `addr` with a [`BACKLOG`]-deep accept queue; every Pulse server
/// listens this way. `std`'s
/// `TcpListener::bind` asks for 128, and actix's own backlog setting applies
/// only to addresses it binds itself; with 128, a burst of clients (a drained
/// gateway's all reconnecting at once) overflows the queue and the kernel
/// drops SYNs, which clients retry only after a second. Call it within a
/// Tokio runtime.
pub fn listen(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in addr.to_socket_addrs()? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        let bound = socket.bind(addr).and_then(|()| socket.listen(BACKLOG));
        match bound {
            Ok(listener) => return listener.into_std(),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")))
}

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`) to its hard
/// limit, and returns the limit now in force. Every connection holds a file
/// descriptor, and the usual soft default (1024) caps a gateway far below
/// `gateway.max_connections`; the hard limit is what the container runtime
/// grants (compose `ulimits: nofile`, containerd's default on Kubernetes).
/// On failure the limit stays as it was, with a warning: not a reason to
/// refuse to start.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit");
            Some(limit)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    }
}

/// The most connections a process may hold with `limit` open files: all
/// but a reserve for everything else it opens (listeners, Redis
/// connections, log and telemetry sockets): a quarter of the limit, at most
/// 1024.
pub fn connections_within(limit: u64) -> usize {
    let reserve = (limit / 4).min(1024);
    usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// Raises the open-file limit ([`raise_open_file_limit`]) and holds
/// `max_connections` below what it allows ([`connections_within`]), with a
/// warning when it must lower it: past the limit, an accepted connection
/// would get no answer at all (and nor would `/healthz`), where below it
/// the server answers 503.
pub fn fit_connections_to_file_limit(max_connections: usize) -> usize {
    let Some(limit) = raise_open_file_limit() else { return max_connections };
    let allowed = connections_within(limit);
    if max_connections > allowed {
        tracing::warn!(
            max_connections,
            allowed,
            open_file_limit = limit,
            "gateway.max_connections is above what the open-file limit allows; holding it at the lower value \
             (raise the limit, e.g. the container's nofile ulimit)"
        );
        return allowed;
    }
    max_connections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_a_reserve_of_open_files() {
        assert_eq!(connections_within(256), 192);
        assert_eq!(connections_within(1024), 768);
        assert_eq!(connections_within(1_048_576), 1_047_552);
        assert_eq!(connections_within(0), 0);
    }

    #[tokio::test]
    async fn listens_on_a_free_port_and_accepts() {
        let listener = listen(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        assert!(listener.accept().is_ok());
    }

    #[test]
    fn the_soft_open_file_limit_rises_to_the_hard_one() {
        let limit = raise_open_file_limit().unwrap();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(soft, limit);
        assert_eq!(soft, hard);
    }
}
