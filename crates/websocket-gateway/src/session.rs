//! The WebSocket transport of the [client core](crate::core), on the socket
//! itself (RFC 6455 framing in [`frames`](crate::frames)).
//!
//! Queued frames are written straight to the socket: a batch is encoded
//! into one per-thread buffer and handed to the kernel in one write; only
//! what the kernel does not take at once is kept, per connection, until the
//! socket is writable again. An idle connection thus holds no read or write
//! buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::Client;
use crate::core::{self, Heard, Transport, reason};
use crate::frames::{self, FrameError, Incoming, Reader};
use crate::queue::Outbound;

/// Bytes read from the socket at a time (on the stack, not per connection).
const READ_CHUNK: usize = 4096;

/// Unsent bytes beyond which pings and pongs are skipped: a client that
/// does not read cannot take them anyway.
const CONTROL_BACKLOG: usize = 64 * 1024;

/// How long a closed connection waits for the client to close its side
/// after the close frame was sent.
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// Where a batch of frames is encoded before its one write. Per thread,
    /// not per connection: the write usually takes it all.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the kernel has not yet taken, per connection; empty (no allocation)
/// for a client that keeps up.
#[derive(Default)]
pub(crate) struct Unsent(Vec<u8>);

impl Unsent {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes `bytes` now, keeping what the socket does not take.
    fn write(&mut self, tcp: &TcpStream, bytes: &[u8]) -> io::Result<()> {
        let written = if self.0.is_empty() { try_send(tcp, bytes)? } else { 0 };
        self.0.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Writes what the socket takes now; returns whether all is sent.
    fn flush(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while !self.0.is_empty() {
            match try_send(tcp, &self.0)? {
                0 => return Ok(false),
                n => drop(self.0.drain(..n)),
            }
        }
        self.0 = Vec::new();
        Ok(true)
    }

    /// Waits until everything is sent.
    async fn flush_all(&mut self, tcp: &TcpStream) -> io::Result<()> {
        while !self.flush(tcp)? {
            tcp.writable().await?;
        }
        Ok(())
    }

    /// Queues a control frame; pings and pongs are skipped for a client
    /// far behind.
    fn control(&mut self, tcp: &TcpStream, opcode: u8, payload: &[u8]) -> io::Result<()> {
        if self.0.len() > CONTROL_BACKLOG {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(payload.len() + 2);
        frames::put_frame(&mut frame, opcode, payload);
        self.write(tcp, &frame)
    }
}

/// Hands the kernel what it takes of `bytes` without waiting: the count,
/// 0 if the socket is full.
fn try_send(tcp: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    match tcp.try_write(bytes) {
        Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(err) => Err(err),
    }
}

/// The session, to run until it ends (then it closes). `early` holds bytes
/// the client sent right after its upgrade request.
///
/// Not an `async fn`: that would keep its arguments beside the core's
/// future for the connection's whole life.
pub(crate) fn run(client: Client, tcp: TcpStream, early: &[u8]) -> impl Future<Output = ()> + use<> {
    let mut reader = Reader::new(client.gw.settings().limits.max_frame_size);
    reader.extend(early);
    // Bytes that arrived with the upgrade request are read first.
    let readable_now = !early.is_empty();
    core::run(client, WebSocket { tcp, reader, unsent: Unsent::default(), readable_now })
}

/// The WebSocket transport: the socket, what it has read and not yet
/// parsed, and what it could not yet write.
struct WebSocket {
    tcp: TcpStream,
    reader: Reader,
    unsent: Unsent,
    /// Bytes were read that may hold whole messages.
    readable_now: bool,
}

impl Transport for WebSocket {
    const SPEAKS: bool = true;

    fn send(&mut self, frames: &mut VecDeque<Outbound>) -> io::Result<()> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for entry in frames.drain(..) {
                for (_, text) in entry.frames() {
                    frames::put_frame(scratch, frames::OP_TEXT, text.as_bytes());
                }
            }
            let written = self.unsent.write(&self.tcp, scratch);
            if scratch.capacity() > 1 << 20 {
                // A large replay passed; do not keep its buffer.
                *scratch = Vec::new();
            }
            written
        })
    }

    fn unsent(&self) -> usize {
        self.unsent.0.len()
    }

    fn heartbeat(&mut self) -> io::Result<()> {
        self.unsent.control(&self.tcp, frames::OP_PING, b"")
    }

    fn next(&mut self) -> impl Future<Output = Heard> {
        // Polled in place: an awaited `ready()` would be a future (and a
        // waiter node) kept by every idle connection.
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    async fn finish(self, ending: Option<CloseReason>, wait: Duration) {
        drop(self.reader);
        close_socket(self.tcp, self.unsent, ending, wait).await;
    }
}

impl WebSocket {
    /// What the client or the socket does next: whole messages first, then
    /// room to write (while bytes are unsent), then input.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Heard> {
        loop {
            if self.readable_now {
                return Poll::Ready(match self.reader.next_message() {
                    Ok(Some(message)) => self.heard(message),
                    Ok(None) => {
                        self.readable_now = false;
                        Heard::Alive
                    }
                    Err(err) => {
                        if let FrameError::Protocol(detail) = &err {
                            tracing::debug!(error = %detail, "websocket protocol error");
                        }
                        Heard::Broken(reason(err.close_code(), err.to_string()))
                    }
                });
            }
            // A write or read that finds the socket not ready after all
            // clears its readiness: poll again to wait for the next.
            let mut again = false;
            if !self.unsent.is_empty() {
                match self.tcp.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => match self.unsent.flush(&self.tcp) {
                        Ok(true) => return Poll::Ready(Heard::Flushed),
                        Ok(false) => again = true,
                        Err(_) => return Poll::Ready(Heard::Gone),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Heard::Gone),
                    Poll::Pending => {}
                }
            }
            match self.tcp.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => match read_some(&self.tcp, &mut self.reader) {
                    Ok(read) => self.readable_now = read,
                    Err(_) => return Poll::Ready(Heard::Gone),
                },
                Poll::Ready(Err(_)) => return Poll::Ready(Heard::Gone),
                Poll::Pending if again => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn heard(&mut self, message: Incoming) -> Heard {
        match message {
            Incoming::Text(text) => Heard::Text(text),
            Incoming::Binary => Heard::Binary,
            Incoming::Ping(payload) => match self.unsent.control(&self.tcp, frames::OP_PONG, &payload) {
                Ok(()) => Heard::Alive,
                Err(_) => Heard::Gone,
            },
            Incoming::Pong => Heard::Alive,
            // Echo the client's code (RFC 6455 §5.5.1).
            Incoming::Close(None) => Heard::Closing(CloseReason::from(CloseCode::Normal)),
            Incoming::Close(Some(theirs)) => Heard::Closing(if frames::valid_close_code(u16::from(theirs.code)) {
                CloseReason::from(theirs.code)
            } else {
                reason(pulse_protocol::browser::close::PROTOCOL_ERROR, "invalid close code")
            }),
        }
    }
}

/// Sends the close frame (if any) after what is unsent, waiting at most
/// `close_wait` for a client that does not read, then half-closes and gives
/// the client a moment to close its side, so the close frame is not lost to
/// a reset.
pub(crate) async fn close_socket(
    mut tcp: TcpStream,
    mut unsent: Unsent,
    reason: Option<CloseReason>,
    close_wait: Duration,
) {
    let Some(reason) = reason else { return };
    let mut frame = Vec::new();
    frames::put_close(&mut frame, &reason);
    if unsent.write(&tcp, &frame).is_err() {
        return;
    }
    if !matches!(tokio::time::timeout(close_wait, unsent.flush_all(&tcp)).await, Ok(Ok(()))) {
        return;
    }
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            let mut discard = [0u8; 512];
            match tcp.try_read(&mut discard) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Reads what the socket has into `reader`. Returns whether anything was
/// read; end of stream is an error.
fn read_some(tcp: &TcpStream, reader: &mut Reader) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    match tcp.try_read(&mut chunk) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => {
            reader.extend(&chunk[..n]);
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is its session's task, its queue and its socket,
    /// and the task is mostly this future, kept for the connection's whole
    /// life: its size is memory per connection (target: 2 KiB per idle
    /// connection in all, `scripts/bench --only idle`). It was 2,104 bytes
    /// when the session was an `async fn` holding copies of its arguments
    /// and a stored future for each thing it waited on. Tokio allocates a
    /// task in steps of 128 bytes, header included.
    #[test]
    fn an_idle_connection_is_small() {
        fn future_size<F: Future>(_: impl Fn(Client, TcpStream, &'static [u8]) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(run);
        assert!(size <= 768, "the session's future is {size} bytes");
    }
}
