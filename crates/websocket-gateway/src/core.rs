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
use crate::limits::MessageRate;
use crate::metrics::{self, ClosedBy};
use crate::queue::{Outbound, QueueStatus};
use crate::snapshot;

/// Violations older than this are forgiven.
const VIOLATION_MEMORY: Duration = Duration::from_secs(60);

/// A batch buffer of at most this many entries is released after its write.
const SMALL_BATCH: usize = 8;

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
///
/// Every idle connection keeps this future for its whole life, so its size
/// is memory per connection (see the test `session::tests::an_idle_connection_is_small`):
/// the arguments are captured by the `async move` block and used in place
/// (an `async fn` would keep a second copy of them), the queue and the
/// socket are polled in place rather than through stored futures, and the
/// drain reaches each connection through its queue's wake-up
/// ([`Gateway::drain`](crate::Gateway::drain)) instead of a waiter of its own.
#[allow(clippy::manual_async_fn, reason = "an async fn would keep a copy of its arguments")]
pub(crate) fn run<T: Transport>(mut client: Client, mut transport: T) -> impl Future<Output = ()> {
    async move {
        // An Arc, not a copy of the settings: this lives as long as the connection.
        let gw = client.gw.clone();
        let (gateway, limits) = (&gw.settings().gateway, &gw.settings().limits);

        let mut batch = VecDeque::new();
        let start = Instant::now();
        let mut timers = Timers {
            next_ping: start + gateway.heartbeat_interval,
            deadline: identity_deadline(&client.identity, start + limits.auth_timeout),
            drain_close: None,
        };
        let mut last_heard = start;
        // One timer for all of them: the next due.
        let timer = tokio::time::sleep_until(timers.next());
        tokio::pin!(timer);
        let mut input = Input { rate: MessageRate::new(limits.messages_per_sec), violations: 0, last_violation: start };

        let ending: Option<CloseReason> = loop {
            tokio::select! {
                biased;
                () = client.queue.ready() => {
                    // A drain wakes every queue (and the first wake-up, for the
                    // welcome, sees one that started before).
                    if timers.drain_close.is_none() && gw.closing_for_drain() {
                        // Spread the closes so clients do not all reconnect at once.
                        let spread = gateway.drain_window.mul_f64(rand::random::<f64>());
                        timers.drain_close = Some(Instant::now() + spread);
                        timer.as_mut().reset(timers.next());
                    }
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
                                // Still unauthenticated, the auth deadline stays.
                                timers.deadline = identity_deadline(&client.identity, timers.deadline);
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
    // Small batches do not keep their buffer: an idle client holds none (a
    // busy one keeps its large one).
    if batch.capacity() <= SMALL_BATCH {
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
    rate: MessageRate,
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
    if !input.rate.allow() {
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

#[cfg(test)]
mod tests {
    //! The core without sockets: a transport made of channels, the memory
    //! bus, and paused time.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pulse_bus::{Bus, MemoryBus, MemoryBusConfig};
    use pulse_protocol::{EventDraft, EventType, ServerFrame};
    use pulse_runtime::{Health, Shutdown};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::{Gateway, NoState, Settings};

    /// A transport whose client is the test: it says what the client does
    /// on `heard` and reads what the core sent from `sent`. While `stuck`,
    /// written frames stay unsent.
    struct Fake {
        heard: mpsc::UnboundedReceiver<Heard>,
        sent: mpsc::UnboundedSender<String>,
        stuck: Arc<AtomicBool>,
        unsent: usize,
        ended: Option<oneshot::Sender<Option<u16>>>,
    }

    impl Transport for Fake {
        const SPEAKS: bool = true;

        fn send(&mut self, frames: &mut VecDeque<Outbound>) -> io::Result<()> {
            for (_, text) in frames.drain(..).flat_map(|entry| entry.frames().to_vec()) {
                if self.stuck.load(Ordering::SeqCst) {
                    self.unsent += text.len();
                } else {
                    let _ = self.sent.send(text.to_string());
                }
            }
            Ok(())
        }

        fn unsent(&self) -> usize {
            self.unsent
        }

        fn heartbeat(&mut self) -> io::Result<()> {
            let _ = self.sent.send("<ping>".into());
            Ok(())
        }

        async fn next(&mut self) -> Heard {
            match self.heard.recv().await {
                Some(Heard::Flushed) => {
                    self.unsent = 0;
                    Heard::Flushed
                }
                Some(heard) => heard,
                None => std::future::pending().await,
            }
        }

        async fn finish(mut self, ending: Option<CloseReason>, _wait: Duration) {
            if let Some(ended) = self.ended.take() {
                let _ = ended.send(ending.map(|reason| u16::from(reason.code)));
            }
        }
    }

    struct Harness {
        gw: Gateway,
        bus: Arc<dyn Bus>,
        heard: mpsc::UnboundedSender<Heard>,
        sent: mpsc::UnboundedReceiver<String>,
        stuck: Arc<AtomicBool>,
        ended: oneshot::Receiver<Option<u16>>,
    }

    impl Harness {
        fn start(configure: impl FnOnce(&mut Settings)) -> Self {
            let mut settings = Settings::defaults().unwrap();
            settings.auth.anonymous = true;
            configure(&mut settings);
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig::default()));
            let gw = Gateway::start(settings, bus.clone(), Arc::new(NoState), Health::new(), Shutdown::new()).unwrap();
            let anonymous = gw.settings().auth.anonymous;
            let identity = if anonymous { Identity::Anonymous } else { Identity::Unauthenticated };
            let client = Client::new(gw.clone(), "test", gw.acquire_connection().unwrap(), identity);
            let (heard_tx, heard) = mpsc::unbounded_channel();
            let (sent, sent_rx) = mpsc::unbounded_channel();
            let (ended_tx, ended) = oneshot::channel();
            let stuck = Arc::new(AtomicBool::new(false));
            let transport = Fake { heard, sent, stuck: stuck.clone(), unsent: 0, ended: Some(ended_tx) };
            tokio::spawn(run(client, transport));
            Self { gw, bus, heard: heard_tx, sent: sent_rx, stuck, ended }
        }

        fn say(&self, text: &str) {
            self.heard.send(Heard::Text(ByteString::from(text.to_owned()))).unwrap();
        }

        /// The next frame sent that is not a heartbeat.
        async fn frame(&mut self) -> String {
            loop {
                let frame = self.sent.recv().await.expect("the connection ended");
                if frame != "<ping>" {
                    return frame;
                }
            }
        }

        async fn control(&mut self) -> ControlMessage {
            match ServerFrame::parse(&self.frame().await).unwrap() {
                ServerFrame::Control(message) => message,
                other => panic!("expected a control message, got {other:?}"),
            }
        }

        async fn ended(self) -> Option<u16> {
            self.ended.await.unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn welcome_then_bare_pong_and_json_errors_naming_the_problem() {
        let mut h = Harness::start(|_| {});
        assert!(matches!(h.control().await, ControlMessage::Welcome { authenticated: true, .. }));
        h.say("ping");
        assert_eq!(h.frame().await, "pong");
        h.say(r#"{"type":"subscribe","channel":"bad name"}"#);
        assert!(matches!(h.control().await, ControlMessage::Error { code: ErrorCode::InvalidChannel, .. }));
        h.say(r#"{"type":"dance"}"#);
        assert!(matches!(h.control().await, ControlMessage::Error { code: ErrorCode::UnknownType, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn no_auth_in_time_closes_4403() {
        let h = Harness::start(|s| s.auth.anonymous = false);
        assert_eq!(h.ended().await, Some(close::UNAUTHORIZED));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_gets_heartbeats_then_is_closed_4001() {
        let mut h = Harness::start(|_| {});
        let mut pings = 0;
        while let Some(frame) = h.sent.recv().await {
            pings += usize::from(frame == "<ping>");
        }
        assert!(pings >= 2, "{pings} heartbeats before the timeout");
        assert_eq!(h.ended().await, Some(close::HEARTBEAT_TIMEOUT));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_closes_1012_within_the_window() {
        let h = Harness::start(|s| s.gateway.drain_window = Duration::from_secs(5));
        let started = Instant::now();
        h.gw.drain();
        let ended = h.ended().await;
        assert_eq!(ended, Some(close::SERVICE_RESTART));
        assert!(started.elapsed() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_take_its_frames_is_closed_4000() {
        let mut h = Harness::start(|s| {
            s.gateway.queue_capacity = 1000;
            s.gateway.queue_bytes = 64 * 1024;
        });
        h.say(r#"{"type":"subscribe","channel":"big"}"#);
        assert!(matches!(h.control().await, ControlMessage::Welcome { .. }));
        assert!(matches!(h.control().await, ControlMessage::Subscribed { .. }));
        h.stuck.store(true, Ordering::SeqCst);
        // Ten events of 10 KiB: far fewer than the frame capacity, more than
        // the byte bound.
        let channel = Channel::parse("big").unwrap();
        for _ in 0..10 {
            let draft = EventDraft::new(EventType::parse("t.big").unwrap(), serde_json::json!("x".repeat(10_240)));
            h.bus.publish(&channel, draft).await.unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(h.ended().await, Some(close::SLOW_CONSUMER));
    }

    #[tokio::test(start_paused = true)]
    async fn no_new_snapshot_while_the_previous_one_is_queued() {
        let mut h = Harness::start(|_| {});
        h.say(r#"{"type":"subscribe","channel":"state"}"#);
        assert!(matches!(h.control().await, ControlMessage::Welcome { .. }));
        assert!(matches!(h.control().await, ControlMessage::Subscribed { .. }));
        h.stuck.store(true, Ordering::SeqCst);
        h.say("ping");
        h.say(r#"{"type":"refresh","channel":"state"}"#);
        h.say(r#"{"type":"refresh","channel":"state"}"#);
        h.say(r#"{"type":"ping","id":1}"#);
        // Time is paused: this returns once the core has handled all of it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        h.stuck.store(false, Ordering::SeqCst);
        h.heard.send(Heard::Flushed).unwrap();
        // The pong went out before the transport was flushed; then the
        // queued frames in order.
        assert!(matches!(h.control().await, ControlMessage::Snapshot { .. }));
        assert!(matches!(h.control().await, ControlMessage::Error { code: ErrorCode::RateLimited, .. }));
        assert!(matches!(h.control().await, ControlMessage::Pong { .. }));
    }
}
