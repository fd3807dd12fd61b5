//! Agent state, alerts and report dedupe for Pulse.
//!
//! One [`Store`] interface, used by ingest and the heartbeat checker through
//! `Arc<dyn Store>`, with two implementations:
//!
//! - [`RedisStore`] keeps everything in Redis next to the [`RedisBus`]
//!   (the keys are listed in [`redis_store`]). Every change and the events
//!   that announce it happen in one Lua script, so a change is never visible
//!   without its events, nor an event published for a change that did not
//!   happen, and any number of replicas can share one Redis. On a Redis
//!   Cluster ([`Layout::Partitioned`]) that script queues the events in an
//!   outbox next to the agent's state, and they are published from there
//!   right after, each exactly once and in order per channel, by the same
//!   process or (if it stopped) by the next one to touch the agent or the
//!   heartbeat checker.
//! - [`MemoryStore`] keeps the same state in one process on a [`MemoryBus`],
//!   for standalone mode.
//!
//! The domain rules (what a report does to an agent and its alerts, when an
//! agent goes offline) are written once, in Rust, and shared by both
//! implementations. The Redis implementation reads, lets the rules plan the
//! change, then applies the plan with a compare-and-set script that checks
//! that nothing it read has changed (and retries when something has).
//! Changes of one agent take turns within a process, so only another
//! process (a second replica, a heartbeat checker) can make a plan stale.
//!
//! # Decisions
//!
//! - **Pulse's clock, not the agent's.** An agent's `last_seen` is when Pulse
//!   heard from it (the store's clock for reports, the given time, capped at
//!   now, for heartbeats), so an agent with a skewed clock is not taken for
//!   silent. Alerts open and resolve at the store's time too. The report's
//!   own `ts` travels unchanged in `report_received`.
//! - **First sight is a status change.** An agent Pulse has never seen
//!   counts as offline; its first report or heartbeat publishes
//!   `agent_status_changed` offline → online, so that a dashboard following
//!   `agents` learns about new agents and can keep an online count by
//!   folding events.
//! - **Health** is derived from the latest checks while an agent is online
//!   ([`HealthStatus::of_checks`]), and is `unknown` before its first report
//!   and while it is offline.
//! - **Order of events** of one report: `agent_status_changed` (if it came
//!   online), `report_received`, then `alert_resolved` / `alert_triggered`
//!   in the order of the report's checks. Each is published on its fleet
//!   channel first, then on `agent:{id}`.
//! - **Alerts.** An L3 check that fails opens an alert unless one is open
//!   for the same agent and check; a check reported `ok` resolves the open
//!   alert of that check (`warn` does not). A check that is not in a report
//!   leaves its alert as it is. If a report names a check twice, the first
//!   occurrence counts for alerts.

mod error;
mod memory;
mod plan;
pub mod redis_store;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_protocol::probe::{AgentState, AgentStatusChange, Alert, Report};
use pulse_protocol::{AgentId, Event};

#[cfg(doc)]
use pulse_bus::{MemoryBus, RedisBus};
#[cfg(doc)]
use pulse_protocol::probe::HealthStatus;

pub use error::{EventsDelayed, Source, StoreError};
pub use memory::MemoryStore;
pub use redis_store::{Layout, RedisStore};

/// Agent state, alerts and dedupe, with the events that announce each
/// change.
///
/// Every method that changes state publishes its events in the same atomic
/// step (or queues them atomically with the change and publishes them next,
/// see [`Layout::Partitioned`]) and returns them, in the order they were
/// published.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies a probe report, atomically: dedupe by `report_id` (for
    /// [`StoreSettings::dedupe_ttl`]), mark the agent seen, update its state,
    /// open an alert for each failing L3 check that has none open, resolve
    /// the open alert of each check that now passes, bring the agent online,
    /// and publish `report_received` on `reports` and `agent:{id}`,
    /// `alert_triggered` / `alert_resolved` on `alerts` and `agent:{id}`,
    /// and `agent_status_changed` on `agents` and `agent:{id}` when the agent
    /// was offline or is seen for the first time.
    ///
    /// A duplicate changes nothing and publishes nothing; its outcome has
    /// `duplicate: true` and no state.
    async fn apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError>;

    /// A heartbeat received at `ts` (capped at the store's clock): marks the
    /// agent seen; an offline or unknown agent comes online with
    /// `agent_status_changed`.
    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError>;

    /// Every known agent, ordered by id.
    async fn agents(&self) -> Result<Vec<AgentState>, StoreError>;

    /// One agent, if known.
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError>;

    /// Open alerts and recently resolved ones.
    async fn alerts(&self) -> Result<AlertsView, StoreError>;

    /// Moves up to `limit` online agents last seen before `deadline` to
    /// offline, publishing `agent_status_changed` on `agents` and
    /// `agent:{id}` for each. Returns the changes made by this call.
    ///
    /// Each transition is a compare-and-set together with its publish, so
    /// concurrent callers announce every transition exactly once, and an
    /// agent seen again in the meantime is never flipped. Reads only the
    /// agents past the deadline, never the whole fleet. Fewer changes than
    /// `limit` means the silent agents are (as far as this call could tell)
    /// all handled.
    ///
    /// A store that queues events ([`Layout::Partitioned`]) also publishes
    /// the events that a process which stopped right after a change left
    /// queued: the heartbeat checker's scan is the sweep of last resort.
    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError>;

    /// Claims an idempotency key of the publish API: true the first time the
    /// key is claimed within `ttl`, false while an earlier claim holds.
    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Releases a claimed key (the work it guarded failed and may be
    /// retried).
    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError>;

    /// How many agents are online and offline.
    async fn counts(&self) -> Result<AgentCounts, StoreError>;

    /// Whether the store can serve requests now (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}

/// What [`Store::apply_report`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// The report was applied before (within the dedupe TTL); nothing
    /// changed and nothing was published.
    pub duplicate: bool,
    /// The agent's state after the report; `None` for a duplicate.
    pub state: Option<AgentState>,
    /// The events published, in order.
    pub events: Vec<Event>,
}

/// What [`Store::apply_heartbeat`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutcome {
    /// The agent's state after the heartbeat.
    pub state: AgentState,
    /// The events published (an `agent_status_changed` on `agents` and
    /// `agent:{id}` when the agent came online), in order.
    pub events: Vec<Event>,
}

/// The alerts the read API shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertsView {
    /// Open alerts, newest first.
    pub open: Vec<Alert>,
    /// Recently resolved alerts, newest first, at most
    /// [`StoreSettings::recent_alerts`].
    pub recent: Vec<Alert>,
}

/// How many agents are in each status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentCounts {
    pub online: u64,
    pub offline: u64,
}

/// Tunables shared by both stores: the `[store]` block of every service
/// that has a store (ingest, the heartbeat checker, the gateway's
/// `refresh` reads, standalone). Every field has a default. How long a Redis
/// call may take is the bus's `redis.request_timeout`, the one deadline of
/// every Redis call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// How long a `report_id` is remembered. A retry within this window is a
    /// duplicate. Probes retry within seconds to minutes; every remembered
    /// id costs memory, so this is minutes, not days. Default 15 minutes.
    #[serde(deserialize_with = "pulse_bus::settings::duration::deserialize")]
    pub dedupe_ttl: Duration,
    /// How many resolved alerts [`Store::alerts`] keeps. Default 100.
    pub recent_alerts: usize,
    /// How often a change that lost a race with a change of the same agent
    /// made by another process (changes within one process take turns) is
    /// re-planned before giving up with [`StoreError::Contention`].
    /// Default 16.
    pub max_attempts: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { dedupe_ttl: Duration::from_secs(15 * 60), recent_alerts: 100, max_attempts: 16 }
    }
}
