//! The in-memory bus of standalone mode: one process, same semantics as Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pulse_protocol::{Channel, Epoch, Event, EventDraft, Offset, Position};

use crate::router::Router;
use crate::subscription::Backend;
use crate::{Bus, BusError, DEFAULT_HISTORY_LEN, History, LinkState, Publication, Subscription, continuous};

/// Settings of the memory bus.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBusConfig {
    /// Events kept per channel for resume and the history API.
    pub history_len: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self { history_len: DEFAULT_HISTORY_LEN }
    }
}

/// The bus inside one process: a ring buffer of history per channel and
/// offsets in the Redis stream id format. Cheap to clone.
///
/// Its history lives as long as the process, so the whole bus has one
/// [`Epoch`], drawn at random when it is created: positions handed out by an
/// earlier process (before a restart) are recognised as another history's.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    history_len: usize,
    epoch: Epoch,
    logs: Mutex<HashMap<Channel, Log>>,
    /// Idempotency keys of [`Bus::publish_once`]: the position first given
    /// and when the key expires.
    idempotency: Mutex<Idempotency>,
    router: Arc<Router>,
}

#[derive(Default)]
struct Idempotency {
    keys: HashMap<String, (Position, Instant)>,
    /// Size of `keys` after its last sweep of expired keys.
    swept_len: usize,
}

#[derive(Default)]
struct Log {
    events: VecDeque<Event>,
    /// Offset of the newest event ever appended.
    head: Offset,
    /// Offset of the newest event trimmed away: history after an offset
    /// older than this is incomplete.
    max_trimmed: Offset,
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                history_len: config.history_len.max(1),
                epoch: Epoch::from_u64(rand::random::<u64>().max(1)),
                logs: Mutex::default(),
                idempotency: Mutex::default(),
                router: Arc::default(),
            }),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(MemoryBusConfig::default())
    }
}

impl Inner {
    fn logs(&self) -> MutexGuard<'_, HashMap<Channel, Log>> {
        // Every mutation below leaves the log consistent before it can panic.
        self.logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn position(&self, offset: Offset) -> Position {
        Position::new(self.epoch, offset)
    }

    /// Appends and dispatches, under the logs' lock.
    fn append(&self, logs: &mut HashMap<Channel, Log>, channel: &Channel, draft: EventDraft) -> Event {
        let log = logs.entry(channel.clone()).or_default();
        let ms = now_ms();
        let offset = if ms > log.head.ms { Offset::new(ms, 0) } else { log.head.successor() };
        let event = draft.into_event(channel.clone(), self.position(offset));
        log.head = offset;
        log.events.push_back(event.clone());
        while log.events.len() > self.history_len {
            if let Some(trimmed) = log.events.pop_front() {
                log.max_trimmed = trimmed.id.offset;
            }
        }
        // Dispatching under the log's lock keeps live order equal to offset
        // order when publishers race.
        self.router.dispatch(Arc::new(event.clone()));
        event
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Backend for Inner {
    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError> {
        let logs = self.logs();
        let empty = Log::default();
        let log = logs.get(channel).unwrap_or(&empty);
        let truncated = !continuous(after, self.epoch, log.head, log.max_trimmed);
        // A reader from another history gets the oldest events of this one.
        let from = if after.epoch == self.epoch { after.offset } else { Offset::ZERO };
        let start = log.events.partition_point(|e| e.id.offset <= from);
        let events = log.events.iter().skip(start).take(limit).cloned().collect();
        Ok(History { events, truncated, head: self.position(log.head) })
    }

    async fn head(&self, channel: &Channel) -> Result<Position, BusError> {
        Ok(self.position(self.logs().get(channel).map_or(Offset::ZERO, |log| log.head)))
    }

    async fn listen(&self, _channel: &Channel) -> Result<(), BusError> {
        // Publishing dispatches to the router directly.
        Ok(())
    }

    fn release(&self, _channel: &Channel) {}

    fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, channel: &Channel, draft: EventDraft) -> Result<Event, BusError> {
        let mut logs = self.inner.logs();
        Ok(self.inner.append(&mut logs, channel, draft))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        draft: EventDraft,
        key: &str,
        ttl: Duration,
    ) -> Result<Publication, BusError> {
        // One step, as on Redis: the key is checked and recorded under the
        // same lock as the append.
        let mut idempotency = self.inner.idempotency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if let Some((id, expiry)) = idempotency.keys.get(key)
            && *expiry > now
        {
            return Ok(Publication { id: *id, duplicate: true });
        }
        let event = {
            let mut logs = self.inner.logs();
            self.inner.append(&mut logs, channel, draft)
        };
        // Sweep expired keys once the map has doubled since the last sweep,
        // so memory stays bounded by the keys alive within one TTL.
        if idempotency.keys.len() >= 2 * idempotency.swept_len.max(512) {
            idempotency.keys.retain(|_, (_, expiry)| *expiry > now);
            idempotency.swept_len = idempotency.keys.len();
        }
        idempotency.keys.insert(key.to_owned(), (event.id, now + ttl));
        Ok(Publication { id: event.id, duplicate: false })
    }

    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError> {
        Backend::history(&*self.inner, channel, after, limit).await
    }

    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError> {
        let logs = self.inner.logs();
        let Some(log) = logs.get(channel) else { return Ok(Vec::new()) };
        Ok(log.events.iter().skip(log.events.len().saturating_sub(limit)).cloned().collect())
    }

    async fn head(&self, channel: &Channel) -> Result<Position, BusError> {
        Backend::head(&*self.inner, channel).await
    }

    fn subscription(&self) -> Subscription {
        Subscription::new(self.inner.clone())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn link(&self) -> LinkState {
        LinkState::Up
    }
}
