//! Redis I/O on a thread of its own, apart from the HTTP workers.
//!
//! In standalone Pulse the gateway's fan-out and ingest's requests run on
//! the same actix workers. redis-rs drives each connection from a task on
//! the runtime that opened it, and times each request out there; the bus's
//! pool opens its connections lazily, from whichever request needs one, so
//! they lived on the workers. A worker busy writing events to a thousand
//! browsers read Redis's answers only between those writes: the deadline
//! fired first, and a publish that Redis had carried out was answered 503
//! (`outcome_unknown`). A separate `pulse-ingest` process never saw this.
//!
//! [`RedisIo`] owns a one-thread Tokio runtime that does nothing else. The
//! Redis bus and store are connected on it, and every call of theirs runs
//! on it ([`OnRedisIo`]), so their connections, pub/sub link and deadlines
//! live there: the kernel schedules that thread beside the workers, answers
//! are read as they arrive, and a busy worker only delays the HTTP
//! response, never refuses it. The in-memory bus has no I/O and is used
//! directly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_bus::{Bus, BusError, History, LinkState, Publication, Subscription};
use pulse_protocol::probe::{AgentState, AgentStatusChange, Report};
use pulse_protocol::{AgentId, Channel, Event, EventDraft, Position};
use pulse_store::{AgentCounts, AlertsView, HeartbeatOutcome, ReportOutcome, Store, StoreError};
use tokio::runtime::{Handle, Runtime};

/// A runtime for Redis I/O only (one thread, `pulse-redis`). Cheap to
/// clone; the runtime stops when the last clone is dropped.
#[derive(Clone)]
pub struct RedisIo {
    handle: Handle,
    _owner: Arc<Owner>,
}

/// Stops the runtime without waiting for its tasks, which is allowed from
/// within another runtime (a plain drop is not).
struct Owner(Option<Runtime>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RedisIo {
    /// Starts the runtime's thread.
    ///
    /// # Errors
    /// When the thread or the I/O driver cannot be created.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pulse-redis")
            .enable_all()
            .build()?;
        Ok(Self { handle: runtime.handle().clone(), _owner: Arc::new(Owner(Some(runtime))) })
    }

    /// Connects the Redis bus and store of `settings` on this runtime and
    /// returns them wrapped so that every call runs there.
    ///
    /// # Errors
    /// When Redis cannot be reached (see [`pulse_ingest::connect`]).
    pub async fn connect(&self, settings: pulse_ingest::Settings) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn Store>)> {
        let (bus, store) = self
            .run(async move { pulse_ingest::connect(&settings).await })
            .await
            .context("the Redis runtime stopped while connecting")??;
        Ok((
            Arc::new(OnRedisIo { inner: bus, io: self.clone() }),
            Arc::new(OnRedisIo { inner: store, io: self.clone() }),
        ))
    }

    /// Runs `work` on this runtime; `None` if it panicked or the runtime
    /// has stopped. Work whose caller gives up still runs to its end.
    async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Option<T> {
        self.handle.spawn(work).await.ok()
    }
}

/// A bus or store whose calls all run on a [`RedisIo`] runtime.
pub struct OnRedisIo<T: ?Sized> {
    inner: Arc<T>,
    io: RedisIo,
}

/// `$inner.call(…)` on the Redis runtime, with the arguments moved there.
macro_rules! on_io {
    ($self:ident, $stopped:expr, |$inner:ident| $call:expr) => {{
        let $inner = $self.inner.clone();
        $self.io.run(async move { $call.await }).await.unwrap_or_else(|| Err($stopped))
    }};
}

fn store_stopped() -> StoreError {
    StoreError::Unavailable("the Redis runtime has stopped".into())
}

#[async_trait]
impl Bus for OnRedisIo<dyn Bus> {
    async fn publish(&self, channel: &Channel, draft: EventDraft) -> Result<Event, BusError> {
        let channel = channel.clone();
        on_io!(self, BusError::Closed, |bus| bus.publish(&channel, draft))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        draft: EventDraft,
        key: &str,
        ttl: Duration,
    ) -> Result<Publication, BusError> {
        let (channel, key) = (channel.clone(), key.to_owned());
        on_io!(self, BusError::Closed, |bus| bus.publish_once(&channel, draft, &key, ttl))
    }

    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError> {
        let channel = channel.clone();
        on_io!(self, BusError::Closed, |bus| bus.history(&channel, after, limit))
    }

    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError> {
        let channel = channel.clone();
        on_io!(self, BusError::Closed, |bus| bus.latest(&channel, limit))
    }

    async fn head(&self, channel: &Channel) -> Result<Position, BusError> {
        let channel = channel.clone();
        on_io!(self, BusError::Closed, |bus| bus.head(&channel))
    }

    /// The inner bus's subscription: its requests go to the pub/sub task,
    /// which runs on the Redis runtime already.
    fn subscription(&self) -> Subscription {
        self.inner.subscription()
    }

    async fn check(&self) -> Result<(), BusError> {
        on_io!(self, BusError::Closed, |bus| bus.check())
    }

    fn link(&self) -> LinkState {
        self.inner.link()
    }
}

#[async_trait]
impl Store for OnRedisIo<dyn Store> {
    async fn apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError> {
        let report = report.clone();
        on_io!(self, store_stopped(), |store| store.apply_report(&report, trace))
    }

    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let agent_id = agent_id.clone();
        on_io!(self, store_stopped(), |store| store.apply_heartbeat(&agent_id, ts, trace))
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        on_io!(self, store_stopped(), |store| store.agents())
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        let agent_id = agent_id.clone();
        on_io!(self, store_stopped(), |store| store.agent(&agent_id))
    }

    async fn alerts(&self) -> Result<AlertsView, StoreError> {
        on_io!(self, store_stopped(), |store| store.alerts())
    }

    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        on_io!(self, store_stopped(), |store| store.mark_silent_offline(deadline, limit))
    }

    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = key.to_owned();
        on_io!(self, store_stopped(), |store| store.claim_idempotency_key(&key, ttl))
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        on_io!(self, store_stopped(), |store| store.release_idempotency_key(&key))
    }

    async fn counts(&self) -> Result<AgentCounts, StoreError> {
        on_io!(self, store_stopped(), |store| store.counts())
    }

    async fn check(&self) -> Result<(), StoreError> {
        on_io!(self, store_stopped(), |store| store.check())
    }
}
