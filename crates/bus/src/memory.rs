//! The in-memory bus of standalone mode: one process, same semantics as Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pulse_protocol::{Channel, Event, EventDraft, Offset};

use crate::router::Router;
use crate::subscription::Backend;
use crate::{Bus, BusError, History, Subscription};

/// Settings of the memory bus.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBusConfig {
    /// Events kept per channel for resume and the history API.
    pub history_len: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self { history_len: 10_000 }
    }
}

/// The bus inside one process: a ring buffer of history per channel and
/// offsets in the Redis stream id format. Cheap to clone.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    history_len: usize,
    logs: Mutex<HashMap<Channel, Log>>,
    router: Arc<Router>,
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
                logs: Mutex::default(),
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
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Backend for Inner {
    async fn history(&self, channel: &Channel, after: Offset, limit: usize) -> Result<History, BusError> {
        let logs = self.logs();
        let Some(log) = logs.get(channel) else { return Ok(History { events: Vec::new(), truncated: false }) };
        let start = log.events.partition_point(|e| e.id <= after);
        let events = log.events.iter().skip(start).take(limit).cloned().collect();
        Ok(History { events, truncated: after < log.max_trimmed })
    }

    async fn head(&self, channel: &Channel) -> Result<Offset, BusError> {
        Ok(self.logs().get(channel).map_or(Offset::ZERO, |log| log.head))
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
        let log = logs.entry(channel.clone()).or_default();
        let ms = now_ms();
        let id = if ms > log.head.ms { Offset::new(ms, 0) } else { log.head.successor() };
        let event = draft.into_event(channel.clone(), id);
        log.head = id;
        log.events.push_back(event.clone());
        while log.events.len() > self.inner.history_len {
            if let Some(trimmed) = log.events.pop_front() {
                log.max_trimmed = trimmed.id;
            }
        }
        // Dispatching under the log's lock keeps live order equal to offset
        // order when publishers race.
        self.inner.router.dispatch(Arc::new(event.clone()));
        Ok(event)
    }

    async fn history(&self, channel: &Channel, after: Offset, limit: usize) -> Result<History, BusError> {
        Backend::history(&*self.inner, channel, after, limit).await
    }

    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError> {
        let logs = self.inner.logs();
        let Some(log) = logs.get(channel) else { return Ok(Vec::new()) };
        Ok(log.events.iter().skip(log.events.len().saturating_sub(limit)).cloned().collect())
    }

    async fn head(&self, channel: &Channel) -> Result<Offset, BusError> {
        Backend::head(&*self.inner, channel).await
    }

    fn subscription(&self) -> Subscription {
        Subscription::new(self.inner.clone())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }
}
