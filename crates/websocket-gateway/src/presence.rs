//! Presence: who is connected to a channel, across instances, for the
//! channels listed in `presence.channels`.
//!
//! Each instance announces its own members of a channel by publishing a
//! `presence_update` event on that channel whenever they change (debounced)
//! and again every `presence.refresh_interval`:
//!
//! ```json
//! {"type":"presence_update","channel":"room:1","data":{
//!   "instance":"gw-3f2a","count":2,"members":["alice","bob"],"expires_in_ms":60000}}
//! ```
//!
//! A client keeps the latest update per `instance`, drops those older than
//! `expires_in_ms` (an instance that died stops refreshing), and sums them.
//! `members` lists at most [`MAX_LISTED`] distinct identities per instance;
//! `count` counts connections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pulse_bus::Bus;
use pulse_protocol::{Channel, ChannelPattern, EventDraft, EventType};
use pulse_runtime::Shutdown;
use tokio::sync::Notify;

/// Identities listed per instance in one update.
pub const MAX_LISTED: usize = 100;

/// Changes are announced at most this often per channel.
const DEBOUNCE: Duration = Duration::from_millis(250);

pub(crate) struct Presence {
    patterns: Vec<ChannelPattern>,
    instance: String,
    refresh: Duration,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// channel → identity → open subscriptions.
    members: HashMap<Channel, BTreeMap<String, u32>>,
    dirty: HashSet<Channel>,
}

impl Presence {
    pub(crate) fn new(patterns: Vec<ChannelPattern>, instance: String, refresh: Duration) -> Self {
        Self { patterns, instance, refresh, state: Mutex::default(), changed: Notify::new() }
    }

    pub(crate) fn tracks(&self, channel: &Channel) -> bool {
        ChannelPattern::any_matches(&self.patterns, channel)
    }

    pub(crate) fn join(&self, channel: &Channel, who: &str) {
        let mut state = self.state.lock();
        *state.members.entry(channel.clone()).or_default().entry(who.to_owned()).or_default() += 1;
        state.dirty.insert(channel.clone());
        drop(state);
        self.changed.notify_one();
    }

    pub(crate) fn leave(&self, channel: &Channel, who: &str) {
        let mut state = self.state.lock();
        if let Some(members) = state.members.get_mut(channel) {
            if let Some(count) = members.get_mut(who) {
                *count -= 1;
                if *count == 0 {
                    members.remove(who);
                }
            }
            // An empty list is announced once (so others see the leave),
            // then the channel is forgotten.
            state.dirty.insert(channel.clone());
        }
        drop(state);
        self.changed.notify_one();
    }

    fn update(&self, channel: &Channel) -> Option<EventDraft> {
        let mut state = self.state.lock();
        let members = state.members.get(channel)?;
        let count: u32 = members.values().sum();
        let listed: Vec<&str> = members.keys().take(MAX_LISTED).map(String::as_str).collect();
        let data = serde_json::json!({
            "instance": self.instance,
            "count": count,
            "members": listed,
            "expires_in_ms": (self.refresh * 3).as_millis() as u64,
        });
        if members.is_empty() {
            state.members.remove(channel);
        }
        Some(EventDraft::new(EventType::well_known(EventType::PRESENCE_UPDATE), data))
    }

    /// Publishes changes (debounced) and periodic refreshes until shutdown.
    pub(crate) async fn run(self: Arc<Self>, bus: Arc<dyn Bus>, halt: Shutdown) {
        if self.patterns.is_empty() {
            return;
        }
        let mut refresh = tokio::time::interval(self.refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let channels: Vec<Channel> = tokio::select! {
                () = halt.cancelled() => return,
                () = self.changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    self.state.lock().dirty.drain().collect()
                }
                _ = refresh.tick() => self.state.lock().members.keys().cloned().collect(),
            };
            for channel in channels {
                if let Some(draft) = self.update(&channel)
                    && let Err(error) = bus.publish(&channel, draft).await
                {
                    tracing::warn!(%channel, error = %pulse_bus::error_chain(&error), "cannot publish presence");
                }
            }
        }
    }
}
