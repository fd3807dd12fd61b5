use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP forwarder between a service and what it connects to (Redis), for
/// network faults that a server-side `CLIENT KILL` cannot make:
///
/// - [`freeze`](Self::freeze): every connection stops moving bytes in both
///   directions but stays open, as in a partition or a failover that leaves
///   the old primary unreachable; new connections are accepted and forwarded
///   (unless frozen too, see [`freeze_all`](Self::freeze_all)).
/// - [`cut`](Self::cut): every open connection is closed at once.
///
/// Dropping it stops accepting and closes every connection.
pub struct TcpProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// Connections accepted before this generation stop moving bytes.
    frozen_before: u64,
    /// New connections are frozen too.
    freeze_new: bool,
    /// Connections accepted before this generation stop forwarding what the
    /// service sends (its requests); what the server sends still flows.
    requests_frozen_before: u64,
    /// Connections accepted before this generation are closed.
    cut_before: u64,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `target`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State::default());
        let accepted = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(listener, target, state.clone(), accepted.clone()));
        Ok(Self { addr, state, accepted, accept })
    }

    /// The address services should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://{addr}/`, for a proxy in front of Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Stops every connection open now from moving bytes (they stay open);
    /// connections made later work normally.
    pub fn freeze(&self) {
        let generation = self.accepted.load(Ordering::SeqCst);
        self.state.send_modify(|s| s.frozen_before = generation);
    }

    /// Stops every connection, open now or made later, from moving bytes.
    pub fn freeze_all(&self) {
        self.freeze();
        self.state.send_modify(|s| s.freeze_new = true);
    }

    /// Stops every connection open now from forwarding the service's bytes
    /// (requests, subscribes, pings) while the server's bytes (pub/sub
    /// messages) still reach the service: a server that stopped answering
    /// but keeps pushing.
    pub fn freeze_requests(&self) {
        let generation = self.accepted.load(Ordering::SeqCst);
        self.state.send_modify(|s| s.requests_frozen_before = generation);
    }

    /// Lets every connection move bytes again.
    pub fn thaw(&self) {
        self.state.send_modify(|s| {
            s.frozen_before = 0;
            s.freeze_new = false;
            s.requests_frozen_before = 0;
        });
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        let generation = self.accepted.load(Ordering::SeqCst);
        self.state.send_modify(|s| s.cut_before = generation);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.send_modify(|s| s.cut_before = u64::MAX);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Sender<State>, accepted: Arc<AtomicU64>) {
    while let Ok((client, _)) = listener.accept().await {
        // Generations start at 1 so that `frozen_before: 0` freezes nothing.
        let generation = accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let born_frozen = state.borrow().freeze_new;
        let mut watcher = state.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let mut up = [0u8; 16 * 1024];
            let mut down = [0u8; 16 * 1024];
            let frozen = |s: &State| (born_frozen && s.freeze_new) || generation <= s.frozen_before;
            loop {
                let current = *watcher.borrow_and_update();
                if generation <= current.cut_before {
                    return;
                }
                if frozen(&current) {
                    // Hold the sockets open and read nothing until thawed or cut.
                    if watcher.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let requests_flow = generation > current.requests_frozen_before;
                tokio::select! {
                    read = client_read.read(&mut up), if requests_flow => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
                    },
                    read = server_read.read(&mut down) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
                    },
                    changed = watcher.changed() => if changed.is_err() { return },
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"hi").await.ok()?;
        let mut buf = [0u8; 2];
        tokio::time::timeout(wait, stream.read_exact(&mut buf)).await.ok()?.ok()?;
        Some(buf.to_vec())
    }

    #[tokio::test]
    async fn freeze_holds_bytes_of_open_connections_until_thawed() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut old, Duration::from_secs(10)).await.as_deref(), Some(&b"hi"[..]));

        proxy.freeze();
        assert_eq!(round_trip(&mut old, Duration::from_millis(300)).await, None, "a frozen link moves no bytes");
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut new, Duration::from_secs(10)).await.as_deref(), Some(&b"hi"[..]));

        proxy.thaw();
        // The held request is answered once thawed.
        let mut buf = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), old.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[tokio::test]
    async fn freeze_requests_holds_what_the_client_sends_only() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, Duration::from_secs(10)).await.is_some());
        proxy.freeze_requests();
        assert_eq!(round_trip(&mut stream, Duration::from_millis(300)).await, None, "the request is held");
        proxy.thaw();
        let mut buf = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[tokio::test]
    async fn cut_closes_open_connections() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, Duration::from_secs(10)).await.is_some());
        proxy.cut();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "the connection is closed: {read:?}");
    }
}
