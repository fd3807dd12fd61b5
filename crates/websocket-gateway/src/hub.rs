//! The hub: which local connections want which channel, and the fan-out.
//!
//! The instance holds one bus [`Subscription`](pulse_bus::Subscription),
//! read by the [bridge](crate::bridge). A channel is subscribed on the bus,
//! through the subscription's handle, when its first local subscriber
//! arrives: that subscriber's task waits for the bus, never the bridge, so a
//! slow subscribe holds up no other channel. It is released when the last
//! local subscriber leaves; a subscribe that fails is rolled back.
//!
//! Fan-out serialises each event once into a shared [`ByteString`] and
//! pushes a refcounted copy onto each subscriber's [`ClientQueue`] without
//! waiting; a full queue marks that client slow and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use pulse_bus::{BusError, SubscriptionHandle};
use pulse_protocol::{Channel, ControlMessage, Event, Position};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::queue::{ClientQueue, Run, Tag};

/// A subscriber's place in a channel's list, to leave it.
pub(crate) type SubKey = usize;

/// One local subscription of a channel.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) queue: Arc<ClientQueue>,
    pub(crate) tag: Tag,
}

#[derive(Debug)]
pub(crate) struct ChannelEntry {
    pub(crate) channel: Channel,
    /// Set once the bus delivers the channel.
    bus: OnceCell<()>,
    subs: Mutex<Subs>,
}

#[derive(Debug, Default)]
struct Subs {
    list: slab::Slab<Subscriber>,
    /// Position of the last event fanned out (or the head at bus subscribe):
    /// a new subscriber receives everything after it.
    last: Position,
    /// Taken out of the map; a subscriber that finds this retries.
    removed: bool,
}

impl ChannelEntry {
    /// Called once the bus has subscribed the channel.
    fn set_head(&self, head: Position) {
        let mut subs = self.subs.lock();
        if head.follows(&subs.last) {
            subs.last = head;
        }
    }
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// See the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    channels: RwLock<HashMap<Channel, Arc<ChannelEntry>>>,
    bus: SubscriptionHandle,
    metrics: Metrics,
}

impl Hub {
    /// A hub subscribing channels through `bus`, whose stream the bridge
    /// reads.
    pub(crate) fn new(metrics: Metrics, bus: SubscriptionHandle) -> Self {
        Self { inner: Arc::new(HubInner { channels: RwLock::default(), bus, metrics }) }
    }

    /// Adds `subscriber` to `channel`, subscribing the bus first if it is
    /// the first local one. Returns its key, the offset after which it
    /// receives every event, and the hub's copy of the channel's name (one
    /// allocation shared by every subscriber, not one each).
    pub(crate) async fn subscribe(
        &self,
        channel: &Channel,
        subscriber: Subscriber,
    ) -> Result<(SubKey, Position, Channel), HubError> {
        loop {
            let entry = self.entry(channel);
            // The first subscriber's task subscribes the bus; others wait
            // for it. If it fails or is dropped, the bus handle has rolled
            // the channel back and the next waiter tries again.
            let ready = entry
                .bus
                .get_or_try_init(|| async {
                    let head = self.inner.bus.subscribe(channel).await?;
                    entry.set_head(head);
                    Ok::<_, HubError>(())
                })
                .await;
            if let Err(err) = ready {
                self.remove_if_empty(&entry);
                return Err(err);
            }
            let mut subs = entry.subs.lock();
            if subs.removed {
                // The last subscriber left while we waited; start over.
                drop(subs);
                self.release_if_orphaned(channel);
                continue;
            }
            let key = subs.list.insert(subscriber);
            self.inner.metrics.subscriptions.increment(1.0);
            return Ok((key, subs.last, entry.channel.clone()));
        }
    }

    /// Adds a subscriber to a channel the bus is taken to deliver already
    /// (benchmarks of the fan-out alone).
    pub(crate) fn add_local(&self, channel: &Channel, subscriber: Subscriber) {
        let entry = self.entry(channel);
        let _ = entry.bus.set(());
        entry.subs.lock().list.insert(subscriber);
    }

    fn entry(&self, channel: &Channel) -> Arc<ChannelEntry> {
        if let Some(entry) = self.inner.channels.read().get(channel) {
            return entry.clone();
        }
        let mut channels = self.inner.channels.write();
        channels
            .entry(channel.clone())
            .or_insert_with(|| {
                self.inner.metrics.channels.increment(1.0);
                Arc::new(ChannelEntry { channel: channel.clone(), bus: OnceCell::new(), subs: Mutex::default() })
            })
            .clone()
    }

    fn remove_if_empty(&self, entry: &Arc<ChannelEntry>) {
        let mut channels = self.inner.channels.write();
        let mut subs = entry.subs.lock();
        if subs.list.is_empty() && !subs.removed {
            subs.removed = true;
            if channels.get(&entry.channel).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                channels.remove(&entry.channel);
                self.inner.metrics.channels.decrement(1.0);
            }
            if entry.bus.initialized() {
                self.inner.bus.unsubscribe(&entry.channel);
            }
        }
    }

    /// After a subscribe completed on an entry that was removed meanwhile:
    /// unless a newer entry took the channel over, nobody will release it.
    fn release_if_orphaned(&self, channel: &Channel) {
        let channels = self.inner.channels.read();
        if !channels.contains_key(channel) {
            self.inner.bus.unsubscribe(channel);
        }
    }

    /// Removes a subscriber; releases the channel after the last one.
    pub(crate) fn unsubscribe(&self, channel: &Channel, key: SubKey) {
        let Some(entry) = self.inner.channels.read().get(channel).cloned() else { return };
        let now_empty = {
            let mut subs = entry.subs.lock();
            if subs.list.try_remove(key).is_none() {
                return;
            }
            self.inner.metrics.subscriptions.decrement(1.0);
            subs.list.is_empty()
        };
        if now_empty {
            self.remove_if_empty(&entry);
        }
    }

    /// Hands events (in bus order) to every local subscriber of their
    /// channels. Consecutive events of one channel go to each subscriber's
    /// queue together: one lock and at most one wake-up per subscriber.
    pub(crate) fn deliver(&self, events: &[Arc<Event>]) {
        for run in events.chunk_by(|a, b| a.channel == b.channel) {
            self.deliver_run(run);
        }
    }

    /// `run`: events of one channel.
    fn deliver_run(&self, run: &[Arc<Event>]) {
        let Some(first) = run.first() else { return };
        let metrics = &self.inner.metrics;
        metrics.events_in.increment(run.len() as u64);
        let Some(entry) = self.inner.channels.read().get(&first.channel).cloned() else { return };
        // Serialise once, before taking the channel's lock; every
        // subscriber gets the same run of bytes.
        let texts: Run = run.iter().map(|event| (event.id, ByteString::from(event.to_json()))).collect();
        let bytes: usize = texts.iter().map(|(_, text)| text.len()).sum();
        let mut subs = entry.subs.lock();
        // The bus delivers each event once and in order: the newest is where
        // a subscriber that joins now starts.
        let Some((newest, _)) = texts.last() else { return };
        subs.last = *newest;
        let mut delivered = 0u64;
        for (_, subscriber) in subs.list.iter() {
            if subscriber.queue.push_live(subscriber.tag, &texts, bytes) {
                delivered += 1;
            }
        }
        drop(subs);
        metrics.events_out.increment(delivered * texts.len() as u64);
        metrics.bytes_out.increment(delivered * bytes as u64);
        let now = pulse_protocol::timestamp::now();
        for event in run {
            let age = now.signed_duration_since(event.ts);
            metrics.latency.record(age.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
        }
    }

    /// Events of `channel` after `after` are lost for good: tell its
    /// subscribers to refetch state (a `subscribed` with `recovered: false`).
    pub(crate) fn gap(&self, channel: &Channel, after: Position) {
        let Some(entry) = self.inner.channels.read().get(channel).cloned() else { return };
        let text = ByteString::from(
            ControlMessage::Subscribed { channel: channel.clone(), offset: after, recovered: false }.to_json(),
        );
        let subs = entry.subs.lock();
        for (_, subscriber) in subs.list.iter() {
            subscriber.queue.push_control(text.clone());
        }
    }

    /// Channels with at least one local subscriber.
    pub(crate) fn channel_count(&self) -> usize {
        self.inner.channels.read().len()
    }
}
