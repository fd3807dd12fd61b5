//! Local fan-out from a bus to the subscriptions of this process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use pulse_protocol::{Channel, Event};
use tokio::sync::{Notify, mpsc};

/// Channels on which a subscription missed live events, shared between the
/// router (which marks them) and the subscription (which fills them from
/// history).
#[derive(Default)]
pub(crate) struct Lag {
    channels: Mutex<HashSet<Channel>>,
    notify: Notify,
}

impl Lag {
    fn lock(&self) -> MutexGuard<'_, HashSet<Channel>> {
        // A panic while holding this lock cannot leave the set inconsistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn mark(&self, channel: &Channel) {
        if self.lock().insert(channel.clone()) {
            self.notify.notify_one();
        }
    }

    pub(crate) fn contains(&self, channel: &Channel) -> bool {
        self.lock().contains(channel)
    }

    pub(crate) fn take(&self) -> Vec<Channel> {
        self.lock().drain().collect()
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Event>>,
    lag: Arc<Lag>,
}

/// Which local subscriptions want which channel, and delivery to them.
///
/// Delivery never waits: a subscription whose queue is full is marked as
/// lagging on that channel and later fills the gap from history, so one slow
/// consumer cannot hold up the others or the connection reading from Redis.
#[derive(Default)]
pub(crate) struct Router {
    channels: Mutex<HashMap<Channel, Vec<Subscriber>>>,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, HashMap<Channel, Vec<Subscriber>>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers subscription `id` for `channel`; idempotent.
    pub(crate) fn add(&self, channel: &Channel, id: u64, tx: &mpsc::Sender<Arc<Event>>, lag: &Arc<Lag>) {
        let mut channels = self.lock();
        let subscribers = channels.entry(channel.clone()).or_default();
        if !subscribers.iter().any(|s| s.id == id) {
            subscribers.push(Subscriber { id, tx: tx.clone(), lag: lag.clone() });
        }
    }

    /// Removes subscription `id` from `channel`. Returns true when no local
    /// subscriber is left for it.
    pub(crate) fn remove(&self, channel: &Channel, id: u64) -> bool {
        let mut channels = self.lock();
        let Some(subscribers) = channels.get_mut(channel) else { return false };
        subscribers.retain(|s| s.id != id);
        if subscribers.is_empty() {
            channels.remove(channel);
            true
        } else {
            false
        }
    }

    pub(crate) fn wants(&self, channel: &Channel) -> bool {
        self.lock().contains_key(channel)
    }

    pub(crate) fn channels(&self) -> Vec<Channel> {
        self.lock().keys().cloned().collect()
    }

    /// Hands `event` to every local subscriber of its channel.
    pub(crate) fn dispatch(&self, event: Arc<Event>) {
        let channels = self.lock();
        let Some(subscribers) = channels.get(&event.channel) else { return };
        for subscriber in subscribers {
            if let Err(mpsc::error::TrySendError::Full(_)) = subscriber.tx.try_send(event.clone()) {
                subscriber.lag.mark(&event.channel);
            }
        }
    }

    /// Every subscription may have missed events on every channel (the live
    /// connection was lost): make them all fill from history.
    pub(crate) fn mark_all_lagged(&self) {
        for (channel, subscribers) in self.lock().iter() {
            for subscriber in subscribers {
                subscriber.lag.mark(channel);
            }
        }
    }
}
