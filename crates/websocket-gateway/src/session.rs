//! The WebSocket session: one connection's loop, on the socket itself.
//!
//! The loop waits on the client's queue, the socket, one timer (heartbeat,
//! auth/token deadline, drain) and the drain signal. The hub never waits on
//! it: the queue sits between them. Queued frames are written straight to the
//! socket: everything queued is encoded into one per-thread buffer and handed
//! to the kernel in one write; only what the kernel does not take at once is
//! kept, per connection, until the socket is writable again. An idle
//! connection thus holds no read or write buffer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason};
use pulse_protocol::browser::close;
use pulse_protocol::{ClientMessage, ControlMessage, ErrorCode, ProtocolError as ParseError};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::auth::Identity;
use crate::connection::Connection;
use crate::frames::{self, FrameError, Incoming, Reader};
use crate::limits::TokenBucket;
use crate::metrics::ClosedBy;
use crate::queue::{Outbound, QueueStatus};
use crate::snapshot;

/// Violations older than this are forgiven.
const VIOLATION_MEMORY: Duration = Duration::from_secs(60);

/// Far enough to mean "never" for a timer.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// A batch buffer of at most this many frames is released after its write.
const SMALL_BATCH: usize = 8;

/// Bytes read from the socket at a time (on the stack, not per connection).
const READ_CHUNK: usize = 4096;

/// Unsent bytes beyond which pings and pongs are skipped: a client that
/// does not read cannot take them anyway.
const CONTROL_BACKLOG: usize = 64 * 1024;

/// How long a closed connection waits for the client to close its side
/// after the close frame was sent.
const LINGER: Duration = Duration::from_secs(2);

pub(crate) fn reason(code: u16, description: impl Into<String>) -> CloseReason {
    CloseReason { code: CloseCode::from(code), description: Some(description.into()) }
}

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

enum Flushed {
    Open,
    Slow,
    Gone,
}

impl From<QueueStatus> for Flushed {
    fn from(status: QueueStatus) -> Self {
        match status {
            QueueStatus::Open => Self::Open,
            QueueStatus::Overflowed => Self::Slow,
            QueueStatus::Closed => Self::Gone,
        }
    }
}

/// Takes everything queued and writes it in one go.
fn write_queued(conn: &Connection, tcp: &TcpStream, unsent: &mut Unsent, batch: &mut VecDeque<Outbound>) -> Flushed {
    let status = conn.queue.take(batch);
    if status != QueueStatus::Open {
        return status.into();
    }
    if batch.is_empty() {
        return Flushed::Open;
    }
    let written = SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        for frame in batch.drain(..) {
            frames::put_frame(scratch, frames::OP_TEXT, frame.text.as_bytes());
        }
        let written = unsent.write(tcp, scratch);
        // Small batches do not keep their buffer: an idle client holds none.
        if batch.capacity() <= SMALL_BATCH {
            *batch = VecDeque::new();
        }
        if scratch.capacity() > 1 << 20 {
            // A large replay passed; do not keep its buffer.
            *scratch = Vec::new();
        }
        written
    });
    if written.is_err() { Flushed::Gone } else { Flushed::Open }
}

/// Runs the session until it ends, then closes it. `early` holds bytes the
/// client sent right after its upgrade request.
pub(crate) async fn run(mut conn: Connection, tcp: TcpStream, early: bytes::BytesMut) {
    // An Arc, not a copy of the settings: this lives as long as the connection.
    let gw = conn.gw.clone();
    let (gateway, limits) = (&gw.inner.settings.gateway, &gw.inner.settings.limits);
    conn.send(&ControlMessage::Welcome {
        connection_id: conn.id.clone(),
        heartbeat_interval_ms: gateway.heartbeat_interval.as_millis() as u64,
        client_timeout_ms: gateway.client_timeout.as_millis() as u64,
        authenticated: conn.identity.is_authenticated(),
    });

    let mut reader = Reader::new(limits.max_frame_size);
    reader.extend(&early);
    // Bytes that arrived with the upgrade request are read first.
    let mut readable_now = !early.is_empty();
    drop(early);
    let mut unsent = Unsent::default();
    let mut batch = VecDeque::new();

    let start = Instant::now();
    let auth_deadline = start + limits.auth_timeout;
    let mut timers = Timers {
        next_ping: start + gateway.heartbeat_interval,
        deadline: identity_deadline(&conn.identity, auth_deadline),
        drain_close: None,
    };
    let mut last_heard = start;
    // One timer for all of them: the next due.
    let timer = tokio::time::sleep_until(timers.next());
    tokio::pin!(timer);
    let drain = conn.gw.inner.drain.clone();
    let drain_started = drain.cancelled();
    tokio::pin!(drain_started);
    let mut input = Input {
        bucket: TokenBucket::full(limits.messages_per_sec.saturating_mul(2)),
        violations: 0,
        last_violation: start,
    };

    let close_reason: Option<CloseReason> = 'session: loop {
        tokio::select! {
            biased;
            () = conn.queue.ready() => {
                // With bytes still unsent, new frames wait (and pile up
                // until the queue overflows); a status change does not.
                let flushed = if unsent.is_empty() {
                    write_queued(&conn, &tcp, &mut unsent, &mut batch)
                } else {
                    conn.queue.status().into()
                };
                match flushed {
                    Flushed::Open => {}
                    Flushed::Slow => {
                        conn.gw.count_slow_close();
                        break Some(reason(close::SLOW_CONSUMER, "slow consumer: reconnect and resume"));
                    }
                    Flushed::Gone => break None,
                }
            }
            // One readiness wait for both directions (a future less to carry).
            ready = tcp.ready(interest(readable_now, &unsent)), if !readable_now || !unsent.is_empty() => {
                let Ok(ready) = ready else { break None };
                if ready.is_writable() && !unsent.is_empty() {
                    match unsent.flush(&tcp) {
                        // All sent: what was queued meanwhile goes next.
                        Ok(true) => conn.queue.wake(),
                        Ok(false) => {}
                        Err(_) => break None,
                    }
                }
                if ready.is_readable() && !readable_now {
                    match read_some(&tcp, &mut reader) {
                        Ok(true) => readable_now = true,
                        Ok(false) => {}
                        Err(_) => break None,
                    }
                }
            }
            () = std::future::ready(()), if readable_now => {
                readable_now = false;
                last_heard = Instant::now();
                loop {
                    let message = match reader.next_message() {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(err) => {
                            if let FrameError::Protocol(detail) = &err {
                                tracing::debug!(connection = %conn.id, error = %detail, "websocket protocol error");
                            }
                            break 'session Some(reason(err.close_code(), err.to_string()));
                        }
                    };
                    match message {
                        // Boxed: handling a message (subscribe, refresh) needs a large
                        // future, which the session would otherwise carry all its life.
                        Incoming::Text(text) => match Box::pin(handle_text(&mut conn, &mut input, &text)).await {
                            Handled::Continue => {}
                            Handled::IdentityChanged => {
                                timers.deadline = identity_deadline(&conn.identity, auth_deadline);
                                timer.as_mut().reset(timers.next());
                            }
                            Handled::Close(reason) => break 'session Some(reason),
                        },
                        Incoming::Binary => {
                            if let Some(reason) = input.violation(limits.max_violations) {
                                break 'session Some(reason);
                            }
                            conn.send(&ControlMessage::error(
                                ErrorCode::BadRequest,
                                "binary frames are not supported; send JSON text frames",
                            ));
                        }
                        Incoming::Ping(payload) => {
                            if unsent.control(&tcp, frames::OP_PONG, &payload).is_err() {
                                break 'session None;
                            }
                        }
                        Incoming::Pong => {}
                        // Echo the client's code (RFC 6455 §5.5.1).
                        Incoming::Close(None) => {
                            conn.ended_by(ClosedBy::Client, "close");
                            break 'session Some(CloseReason::from(CloseCode::Normal));
                        }
                        Incoming::Close(Some(theirs)) => {
                            conn.ended_by(ClosedBy::Client, "close");
                            break 'session Some(if frames::valid_close_code(u16::from(theirs.code)) {
                                CloseReason::from(theirs.code)
                            } else {
                                reason(1002, "invalid close code")
                            });
                        }
                    }
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if now >= timers.deadline {
                    break Some(match conn.identity {
                        Identity::Unauthenticated => reason(close::UNAUTHORIZED, "authentication required: send auth first"),
                        _ => reason(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"),
                    });
                }
                if timers.drain_close.is_some_and(|at| now >= at) {
                    break Some(reason(close::SERVICE_RESTART, "server restarting: reconnect and resume"));
                }
                if now >= timers.next_ping {
                    if last_heard.elapsed() >= gateway.client_timeout {
                        break Some(reason(
                            close::HEARTBEAT_TIMEOUT,
                            format!("nothing heard for {} ms", gateway.client_timeout.as_millis()),
                        ));
                    }
                    if unsent.control(&tcp, frames::OP_PING, b"").is_err() {
                        break None;
                    }
                    timers.next_ping = now + gateway.heartbeat_interval;
                }
                timer.as_mut().reset(timers.next());
            }
            () = &mut drain_started, if timers.drain_close.is_none() => {
                // Spread the closes so clients do not all reconnect at once.
                let spread = gateway.drain_window.mul_f64(rand::random::<f64>());
                timers.drain_close = Some(Instant::now() + spread);
                timer.as_mut().reset(timers.next());
            }
        }
    };

    if let Some(reason) = &close_reason {
        let code = u16::from(reason.code);
        crate::metrics::closed_with(code);
        // A client's close frame was recorded as such; any other is ours.
        conn.ended_by(ClosedBy::Server, crate::metrics::close_reason(code));
    }
    let close_wait = gateway.client_timeout;
    if close_reason.is_some() {
        // What was queued goes before the close frame: the errors that led
        // to a policy close, say. (A slow client's queue is empty by now.)
        let _ = write_queued(&conn, &tcp, &mut unsent, &mut batch);
    }
    // Unsubscribe and free the queue before waiting on the client.
    drop(conn);
    drop(reader);
    Box::pin(close_socket(tcp, unsent, close_reason, close_wait)).await;
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

/// What the loop waits for on the socket: input unless unprocessed input is
/// pending, and room to write while bytes are unsent.
fn interest(readable_now: bool, unsent: &Unsent) -> Interest {
    match (readable_now, unsent.is_empty()) {
        (true, _) => Interest::WRITABLE,
        (false, true) => Interest::READABLE,
        (false, false) => Interest::READABLE | Interest::WRITABLE,
    }
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

/// The session's deadlines; one timer waits for the next.
struct Timers {
    next_ping: Instant,
    /// Auth deadline (unauthenticated) or the token's expiry.
    deadline: Instant,
    /// When this client is closed during a drain.
    drain_close: Option<Instant>,
}

impl Timers {
    fn next(&self) -> Instant {
        let next = self.next_ping.min(self.deadline);
        self.drain_close.map_or(next, |at| next.min(at))
    }
}

fn identity_deadline(identity: &Identity, auth_deadline: Instant) -> Instant {
    match identity {
        Identity::Unauthenticated => auth_deadline,
        Identity::Anonymous => Instant::now() + NEVER,
        Identity::User { expires, .. } => Instant::from_std(*expires),
    }
}

/// Per-connection input policing.
struct Input {
    bucket: TokenBucket,
    violations: u32,
    last_violation: Instant,
}

impl Input {
    /// Counts a violation; past the limit, the close reason.
    fn violation(&mut self, max: u32) -> Option<CloseReason> {
        if self.last_violation.elapsed() > VIOLATION_MEMORY {
            self.violations = 0;
        }
        self.last_violation = Instant::now();
        self.violations += 1;
        (self.violations > max).then(|| reason(close::POLICY_VIOLATION, "too many invalid or rate-limited messages"))
    }
}

enum Handled {
    Continue,
    IdentityChanged,
    Close(CloseReason),
}

async fn handle_text(conn: &mut Connection, input: &mut Input, text: &str) -> Handled {
    let limits = &conn.gw.inner.settings.limits;
    let (rate, max_violations) = (limits.messages_per_sec, limits.max_violations);
    if !input.bucket.try_take(rate, rate.saturating_mul(2)) {
        if let Some(reason) = input.violation(max_violations) {
            return Handled::Close(reason);
        }
        conn.send(&ControlMessage::error(
            ErrorCode::RateLimited,
            format!("more than {rate} messages per second; slow down"),
        ));
        return Handled::Continue;
    }
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err(err) => {
            if let Some(reason) = input.violation(max_violations) {
                return Handled::Close(reason);
            }
            conn.send(&ControlMessage::error(error_code(&err), err.to_string()));
            return Handled::Continue;
        }
    };
    match message {
        ClientMessage::Ping { id } => conn.send(&ControlMessage::Pong { id }),
        ClientMessage::Auth { token } => return authenticate(conn, &token),
        _ if !conn.identity.is_authenticated() => conn.send(&ControlMessage::error(
            ErrorCode::Unauthorized,
            "authenticate first: send {\"type\":\"auth\",\"token\":\"…\"}",
        )),
        ClientMessage::Subscribe { channel, since } => {
            let max = conn.gw.inner.settings.limits.max_subscriptions;
            if !conn.identity.may_read(&channel) {
                conn.send(&ControlMessage::Error {
                    code: ErrorCode::Forbidden,
                    message: format!("your token does not grant channel {channel}"),
                    channel: Some(channel),
                });
            } else if !conn.is_subscribed(&channel) && conn.subscription_count() >= max {
                conn.send(&ControlMessage::Error {
                    code: ErrorCode::TooManySubscriptions,
                    message: format!("at most {max} subscriptions per connection"),
                    channel: Some(channel),
                });
            } else if let Err(error) = conn.subscribe(channel, since).await {
                conn.send(&error);
            }
        }
        ClientMessage::Unsubscribe { channel } => {
            if conn.unsubscribe(&channel) {
                conn.send(&ControlMessage::Unsubscribed { channel });
            } else {
                conn.send(&not_subscribed(channel));
            }
        }
        ClientMessage::Refresh { channel } => {
            if conn.is_subscribed(&channel) {
                let answer = snapshot::take(&conn.gw, &channel).await;
                conn.send(&answer);
            } else {
                conn.send(&not_subscribed(channel));
            }
        }
    }
    Handled::Continue
}

fn not_subscribed(channel: pulse_protocol::Channel) -> ControlMessage {
    ControlMessage::Error {
        code: ErrorCode::NotSubscribed,
        message: format!("not subscribed to {channel}"),
        channel: Some(channel),
    }
}

/// An `auth` message: a first token, or a fresh one replacing the current.
fn authenticate(conn: &mut Connection, token: &str) -> Handled {
    let first = !conn.identity.is_authenticated();
    // A replacement already past its `exp` (verified inside the leeway)
    // would end the connection at once although the current token is still
    // valid: it is refused like any expired one.
    let verified = match pulse_auth::verify_with(conn.gw.inner.verifier.as_ref(), token) {
        Ok(claims) if !first && claims.is_expired() => Err(pulse_auth::AuthError::Expired),
        verified => verified,
    };
    match verified {
        Ok(claims) => {
            conn.identity = Identity::from_claims(claims);
            let identity = conn.identity.clone();
            for channel in conn.retain(|c| identity.may_read(c)) {
                conn.send(&ControlMessage::Error {
                    code: ErrorCode::Forbidden,
                    message: format!("the new token does not grant channel {channel}; unsubscribed"),
                    channel: Some(channel),
                });
            }
            conn.rename_presence();
            Handled::IdentityChanged
        }
        // Anonymous access is on and the connection uses it: a token that
        // does not verify changes nothing (as on connect).
        Err(err) if matches!(conn.identity, Identity::Anonymous) => {
            pulse_auth::ignored(&err);
            Handled::Continue
        }
        Err(pulse_auth::AuthError::Expired) if first => {
            Handled::Close(reason(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"))
        }
        Err(err) if first => Handled::Close(reason(close::UNAUTHORIZED, err.to_string())),
        Err(err) => {
            // The current token stays in force until it expires.
            conn.send(&ControlMessage::error(
                ErrorCode::Unauthorized,
                format!("{err}; the previous token still applies"),
            ));
            Handled::Continue
        }
    }
}

/// The error code a parse failure gets.
pub(crate) fn error_code(err: &ParseError) -> ErrorCode {
    match err {
        ParseError::UnknownType(_) => ErrorCode::UnknownType,
        // The protocol reports a bad channel name through serde; its message
        // names it ("channel name …").
        ParseError::Malformed { message, .. } if message.contains("channel name") => ErrorCode::InvalidChannel,
        _ => ErrorCode::BadRequest,
    }
}
