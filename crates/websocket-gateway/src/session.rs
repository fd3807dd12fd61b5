//! One WebSocket connection: the session loop.
//!
//! `let reason = loop { select! { … } }; close(reason)`, with one arm per
//! source: the outbound queue, inbound frames, the heartbeat tick, the
//! auth/token deadline and the drain signal. The loop never waits on the
//! hub and the hub never waits on it: the queue sits between them.

use std::collections::VecDeque;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use futures_util::StreamExt;
use pulse_protocol::browser::close;
use pulse_protocol::{ClientMessage, ControlMessage, ErrorCode, ProtocolError as ParseError};
use tokio::time::Instant;

use crate::auth::{self, Identity};
use crate::connection::Connection;
use crate::limits::TokenBucket;
use crate::queue::{ClientQueue, Outbound, QueueStatus};
use crate::snapshot;

/// Rounds of "take the queue, write it" before the loop looks at its other
/// sources again, so a busy stream cannot starve heartbeats and input.
const FLUSH_ROUNDS: usize = 4;

/// Violations older than this are forgiven.
const VIOLATION_MEMORY: Duration = Duration::from_secs(60);

/// Far enough to mean "never" for a timer.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

fn reason(code: u16, description: impl Into<String>) -> CloseReason {
    CloseReason { code: CloseCode::from(code), description: Some(description.into()) }
}

/// Runs the session until it ends, then closes it.
pub(crate) async fn run(mut conn: Connection, mut session: Session, mut stream: AggregatedMessageStream) {
    // An Arc, not a copy of the settings: this lives as long as the connection.
    let gw = conn.gw.clone();
    let (gateway, limits) = (&gw.inner.settings.gateway, &gw.inner.settings.limits);
    conn.send(&ControlMessage::Welcome {
        connection_id: conn.id.clone(),
        heartbeat_interval_ms: gateway.heartbeat_interval.as_millis() as u64,
        client_timeout_ms: gateway.client_timeout.as_millis() as u64,
        authenticated: conn.identity.is_authenticated(),
    });

    let start = Instant::now();
    let mut heartbeat = tokio::time::interval_at(start + gateway.heartbeat_interval, gateway.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = start;
    let auth_deadline = start + limits.auth_timeout;
    // One timer for the auth deadline (unauthenticated) or the token's expiry.
    let deadline = tokio::time::sleep_until(identity_deadline(&conn.identity, auth_deadline));
    tokio::pin!(deadline);
    let drain = conn.gw.inner.drain.clone();
    let drain_started = drain.cancelled();
    tokio::pin!(drain_started);
    let drain_close = tokio::time::sleep(NEVER);
    tokio::pin!(drain_close);
    let mut draining = false;
    let mut input = Input {
        bucket: TokenBucket::full(limits.messages_per_sec.saturating_mul(2)),
        violations: 0,
        last_violation: start,
    };
    let mut batch = VecDeque::new();

    let close_reason: Option<CloseReason> = loop {
        tokio::select! {
            biased;
            () = conn.queue.ready() => match flush(&conn.queue, &mut session, &mut batch).await {
                Flushed::Open => {}
                Flushed::Slow => {
                    conn.gw.count_slow_close();
                    break Some(reason(close::SLOW_CONSUMER, "slow consumer: reconnect and resume"));
                }
                Flushed::Gone => break None,
            },
            message = stream.next() => {
                last_heard = Instant::now();
                match message {
                    None => break None,
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        let outcome = handle_text(&mut conn, &mut input, &text).await;
                        match outcome {
                            Handled::Continue => {}
                            Handled::IdentityChanged => {
                                deadline.as_mut().reset(identity_deadline(&conn.identity, auth_deadline));
                            }
                            Handled::Close(reason) => break Some(reason),
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        if let Some(reason) = input.violation(limits.max_violations) {
                            break Some(reason);
                        }
                        conn.send(&ControlMessage::error(
                            ErrorCode::BadRequest,
                            "binary frames are not supported; send JSON text frames",
                        ));
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        // actix-ws does not answer pings; bounded, because a
                        // client that does not read cannot take a pong either.
                        let _ = tokio::time::timeout(Duration::from_millis(100), session.pong(&payload)).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(theirs))) => {
                        break Some(theirs.unwrap_or_else(|| CloseReason::from(CloseCode::Normal)));
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        break Some(reason(
                            close::MESSAGE_TOO_BIG,
                            format!("frame larger than {} bytes", limits.max_frame_size),
                        ));
                    }
                    Some(Err(err)) => {
                        tracing::debug!(connection = %conn.id, error = %err, "websocket protocol error");
                        break Some(reason(1002, "websocket protocol error"));
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= gateway.client_timeout {
                    break Some(reason(
                        close::HEARTBEAT_TIMEOUT,
                        format!("nothing heard for {} ms", gateway.client_timeout.as_millis()),
                    ));
                }
                // Bounded for the same reason as the pong above.
                let _ = tokio::time::timeout(Duration::from_millis(100), session.ping(b"")).await;
            }
            () = &mut deadline => {
                break Some(match conn.identity {
                    Identity::Unauthenticated => reason(close::UNAUTHORIZED, "authentication required: send auth first"),
                    _ => reason(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"),
                });
            }
            () = &mut drain_started, if !draining => {
                draining = true;
                // Spread the closes so clients do not all reconnect at once.
                let spread = gateway.drain_window.mul_f64(rand::random::<f64>());
                drain_close.as_mut().reset(Instant::now() + spread);
            }
            () = &mut drain_close, if draining => {
                break Some(reason(close::SERVICE_RESTART, "server restarting: reconnect and resume"));
            }
        }
    };

    if let Some(reason) = &close_reason {
        crate::metrics::closed_with(u16::from(reason.code));
    }
    let close_wait = gateway.client_timeout;
    // Unsubscribe and free the queue before waiting on the client.
    drop(conn);
    drop(stream);
    // A client that does not read cannot take the close frame at once; give
    // it until the heartbeat timeout, then drop the connection.
    let _ = tokio::time::timeout(close_wait, session.close(close_reason)).await;
}

fn identity_deadline(identity: &Identity, auth_deadline: Instant) -> Instant {
    match identity {
        Identity::Unauthenticated => auth_deadline,
        Identity::Anonymous => Instant::now() + NEVER,
        Identity::User { expires, .. } => Instant::from_std(*expires),
    }
}

enum Flushed {
    Open,
    Slow,
    Gone,
}

/// Writes what is queued. actix-ws encodes every frame it has been handed
/// into one buffer per write, so a backlog leaves in few syscalls.
async fn flush(queue: &ClientQueue, session: &mut Session, batch: &mut VecDeque<Outbound>) -> Flushed {
    for _ in 0..FLUSH_ROUNDS {
        match queue.take(batch) {
            QueueStatus::Open => {}
            QueueStatus::Overflowed => return Flushed::Slow,
            QueueStatus::Closed => return Flushed::Gone,
        }
        if batch.is_empty() {
            return Flushed::Open;
        }
        while let Some(frame) = batch.pop_front() {
            let send = session.text(frame.text);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut send => {
                        if sent.is_err() {
                            return Flushed::Gone;
                        }
                        break;
                    }
                    // The client is not reading: watch for its queue to
                    // overflow meanwhile, or this send would wait forever.
                    () = queue.ready() => {
                        if queue.status() != QueueStatus::Open {
                            batch.clear();
                            return Flushed::Slow;
                        }
                    }
                }
            }
        }
    }
    // More is queued: come back after the other sources had a turn.
    queue.wake();
    Flushed::Open
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
    match auth::verify(conn.gw.inner.verifier.as_ref(), token) {
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
            Handled::IdentityChanged
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
