//! The threads WebSocket sessions run on, apart from the HTTP workers.
//!
//! A session spends its life writing events to its browser. On the actix
//! worker that took its upgrade, it would share that worker with every HTTP
//! connection the worker serves (ingest's publish API in standalone Pulse):
//! a worker busy with the fan-out of a burst came back to an HTTP
//! connection only after actix's keep-alive or request timer had expired,
//! and the connection was dropped with the request unread. So the upgrade
//! hands the socket over to one of these threads, each a Tokio runtime of
//! its own, and the HTTP workers only answer requests; the kernel shares
//! the cores between both.
//!
//! The threads stop when the last handle is dropped (with the server's
//! workers), dropping the sessions still open, as the workers did.

use std::net::TcpStream as StdTcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::session;

/// A socket taken from an upgrade, its client, and the bytes the client
/// sent after its upgrade request.
struct Handover {
    client: Client,
    tcp: StdTcpStream,
    early: bytes::BytesMut,
}

/// Handles to the session threads. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SessionThreads {
    inner: Arc<Inner>,
}

struct Inner {
    threads: Vec<mpsc::UnboundedSender<Handover>>,
    next: AtomicUsize,
}

impl SessionThreads {
    /// Starts `count` threads (at least one).
    ///
    /// # Errors
    /// When a thread or its runtime cannot be created.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(count.max(1));
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::Builder::new().name(format!("pulse-ws-{n}")).spawn(move || serve(&runtime, rx))?;
            threads.push(tx);
        }
        Ok(Self { inner: Arc::new(Inner { threads, next: AtomicUsize::new(0) }) })
    }

    /// Runs the session of `client` on `tcp` on one of the threads, in
    /// turn.
    ///
    /// # Errors
    /// When the socket cannot be taken off this thread's runtime; the
    /// client is dropped.
    pub(crate) fn run(&self, client: Client, tcp: TcpStream, early: bytes::BytesMut) -> std::io::Result<()> {
        let tcp = tcp.into_std()?;
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.threads.len();
        // A thread stops only when every handle is gone: this one is not.
        let _ = self.inner.threads[n].send(Handover { client, tcp, early });
        Ok(())
    }
}

/// A session thread: takes sockets until every handle is dropped, then
/// drops the sessions still open.
fn serve(runtime: &tokio::runtime::Runtime, mut handovers: mpsc::UnboundedReceiver<Handover>) {
    let sessions = tokio::task::LocalSet::new();
    sessions.block_on(runtime, async {
        while let Some(Handover { client, tcp, early }) = handovers.recv().await {
            // Registered with this thread's reactor.
            match TcpStream::from_std(tcp) {
                Ok(tcp) => drop(tokio::task::spawn_local(session::run(client, tcp, &early))),
                Err(err) => tracing::warn!(error = %err, "cannot take over a WebSocket connection"),
            }
        }
    });
}
