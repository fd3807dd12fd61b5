//! A resuming WebSocket client, as a careful browser client behaves: it
//! subscribes to its channels, remembers the last position per channel,
//! reconnects when the connection ends (to the next gateway in its list)
//! and resumes with `since`. It records everything per channel, raw (no
//! "already seen" filter), for the [`accounting`](crate::accounting).
//!
//! Positions are kept as the server wrote them (`epoch:ms-seq` or legacy
//! `ms-seq`): an event of any epoch replaces the remembered position, and
//! so does the `offset` of every `subscribed` (after `recovered: false` it is
//! the channel's head, which must replace a stale or future position).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::accounting::Seen;
use crate::publisher::EVENT_TYPE;

/// What the runner wants a client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Stay connected (reconnect whenever the connection ends).
    Connected,
    /// Disconnect and stay away (a sleeping laptop), then resume.
    Away,
    /// Disconnect and end.
    Stop,
}

/// How long without any frame (the gateway pings every 2 s in a run)
/// before the client gives the connection up and reconnects.
pub const SILENCE: Duration = Duration::from_secs(8);

/// What a client shares with the runner while it runs.
pub struct ClientState {
    /// Per channel, in arrival order.
    pub seen: Mutex<HashMap<String, Vec<Seen>>>,
    /// Per channel, the highest event number delivered so far.
    pub high: HashMap<String, AtomicU64>,
    /// Whether every channel is subscribed on the current connection.
    pub subscribed: AtomicBool,
    /// Connections opened.
    pub connections: AtomicU64,
    /// Frames that were not understood.
    pub unparsed: AtomicU64,
    /// Which gateway (index in the list) the current connection is on.
    pub gateway: AtomicU64,
}

impl ClientState {
    fn new(channels: &[String]) -> Self {
        Self {
            seen: Mutex::new(channels.iter().map(|c| (c.clone(), Vec::new())).collect()),
            high: channels.iter().map(|c| (c.clone(), AtomicU64::new(0))).collect(),
            subscribed: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            gateway: AtomicU64::new(u64::MAX),
        }
    }

    /// The highest event number delivered on `channel`.
    pub fn high(&self, channel: &str) -> u64 {
        self.high.get(channel).map_or(0, |h| h.load(Ordering::SeqCst))
    }

    fn record(&self, channel: &str, item: Seen) {
        if let Some(log) = self.seen.lock().get_mut(channel) {
            log.push(item);
        }
    }
}

/// A running client.
pub struct Client {
    pub state: Arc<ClientState>,
    pub wanted: watch::Sender<Wanted>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a client on `urls[first]`, falling over to the next URL on every
/// reconnect.
pub fn start(urls: Vec<String>, first: usize, channels: Vec<String>, run: String) -> Client {
    let state = Arc::new(ClientState::new(&channels));
    let (wanted, wanted_rx) = watch::channel(Wanted::Connected);
    let task = tokio::spawn(run_client(urls, first, channels, run, state.clone(), wanted_rx));
    Client { state, wanted, task }
}

async fn run_client(
    urls: Vec<String>,
    first: usize,
    channels: Vec<String>,
    run: String,
    state: Arc<ClientState>,
    mut wanted: watch::Receiver<Wanted>,
) {
    let mut positions: HashMap<String, String> = HashMap::new();
    let mut next = first;
    let mut failures = 0u32;
    loop {
        let now = *wanted.borrow_and_update();
        match now {
            Wanted::Stop => return,
            Wanted::Away => {
                if wanted.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Wanted::Connected => {}
        }
        let index = next % urls.len().max(1);
        next += 1;
        let Some(url) = urls.get(index) else { return };
        let connected = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await;
        let Ok(Ok((ws, _))) = connected else {
            failures += 1;
            // Wait a little, or until told to stop.
            let backoff = Duration::from_millis((50 * u64::from(failures)).min(500));
            let _ = tokio::time::timeout(backoff, wanted.changed()).await;
            continue;
        };
        failures = 0;
        state.connections.fetch_add(1, Ordering::SeqCst);
        state.gateway.store(index as u64, Ordering::SeqCst);
        session(ws, &channels, &run, &state, &mut positions, &mut wanted).await;
        state.subscribed.store(false, Ordering::SeqCst);
        state.gateway.store(u64::MAX, Ordering::SeqCst);
        for channel in &channels {
            state.record(channel, Seen::Closed);
        }
        // A short pause before reconnecting, as a browser client backs off.
        let _ = tokio::time::timeout(Duration::from_millis(100), wanted.changed()).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: subscribe (resuming), then record until it ends or the
/// runner wants the client elsewhere.
async fn session(
    mut ws: Ws,
    channels: &[String],
    run: &str,
    state: &ClientState,
    positions: &mut HashMap<String, String>,
    wanted: &mut watch::Receiver<Wanted>,
) {
    let mut pending: Vec<&str> = Vec::new();
    for channel in channels {
        let message = match positions.get(channel) {
            Some(since) => json!({"type": "subscribe", "channel": channel, "since": since}),
            None => json!({"type": "subscribe", "channel": channel}),
        };
        state.record(channel, Seen::Subscribe);
        if ws.send(Message::text(message.to_string())).await.is_err() {
            return;
        }
        pending.push(channel);
    }
    let mut ping = tokio::time::interval(Duration::from_secs(2));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            frame = tokio::time::timeout(SILENCE, ws.next()) => {
                let text = match frame {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return,
                    Ok(Some(Ok(_))) => continue,
                };
                if !handle(&text, run, state, positions, &mut pending) {
                    // A subscribe failed: start over on a new connection.
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
                if pending.is_empty() {
                    state.subscribed.store(true, Ordering::SeqCst);
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                    return;
                }
            }
            changed = wanted.changed() => {
                if changed.is_err() || *wanted.borrow() != Wanted::Connected {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
            }
        }
    }
}

/// Records one frame; false when the connection should be given up (a
/// subscribe was refused).
fn handle(
    text: &str,
    run: &str,
    state: &ClientState,
    positions: &mut HashMap<String, String>,
    pending: &mut Vec<&str>,
) -> bool {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        state.unparsed.fetch_add(1, Ordering::SeqCst);
        return true;
    };
    let field = |name: &str| frame.get(name).and_then(Value::as_str);
    let (Some(kind), channel) = (field("type"), field("channel")) else {
        state.unparsed.fetch_add(1, Ordering::SeqCst);
        return true;
    };
    match (kind, channel) {
        ("subscribed", Some(channel)) => {
            let recovered = frame.get("recovered").and_then(Value::as_bool).unwrap_or(false);
            if let Some(offset) = field("offset") {
                positions.insert(channel.to_string(), offset.to_string());
            }
            pending.retain(|c| *c != channel);
            state.record(channel, Seen::Subscribed { recovered });
        }
        ("gap", Some(channel)) => {
            if let Some(offset) = field("offset").or_else(|| field("head")) {
                positions.insert(channel.to_string(), offset.to_string());
            }
            state.record(channel, Seen::Gap);
        }
        (EVENT_TYPE, Some(channel)) => {
            let tick = frame.get("data").and_then(|d| serde_json::from_value::<crate::publisher::Tick>(d.clone()).ok());
            let (Some(id), Some(tick)) = (field("id"), tick) else {
                state.unparsed.fetch_add(1, Ordering::SeqCst);
                return true;
            };
            if tick.run != run {
                return true;
            }
            positions.insert(channel.to_string(), id.to_string());
            state.record(channel, Seen::Event { n: tick.n, id: id.to_string() });
            if let Some(high) = state.high.get(channel) {
                high.fetch_max(tick.n, Ordering::SeqCst);
            }
        }
        // A subscribe refused (the bus is unavailable): retry on a new
        // connection. An error during a resume is followed by its
        // `subscribed`, and also ends up resubscribed.
        ("error", Some(channel)) if pending.contains(&channel) => return false,
        // welcome, pong, other errors, other types: nothing to account.
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(texts: &[&str]) -> (ClientState, HashMap<String, String>, bool) {
        let channels = vec!["c".to_string()];
        let state = ClientState::new(&channels);
        let mut positions = HashMap::new();
        let mut pending = vec!["c"];
        let mut keep = true;
        for text in texts {
            keep &= handle(text, "r1", &state, &mut positions, &mut pending);
        }
        (state, positions, keep)
    }

    fn event(id: &str, n: u64) -> String {
        json!({"type": EVENT_TYPE, "channel": "c", "id": id, "ts": "2026-11-30T00:00:00Z", "data": {"run": "r1", "n": n}})
            .to_string()
    }

    fn seen(state: &ClientState) -> Vec<Seen> {
        state.seen.lock()["c"].clone()
    }

    #[test]
    fn records_events_and_remembers_the_last_position_of_any_epoch() {
        let (state, positions, keep) = frames(&[
            r#"{"type":"subscribed","channel":"c","offset":"e1:5-0","recovered":true}"#,
            &event("e1:6-0", 1),
            &event("e2:1-0", 2),
        ]);
        assert!(keep);
        assert_eq!(positions["c"], "e2:1-0", "an event of a new epoch replaces the position");
        assert_eq!(state.high("c"), 2);
        assert_eq!(
            seen(&state),
            vec![
                Seen::Subscribed { recovered: true },
                Seen::Event { n: 1, id: "e1:6-0".into() },
                Seen::Event { n: 2, id: "e2:1-0".into() }
            ]
        );
    }

    #[test]
    fn recovered_false_replaces_a_stale_or_future_position_with_the_head() {
        let (state, positions, _) = frames(&[
            &event("9999999999999-0", 1),
            r#"{"type":"subscribed","channel":"c","offset":"e3:17-2","recovered":false}"#,
        ]);
        assert_eq!(positions["c"], "e3:17-2");
        assert_eq!(seen(&state).last(), Some(&Seen::Subscribed { recovered: false }));
    }

    #[test]
    fn gaps_are_notices_and_other_runs_are_ignored() {
        let other = json!({"type": EVENT_TYPE, "channel": "c", "id": "1-0", "data": {"run": "r0", "n": 1}}).to_string();
        let (state, positions, _) = frames(&[&other, r#"{"type":"gap","channel":"c","offset":"e2:3-0"}"#]);
        assert_eq!(seen(&state), vec![Seen::Gap]);
        assert_eq!(positions["c"], "e2:3-0");
    }

    #[test]
    fn a_refused_subscribe_gives_the_connection_up() {
        let (_, _, keep) = frames(&[r#"{"type":"error","code":"unavailable","message":"try again","channel":"c"}"#]);
        assert!(!keep);
        let (state, _, keep) = frames(&["not json", r#"{"type":"pong"}"#]);
        assert!(keep);
        assert_eq!(state.unparsed.load(Ordering::SeqCst), 1);
    }
}
