//! What WebSocket sessions and SSE streams share: one client's queue,
//! identity and subscriptions, and the subscribe/resume procedure.
//!
//! Subscribing with `since` resumes without gap or duplicate:
//!
//! 1. the queue starts holding live events of the new subscription aside;
//! 2. the hub registers it and returns `head`, the last offset fanned out
//!    (every later event will be pushed live, so held);
//! 3. a replay task sends history after `since` up to `head`, page by page,
//!    waiting for the client to drain between pages;
//! 4. the held events newer than the last replayed one are queued, then
//!    `subscribed`, in one critical section with the hub's pushes.
//!
//! Without `since`, steps 3 is skipped (nothing to replay).

use std::sync::Arc;

use bytestring::ByteString;
use pulse_bus::Bus;
use pulse_protocol::{Channel, ControlMessage, ErrorCode, Position};
use tokio::task::AbortHandle;

use crate::auth::Identity;
use crate::depth::Registered;
use crate::gateway::Gateway;
use crate::hub::{SubKey, Subscriber};
use crate::limits::ConnectionPermit;
use crate::metrics::{self, Metrics};
use crate::queue::{ClientQueue, NO_TAG, Tag};

/// One local subscription.
struct Slot {
    channel: Channel,
    tag: Tag,
    key: SubKey,
    replay: Option<AbortHandle>,
    /// The identity that joined presence, if the channel tracks it: a
    /// connection that changes token later leaves under the same name.
    presence: Option<Box<str>>,
}

/// One client connection (either transport). Dropping it unsubscribes
/// everything and frees the queue.
pub(crate) struct Connection {
    pub(crate) gw: Gateway,
    pub(crate) id: String,
    pub(crate) queue: Arc<ClientQueue>,
    pub(crate) identity: Identity,
    slots: Vec<Slot>,
    next_tag: Tag,
    transport: &'static str,
    /// Who ended the connection and why, for the closes metric; unset, the
    /// client went away (socket closed, SSE stream dropped).
    ended: Option<(metrics::ClosedBy, &'static str)>,
    _depth: Registered,
    _permit: ConnectionPermit,
}

impl Connection {
    pub(crate) fn new(gw: Gateway, transport: &'static str, permit: ConnectionPermit, identity: Identity) -> Self {
        metrics::connection_opened(transport);
        let queue = Arc::new(ClientQueue::new(gw.inner.settings.gateway.queue_capacity));
        let depth = gw.inner.depths.register(&queue);
        Self {
            id: gw.next_connection_id(),
            gw,
            queue,
            identity,
            slots: Vec::new(),
            next_tag: 0,
            transport,
            ended: None,
            _depth: depth,
            _permit: permit,
        }
    }

    /// Records who ends the connection and why (the first call counts).
    pub(crate) fn ended_by(&mut self, by: metrics::ClosedBy, reason: &'static str) {
        self.ended.get_or_insert((by, reason));
    }

    /// Queues a control message.
    pub(crate) fn send(&self, message: &ControlMessage) {
        self.queue.push_control(ByteString::from(message.to_json()));
    }

    pub(crate) fn is_subscribed(&self, channel: &Channel) -> bool {
        self.slots.iter().any(|s| &s.channel == channel)
    }

    pub(crate) fn subscription_count(&self) -> usize {
        self.slots.len()
    }

    /// Tags and channels of the subscriptions.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (Tag, &Channel)> {
        self.slots.iter().map(|s| (s.tag, &s.channel))
    }

    /// Subscribes (see the [module docs](self)); a subscription to the same
    /// channel is replaced. The caller checks permissions and limits.
    pub(crate) async fn subscribe(&mut self, channel: Channel, since: Option<Position>) -> Result<(), ControlMessage> {
        self.unsubscribe(&channel);
        let tag = self.next_tag;
        self.next_tag = if self.next_tag + 1 == NO_TAG { 0 } else { self.next_tag + 1 };
        self.queue.hold(tag);
        let inner = &self.gw.inner;
        let subscriber = Subscriber { queue: self.queue.clone(), tag };
        let (key, head) = match inner.hub.subscribe(&channel, subscriber).await {
            Ok(registered) => registered,
            Err(err) => {
                self.queue.discard(tag);
                tracing::warn!(%channel, error = %err, "subscribe failed");
                return Err(ControlMessage::Error {
                    code: ErrorCode::Unavailable,
                    message: format!("cannot subscribe now: {err}; try again"),
                    channel: Some(channel),
                });
            }
        };
        let presence = inner.presence.tracks(&channel).then(|| {
            let name = self.identity.name();
            inner.presence.join(&channel, name);
            Box::from(name)
        });
        let replay = match since {
            None => {
                self.queue.release(tag, head, |offset| subscribed(&channel, offset, true));
                None
            }
            Some(since) => {
                let task = Replay {
                    bus: inner.bus.clone(),
                    queue: self.queue.clone(),
                    metrics: inner.metrics.clone(),
                    tag,
                    channel: channel.clone(),
                    since,
                    head,
                    page: inner.settings.gateway.replay_page.max(1),
                };
                Some(tokio::spawn(task.run()).abort_handle())
            }
        };
        // Most connections hold one or two subscriptions: grow one at a time.
        self.slots.reserve_exact(1);
        self.slots.push(Slot { channel, tag, key, replay, presence });
        Ok(())
    }

    /// Ends the subscription to `channel`; returns whether there was one.
    pub(crate) fn unsubscribe(&mut self, channel: &Channel) -> bool {
        let Some(position) = self.slots.iter().position(|s| &s.channel == channel) else { return false };
        let slot = self.slots.swap_remove(position);
        self.release(slot);
        true
    }

    /// Drops subscriptions `keep` rejects (after a new token), returning
    /// their channels.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Channel) -> bool) -> Vec<Channel> {
        let (kept, dropped): (Vec<Slot>, Vec<Slot>) =
            std::mem::take(&mut self.slots).into_iter().partition(|s| keep(&s.channel));
        self.slots = kept;
        dropped
            .into_iter()
            .map(|slot| {
                let channel = slot.channel.clone();
                self.release(slot);
                channel
            })
            .collect()
    }

    /// After a token change: presence shows the new identity in place of
    /// the one that joined.
    pub(crate) fn rename_presence(&mut self) {
        let presence = &self.gw.inner.presence;
        let name = self.identity.name();
        for slot in &mut self.slots {
            if let Some(joined) = slot.presence.as_mut()
                && **joined != *name
            {
                presence.join(&slot.channel, name);
                presence.leave(&slot.channel, joined);
                *joined = Box::from(name);
            }
        }
    }

    fn release(&self, slot: Slot) {
        if let Some(replay) = &slot.replay {
            replay.abort();
        }
        self.queue.discard(slot.tag);
        let inner = &self.gw.inner;
        inner.hub.unsubscribe(&slot.channel, slot.key);
        if let Some(name) = &slot.presence {
            inner.presence.leave(&slot.channel, name);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for slot in std::mem::take(&mut self.slots) {
            self.release(slot);
        }
        self.queue.close();
        let (by, reason) = self.ended.unwrap_or((metrics::ClosedBy::Client, "disconnect"));
        metrics::connection_closed(self.transport, by, reason);
    }
}

fn subscribed(channel: &Channel, offset: Position, recovered: bool) -> ByteString {
    ByteString::from(ControlMessage::Subscribed { channel: channel.clone(), offset, recovered }.to_json())
}

/// Step 3 of the resume, in its own task so the connection keeps serving
/// its other channels, pings and heartbeats meanwhile.
struct Replay {
    bus: Arc<dyn Bus>,
    queue: Arc<ClientQueue>,
    metrics: Metrics,
    tag: Tag,
    channel: Channel,
    since: Position,
    head: Position,
    page: usize,
}

impl Replay {
    async fn run(self) {
        let mut last = self.since;
        let mut recovered = true;
        let mut replayed = 0u64;
        // At the head already: nothing to replay. Anything else (behind the
        // head, another epoch, or ahead of the head) is for the bus's
        // history to judge.
        'pages: while last != self.head {
            let history = match self.bus.history(&self.channel, last, self.page).await {
                Ok(history) => history,
                Err(err) => {
                    tracing::warn!(channel = %self.channel, error = %err, "history unavailable during resume");
                    self.queue.push_control(ByteString::from(
                        ControlMessage::Error {
                            code: ErrorCode::Unavailable,
                            message: format!("history unavailable ({err}); refetch state"),
                            channel: Some(self.channel.clone()),
                        }
                        .to_json(),
                    ));
                    // Skip to live; `recovered: false` tells the client
                    // what it missed must be refetched.
                    recovered = false;
                    last = self.head;
                    break;
                }
            };
            if history.truncated {
                // History cannot continue from `last` (trimmed past it, a new
                // epoch since, or never issued), on the first page or on a
                // later one (trimmed or replaced while the replay ran): a
                // partial replay is useless to a client that must refetch
                // state anyway. It continues from the head.
                recovered = false;
                last = self.head;
                break;
            }
            let count = history.events.len();
            for event in history.events {
                if event.id.follows(&self.head) {
                    // From here on the events arrive live (held).
                    break 'pages;
                }
                if event.id.follows(&last) {
                    if !self.queue.push_replayed(self.tag, event.id, ByteString::from(event.to_json())) {
                        return;
                    }
                    last = event.id;
                    replayed += 1;
                }
            }
            if count < self.page {
                break;
            }
            if !self.queue.wait_for_room().await {
                return;
            }
        }
        self.metrics.replayed_events.increment(replayed);
        metrics::replay(recovered);
        let channel = &self.channel;
        self.queue.release(self.tag, last, |offset| subscribed(channel, offset, recovered));
    }
}
