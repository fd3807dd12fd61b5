//! The Redis store, and the keys it keeps.
//!
//! All keys start with the bus prefix (`pulse:` by default), so one Redis
//! can hold several Pulse installations side by side. Where they are depends
//! on the [`Layout`]: on a single Redis ([`Layout::Single`]) one set of keys
//! holds every agent; on a Redis Cluster ([`Layout::Partitioned`]) agents
//! are spread over [`BUCKETS`] buckets by a stable hash of their id (CRC16,
//! as Redis hashes keys), and each bucket has the same keys under a hash
//! tag of its own (`{prefix}{agents:<b>}:…`), so that every script touches
//! one hash slot.
//!
//! | single | partitioned (bucket `b`) | type | what |
//! |---|---|---|---|
//! | `{prefix}agents` | `{prefix}{agents:b}:state` | hash | agent id → [`AgentState`] JSON, for every agent ever heard from |
//! | `{prefix}agents:seen` | `{prefix}{agents:b}:seen` | sorted set | agent id → last-seen time (ms since the epoch), for **online** agents only: the heartbeat checker's index. An agent leaves it when it goes offline and comes back with its next report or heartbeat, so a scan for silent agents is a range over this set and never meets an agent already offline. An offline agent's last-seen time is in its state. |
//! | `{prefix}alerts:open` | `{prefix}{agents:b}:alerts` | hash | `{agent_id}/{check}` → open [`Alert`] JSON (agent ids never contain `/`) |
//! | `{prefix}alerts:recent` | `{prefix}{agents:b}:recent` | list | resolved [`Alert`] JSON, newest first, capped at [`StoreSettings::recent_alerts`] (per bucket; [`Store::alerts`] merges the buckets by resolution time) |
//! | `{prefix}dedupe:{report_id}` | `{prefix}{agents:b}:dedupe:{report_id}` | string with TTL | the agent id of a report applied less than [`StoreSettings::dedupe_ttl`] ago: a retry is a duplicate |
//! | — | `{prefix}{agents:b}:outbox` | stream | events of changes made but not yet published (see the `outbox` module) |
//! | — | `{prefix}{agents:b}:pending` | hash | agent id → its latest outbox entry not yet published |
//! | — | `{prefix}{ch:<channel>}:outbox` | hash | agent id → the agent's latest outbox entry published on the channel, and the positions it was given |
//! | `{prefix}idem:{key}` | the same | string with TTL | an idempotency key of the publish API, claimed for the TTL its claimer gave |
//!
//! Events go through the bus keys (`{prefix}{ch:<channel>}:hist`, …),
//! written by the bus's own publish function: from
//! inside the script that makes a change (single), or from the bucket's
//! outbox right after it, exactly once and in order (partitioned).
//!
//! # How a change is made
//!
//! 1. Read what the change depends on (the agent's state, the open alerts of
//!    the report's checks) in one `MULTI`, unless this process's previous
//!    change of the agent left it known (see below).
//! 2. Plan the change with the shared rules, in Rust.
//! 3. Run one Lua script (`lua/apply.lua`, `lua/offline.lua`) that checks
//!    that everything read in step 1 is unchanged, then writes the new state
//!    and publishes the events (single), or appends them to the bucket's
//!    outbox (partitioned). If something changed, nothing is written and
//!    the change is planned again from fresh reads.
//! 4. Partitioned: publish the outbox entry, one script per channel, and
//!    remove it (the `outbox` module).
//!
//! Within one process, the reports and heartbeats of one agent run these
//! steps one at a time (on the agent's lane, see [`Lanes`]), so they never
//! invalidate each other however fast an agent reports: a plan is refused
//! only when another process changed the agent between steps 1 and 3 (a
//! second ingest replica given a report of the same agent, or a heartbeat
//! checker taking the agent offline). That is retried up to
//! [`StoreSettings::max_attempts`] times, then answered with
//! [`StoreError::Contention`] (ingest answers 503 with `Retry-After`).
//!
//! Since an agent's changes take turns, what one change wrote is what the
//! next one of the same agent will find, unless another process changed it
//! meanwhile. The lane keeps it, and the next change plans from it without
//! reading: one round trip per report instead of two. The compare-and-set
//! of step 3 checks this knowledge exactly as it checks a read, so a stale
//! one only costs an attempt and a read.
//!
//! Scripts do every check before their first write, so a refused or failed
//! check never leaves half a change behind.
//!
//! # Unreadable data
//!
//! A value that does not parse (edited by hand, written by an incompatible
//! version) is logged and never blocks the rest: lists ([`Store::agents`],
//! [`Store::alerts`]) leave it out, a report or heartbeat replaces the
//! agent's unreadable state or alert, and the offline scan drops an
//! unreadable agent from the online index unannounced. Only
//! [`Store::agent`] for that one agent answers [`StoreError::Corrupt`].

mod connection;
mod lanes;
mod layout;
mod ops;
mod outbox;
mod script;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_bus::RedisBus;
use pulse_bus::redis_lua::Keys;
use pulse_protocol::probe::{AgentState, AgentStatusChange, Report};
use pulse_protocol::{AgentId, Position};
use serde::de::DeserializeOwned;

#[cfg(doc)]
use pulse_protocol::probe::Alert;

use self::connection::SharedConnection;
use self::lanes::Lanes;
use self::layout::Buckets;
pub use self::layout::{BUCKETS, Layout};
use self::script::Scripts;
use crate::{AgentCounts, AlertsView, HeartbeatOutcome, ReportOutcome, Store, StoreError, StoreSettings};

/// The [`Store`] on Redis, sharing the [`RedisBus`]'s connection pool and
/// key prefix. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    bus: RedisBus,
    settings: StoreSettings,
    scripts: Arc<Scripts>,
    buckets: Arc<Buckets>,
    lanes: Arc<Lanes>,
    connection: Arc<SharedConnection>,
    /// Where the next offline scan starts ([`Layout::Partitioned`]).
    scan_start: Arc<AtomicUsize>,
}

impl RedisStore {
    /// The store on `bus`'s Redis, pool, key prefix and request deadline,
    /// with the layout that Redis needs ([`Layout::for_bus`]).
    pub fn new(bus: RedisBus, settings: StoreSettings) -> Self {
        let layout = Layout::for_bus(&bus);
        Self::with_layout(bus, settings, layout)
    }

    /// The store with the given key layout. Every process sharing a Redis
    /// must use the same layout.
    pub fn with_layout(bus: RedisBus, settings: StoreSettings, layout: Layout) -> Self {
        let buckets = Buckets::new(layout, bus.keys());
        Self {
            bus,
            settings,
            scripts: Arc::new(Scripts::new()),
            buckets: Arc::new(buckets),
            lanes: Arc::new(Lanes::new()),
            connection: Arc::default(),
            scan_start: Arc::default(),
        }
    }

    /// The key layout in use.
    pub fn layout(&self) -> Layout {
        self.buckets.layout()
    }

    fn bus_keys(&self) -> &Keys {
        self.bus.keys()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::backend(format!("encoding state: {e}")))
}

fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(what, e))
}

/// Reads a stored value that a change is about to replace: an unreadable
/// one is logged and treated as absent, so that the change overwrites it
/// (the compare-and-set still compares the unreadable text).
fn replaceable<T: DeserializeOwned>(what: &str, json: Option<&str>) -> Option<T> {
    let json = json?;
    from_json(what, json).map_err(|error| tracing::error!(%error, "replacing an unreadable {what}")).ok()
}

/// Reads a list of stored values, leaving out (and logging) unreadable
/// ones: one bad entry must not hide the rest.
fn readable<T: DeserializeOwned>(what: &str, jsons: &[String]) -> Vec<T> {
    jsons
        .iter()
        .filter_map(|json| {
            from_json(what, json).map_err(|error| tracing::error!(%error, "skipping an unreadable {what}")).ok()
        })
        .collect()
}

fn parse_id(id: &str) -> Result<Position, StoreError> {
    id.parse().map_err(|e| StoreError::corrupt("position returned by a publish", e))
}

#[async_trait]
impl Store for RedisStore {
    async fn apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError> {
        self.op_apply_report(report, trace).await
    }

    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.op_apply_heartbeat(agent_id, ts, trace).await
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        self.op_agents().await
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        self.op_agent(agent_id).await
    }

    async fn alerts(&self) -> Result<AlertsView, StoreError> {
        self.op_alerts().await
    }

    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        self.op_mark_silent_offline(deadline, limit).await
    }

    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.op_claim_idempotency_key(key, ttl).await
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        self.op_release_idempotency_key(key).await
    }

    async fn counts(&self) -> Result<AgentCounts, StoreError> {
        self.op_counts().await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.op_check().await
    }
}
