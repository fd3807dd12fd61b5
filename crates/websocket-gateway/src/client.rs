//! One client, whatever its transport: its queue, identity and
//! subscriptions, and the subscribe/resume procedure. The
//! [core](crate::core) drives it; WebSocket and SSE only carry its frames.
//!
//! Subscribing with `since` resumes without gap or duplicate:
//!
//! 1. the queue starts holding live events of the new subscription aside;
//! 2. the hub registers it and returns `head`, the last offset fanned out
//!    (every later event will be pushed live, so held);
//! 3. a replay task sends history after `since` up to `head`, page by page
//!    (with the bus's [`HistoryPages`]), waiting for the client to drain
//!    between pages;
//! 4. the held events newer than the last replayed one are queued, then
//!    `subscribed`, in one critical section with the hub's pushes.
//!
//! Without `since`, steps 3 is skipped (nothing to replay).

use std::sync::Arc;

use bytestring::ByteString;
use pulse_bus::{Bus, HistoryPages};
use pulse_protocol::{Channel, ControlMessage, ErrorCode, Position};
use tokio::task::AbortHandle;

use crate::auth::Identity;
use crate::depth::Registered;
use crate::gateway::Gateway;
use crate::hub::{SubKey, Subscriber};
use crate::limits::ConnectionPermit;
use crate::metrics::{self, Metrics};
use crate::queue::{ClientQueue, SUBSCRIPTION_TAGS, Tag};

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
pub(crate) struct Client {
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

impl Client {
    /// A new client; its first frame, `welcome`, is queued.
    pub(crate) fn new(gw: Gateway, transport: &'static str, permit: ConnectionPermit, identity: Identity) -> Self {
        metrics::connection_opened(transport);
        let settings = &gw.settings().gateway;
        let queue = Arc::new(ClientQueue::new(settings.queue_capacity, settings.queue_bytes));
        let depth = gw.depths().register(&queue);
        let client = Self {
            id: gw.next_connection_id(),
            queue,
            identity,
            slots: Vec::new(),
            next_tag: 0,
            transport,
            ended: None,
            _depth: depth,
            _permit: permit,
            gw,
        };
        let settings = &client.gw.settings().gateway;
        client.send(&ControlMessage::Welcome {
            connection_id: client.id.clone(),
            heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as u64,
            client_timeout_ms: settings.client_timeout.as_millis() as u64,
            authenticated: client.identity.is_authenticated(),
        });
        client
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
        self.next_tag = if self.next_tag + 1 == SUBSCRIPTION_TAGS { 0 } else { self.next_tag + 1 };
        self.queue.hold(tag);
        let gw = &self.gw;
        let subscriber = Subscriber { queue: self.queue.clone(), tag };
        let (key, head, channel) = match gw.hub().subscribe(&channel, subscriber).await {
            Ok(registered) => registered,
            Err(err) => {
                self.queue.discard(tag);
                tracing::warn!(%channel, error = %pulse_bus::error_chain(&err), "subscribe failed");
                return Err(ControlMessage::Error {
                    code: ErrorCode::Unavailable,
                    message: format!("cannot subscribe now: {err}; try again"),
                    channel: Some(channel),
                });
            }
        };
        let presence = gw.presence().tracks(&channel).then(|| {
            let name = self.identity.name();
            gw.presence().join(&channel, name);
            Box::from(name)
        });
        let replay = match since {
            None => {
                self.queue.release(tag, head, |offset| subscribed(&channel, offset, true));
                None
            }
            Some(since) => {
                let task = Replay {
                    bus: gw.bus().clone(),
                    queue: self.queue.clone(),
                    metrics: gw.metrics().clone(),
                    tag,
                    channel: channel.clone(),
                    head,
                    pages: HistoryPages::new(since, Some(head), gw.settings().gateway.replay_page),
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
        let presence = self.gw.presence();
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
        self.gw.hub().unsubscribe(&slot.channel, slot.key);
        if let Some(name) = &slot.presence {
            self.gw.presence().leave(&slot.channel, name);
        }
    }
}

impl Drop for Client {
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
    /// The head the hub delivers live from.
    head: Position,
    /// After `since`, up to `head`.
    pages: HistoryPages,
}

impl Replay {
    async fn run(mut self) {
        let mut recovered = true;
        let mut replayed = 0u64;
        // At the head already: nothing to replay. Anything else (behind the
        // head, another epoch, or ahead of the head) is for the bus's
        // history to judge.
        while let Some(after) = self.pages.next_request() {
            let history = match self.bus.history(&self.channel, after, self.pages.limit()).await {
                Ok(history) => history,
                Err(err) => {
                    tracing::warn!(channel = %self.channel, error = %pulse_bus::error_chain(&err), "history unavailable during resume");
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
                    break;
                }
            };
            let page = self.pages.accept(history);
            if page.truncated {
                // History cannot continue from `after` (trimmed past it, a
                // new epoch since, or never issued), on the first page or on
                // a later one (trimmed or replaced while the replay ran): a
                // partial replay is useless to a client that must refetch
                // state anyway. It continues from the head.
                recovered = false;
                break;
            }
            for event in page.events {
                if !self.queue.push_replayed(self.tag, event.id, ByteString::from(event.to_json())) {
                    return;
                }
                replayed += 1;
            }
            if self.pages.next_request().is_some() && !self.queue.wait_for_room().await {
                return;
            }
        }
        self.metrics.replayed_events.increment(replayed);
        metrics::replay(recovered);
        // Not recovered: the client continues from the head (`release`
        // sends what was held after it).
        let last = if recovered { self.pages.last() } else { self.head };
        let channel = &self.channel;
        self.queue.release(self.tag, last, |offset| subscribed(channel, offset, recovered));
    }
}
