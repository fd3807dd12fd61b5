//! The client core: one loop per connection that applies every policy —
//! welcome, authentication and token expiry, input limits, subscriptions,
//! snapshots, heartbeats, the slow-client rule and the drain — whatever the
//! transport. [`session`](crate::session) (WebSocket) and
//! [`sse`](crate::sse) implement [`Transport`]: they carry frames and report
//! what the client did, nothing more.
//!
//! The loop waits on the client's queue, the transport, one timer
//! (heartbeat, auth/token deadline, drain) and the drain signal. The hub
//! never waits on it: the queue sits between them. While the transport
//! still holds unsent bytes, queued frames wait (and pile up until the
//! queue overflows, which closes the client as slow).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason};
use bytestring::ByteString;
use pulse_protocol::browser::close;
use pulse_protocol::{Channel, ClientMessage, ControlMessage, ErrorCode, ProtocolError};
use tokio::time::Instant;

use crate::auth::Identity;
use crate::client::Client;
use crate::limits::TokenBucket;
use crate::metrics::{self, ClosedBy};
use crate::queue::{Outbound, QueueStatus};
use crate::snapshot;

/// Violations older than this are forgiven.
const VIOLATION_MEMORY: Duration = Duration::from_secs(60);

/// Far enough to mean "never" for a timer.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// A close code and its reason text.
pub(crate) fn reason(code: u16, description: impl Into<String>) -> CloseReason {
    CloseReason { code: CloseCode::from(code), description: Some(description.into()) }
}

/// What a transport heard from its client (or its socket).
#[derive(Debug)]
pub(crate) enum Heard {
    /// A text message.
    Text(ByteString),
    /// A binary message (not supported).
    Binary,
    /// Proof of life without content: a ping or pong, part of a frame.
    Alive,
    /// Everything written so far has been taken by the peer.
    Flushed,
    /// The client closes; answer with this.
    Closing(CloseReason),
    /// The client broke the protocol; close with this.
    Broken(CloseReason),
    /// The peer is gone.
    Gone,
}

/// What the core needs of a transport.
pub(crate) trait Transport {
    /// Whether the client speaks on this transport (WebSocket): then its
    /// silence for `gateway.client_timeout` ends the connection, and it must
    /// authenticate within `limits.auth_timeout`.
    const SPEAKS: bool;

    /// Writes every frame of `frames` (leaving it empty); what the peer
    /// does not take now is kept for later.
    ///
    /// # Errors
    /// The peer is gone.
    fn send(&mut self, frames: &mut VecDeque<Outbound>) -> io::Result<()>;

    /// Bytes written but not yet taken by the peer.
    fn unsent(&self) -> usize;

    /// A keep-alive (a WebSocket ping, an SSE comment), skipped for a peer
    /// far behind.
    ///
    /// # Errors
    /// The peer is gone.
    fn heartbeat(&mut self) -> io::Result<()>;

    /// What the client or the socket does next. Cancel-safe.
    fn next(&mut self) -> impl Future<Output = Heard>;

    /// Ends the connection: with `ending` (a close code and reason), sent
    /// after what is unsent, waiting at most `wait` for a peer that does not
    /// read; without, the peer is gone and the socket is just dropped.
    fn finish(self, ending: Option<CloseReason>, wait: Duration) -> impl Future<Output = ()>;
}

/// Runs `client` over `transport` until the connection ends.
pub(crate) async fn run<T: Transport>(mut client: Client, mut transport: T) {
    // An Arc, not a copy of the settings: this lives as long as the connection.
    let gw = client.gw.clone();
    let (gateway, limits) = (&gw.settings().gateway, &gw.settings().limits);

    let mut batch = VecDeque::new();
    let start = Instant::now();
    let auth_deadline = start + limits.auth_timeout;
    let mut timers = Timers {
        next_ping: start + gateway.heartbeat_interval,
        deadline: identity_deadline(&client.identity, auth_deadline),
        drain_close: None,
    };
    let mut last_heard = start;
    // One timer for all of them: the next due.
    let timer = tokio::time::sleep_until(timers.next());
    tokio::pin!(timer);
    let drain = gw.drain_signal();
    let drain_started = drain.cancelled();
    tokio::pin!(drain_started);
    let mut input = Input {
        bucket: TokenBucket::full(limits.messages_per_sec.saturating_mul(2)),
        violations: 0,
        last_violation: start,
    };

    let ending: Option<CloseReason> = loop {
        tokio::select! {
            biased;
            () = client.queue.ready() => {
                // With bytes still unsent, new frames wait; a status change
                // does not.
                let status = if transport.unsent() == 0 {
                    write_queued(&client, &mut transport, &mut batch)
                } else {
                    Ok(client.queue.status())
                };
                match status {
                    Ok(QueueStatus::Open) => {}
                    Ok(QueueStatus::Overflowed) => {
                        gw.count_slow_close();
                        break Some(reason(close::SLOW_CONSUMER, "slow consumer: reconnect and resume"));
                    }
                    Ok(QueueStatus::Closed) | Err(_) => break None,
                }
            }
            heard = transport.next() => {
                last_heard = Instant::now();
                match heard {
                    // Boxed: handling a message (subscribe, refresh) needs a
                    // large future, which the loop would otherwise carry all
                    // its life.
                    Heard::Text(text) => match Box::pin(handle_text(&mut client, &mut input, &text)).await {
                        Handled::Continue => {}
                        Handled::IdentityChanged => {
                            timers.deadline = identity_deadline(&client.identity, auth_deadline);
                            timer.as_mut().reset(timers.next());
                        }
                        Handled::Close(reason) => break Some(reason),
                    },
                    Heard::Binary => {
                        if let Some(reason) = input.violation(limits.max_violations) {
                            break Some(reason);
                        }
                        client.send(&ControlMessage::error(
                            ErrorCode::BadRequest,
                            "binary frames are not supported; send JSON text frames",
                        ));
                    }
                    Heard::Alive => {}
                    // All sent: what was queued meanwhile goes next.
                    Heard::Flushed => client.queue.wake(),
                    Heard::Closing(reason) => {
                        client.ended_by(ClosedBy::Client, "close");
                        break Some(reason);
                    }
                    Heard::Broken(reason) => break Some(reason),
                    Heard::Gone => break None,
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if now >= timers.deadline {
                    break Some(match client.identity {
                        Identity::Unauthenticated => reason(close::UNAUTHORIZED, "authentication required: send auth first"),
                        _ => reason(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"),
                    });
                }
                if timers.drain_close.is_some_and(|at| now >= at) {
                    break Some(reason(close::SERVICE_RESTART, "server restarting: reconnect and resume"));
                }
                if now >= timers.next_ping {
                    if T::SPEAKS && last_heard.elapsed() >= gateway.client_timeout {
                        break Some(reason(
                            close::HEARTBEAT_TIMEOUT,
                            format!("nothing heard for {} ms", gateway.client_timeout.as_millis()),
                        ));
                    }
                    if transport.heartbeat().is_err() {
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

    if let Some(reason) = &ending {
        let code = u16::from(reason.code);
        metrics::closed_with(code);
        // A client's close was recorded as such; any other is ours.
        client.ended_by(ClosedBy::Server, metrics::close_reason(code));
        // What was queued goes before the end: the errors that led to a
        // policy close, say. (A slow client's queue is empty by now.)
        let _ = write_queued(&client, &mut transport, &mut batch);
    }
    // Unsubscribe and free the queue before waiting on the client.
    drop(client);
    drop(batch);
    Box::pin(transport.finish(ending, gateway.client_timeout)).await;
}

/// Takes everything queued and hands it to the transport in one go.
fn write_queued<T: Transport>(
    client: &Client,
    transport: &mut T,
    batch: &mut VecDeque<Outbound>,
) -> io::Result<QueueStatus> {
    let status = client.queue.take(batch);
    if status == QueueStatus::Open && !batch.is_empty() {
        transport.send(batch)?;
    }
    batch.clear();
    // Small batches do not keep their buffer: an idle client holds none.
    if batch.capacity() > 8 {
        *batch = VecDeque::new();
    }
    Ok(status)
}

/// The connection's deadlines; one timer waits for the next.
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

async fn handle_text(client: &mut Client, input: &mut Input, text: &str) -> Handled {
    let limits = &client.gw.settings().limits;
    let (rate, max_violations) = (limits.messages_per_sec, limits.max_violations);
    if !input.bucket.try_take(rate, rate.saturating_mul(2)) {
        if let Some(reason) = input.violation(max_violations) {
            return Handled::Close(reason);
        }
        client.send(&ControlMessage::error(
            ErrorCode::RateLimited,
            format!("more than {rate} messages per second; slow down"),
        ));
        return Handled::Continue;
    }
    // The bare text `ping` is answered with the bare text `pong` (what
    // hand-written clients check for); the JSON ping with JSON.
    if text.trim() == "ping" {
        client.queue.push_control(ByteString::from_static("pong"));
        return Handled::Continue;
    }
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err(err) => {
            if let Some(reason) = input.violation(max_violations) {
                return Handled::Close(reason);
            }
            client.send(&ControlMessage::error(error_code(&err), err.to_string()));
            return Handled::Continue;
        }
    };
    match message {
        ClientMessage::Ping { id } => client.send(&ControlMessage::Pong { id }),
        ClientMessage::Auth { token } => return authenticate(client, &token),
        _ if !client.identity.is_authenticated() => client.send(&ControlMessage::error(
            ErrorCode::Unauthorized,
            "authenticate first: send {\"type\":\"auth\",\"token\":\"…\"}",
        )),
        ClientMessage::Subscribe { channel, since } => {
            if let Err(error) = subscribe_checked(client, channel, since).await {
                client.send(&error);
            }
        }
        ClientMessage::Unsubscribe { channel } => {
            if client.unsubscribe(&channel) {
                client.send(&ControlMessage::Unsubscribed { channel });
            } else {
                client.send(&not_subscribed(channel));
            }
        }
        ClientMessage::Refresh { channel } => refresh(client, channel).await,
    }
    Handled::Continue
}

/// Subscribes after the checks every transport applies: the token grants
/// the channel, and the subscription limit.
///
/// # Errors
/// The `error` frame to answer with.
pub(crate) async fn subscribe_checked(
    client: &mut Client,
    channel: Channel,
    since: Option<pulse_protocol::Position>,
) -> Result<(), ControlMessage> {
    let max = client.gw.settings().limits.max_subscriptions;
    if !client.identity.may_read(&channel) {
        return Err(ControlMessage::Error {
            code: ErrorCode::Forbidden,
            message: format!("your token does not grant channel {channel}"),
            channel: Some(channel),
        });
    }
    if !client.is_subscribed(&channel) && client.subscription_count() >= max {
        return Err(ControlMessage::Error {
            code: ErrorCode::TooManySubscriptions,
            message: format!("at most {max} subscriptions per connection"),
            channel: Some(channel),
        });
    }
    client.subscribe(channel, since).await
}

/// `refresh`: a snapshot, unless the previous one is still on its way (a
/// client that asks faster than it reads would otherwise pile snapshots up).
async fn refresh(client: &mut Client, channel: Channel) {
    if !client.is_subscribed(&channel) {
        client.send(&not_subscribed(channel));
        return;
    }
    if client.queue.snapshot_queued() {
        client.send(&ControlMessage::Error {
            code: ErrorCode::RateLimited,
            message: "the previous snapshot is still being sent; refresh again once it has arrived".into(),
            channel: Some(channel),
        });
        return;
    }
    match snapshot::take(&client.gw, &channel).await {
        answer @ ControlMessage::Snapshot { .. } => {
            client.queue.push_snapshot(ByteString::from(answer.to_json()));
        }
        error => client.send(&error),
    }
}

fn not_subscribed(channel: Channel) -> ControlMessage {
    ControlMessage::Error {
        code: ErrorCode::NotSubscribed,
        message: format!("not subscribed to {channel}"),
        channel: Some(channel),
    }
}

/// An `auth` message: a first token, or a fresh one replacing the current.
fn authenticate(client: &mut Client, token: &str) -> Handled {
    let first = !client.identity.is_authenticated();
    // A replacement already past its `exp` (verified inside the leeway)
    // would end the connection at once although the current token is still
    // valid: it is refused like any expired one.
    let verified = match pulse_auth::verify_with(client.gw.verifier(), token) {
        Ok(claims) if !first && claims.is_expired() => Err(pulse_auth::AuthError::Expired),
        verified => verified,
    };
    match verified {
        Ok(claims) => {
            client.identity = Identity::from_claims(claims);
            let identity = client.identity.clone();
            for channel in client.retain(|c| identity.may_read(c)) {
                client.send(&ControlMessage::Error {
                    code: ErrorCode::Forbidden,
                    message: format!("the new token does not grant channel {channel}; unsubscribed"),
                    channel: Some(channel),
                });
            }
            client.rename_presence();
            Handled::IdentityChanged
        }
        // Anonymous access is on and the connection uses it: a token that
        // does not verify changes nothing (as on connect).
        Err(err) if matches!(client.identity, Identity::Anonymous) => {
            pulse_auth::ignored(&err);
            Handled::Continue
        }
        Err(pulse_auth::AuthError::Expired) if first => {
            Handled::Close(reason(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"))
        }
        Err(err) if first => Handled::Close(reason(close::UNAUTHORIZED, err.to_string())),
        Err(err) => {
            // The current token stays in force until it expires.
            client.send(&ControlMessage::error(
                ErrorCode::Unauthorized,
                format!("{err}; the previous token still applies"),
            ));
            Handled::Continue
        }
    }
}

/// The error code a parse failure gets.
fn error_code(err: &ProtocolError) -> ErrorCode {
    match err {
        ProtocolError::UnknownType(_) => ErrorCode::UnknownType,
        ProtocolError::InvalidChannel(_) => ErrorCode::InvalidChannel,
        _ => ErrorCode::BadRequest,
    }
}
