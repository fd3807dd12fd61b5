//! The in-process store for standalone mode.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_bus::{Bus, MemoryBus};
use pulse_protocol::probe::{AgentState, AgentStatus, AgentStatusChange, Alert, Report};
use pulse_protocol::{AgentId, Channel, Event, timestamp};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::plan::{self, Publish};
use crate::{AgentCounts, AlertsView, HeartbeatOutcome, ReportOutcome, Store, StoreError, StoreSettings};

/// The [`Store`] of standalone mode: the same rules and events as
/// [`RedisStore`](crate::RedisStore), kept in this process and published on
/// a [`MemoryBus`].
///
/// One lock serialises every change together with its publishes, which is
/// what makes each change and its events one step here. A tokio mutex,
/// because the publishes are awaited while it is held.
pub struct MemoryStore {
    bus: MemoryBus,
    settings: StoreSettings,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    agents: HashMap<AgentId, AgentState>,
    /// Online agents by last-seen time (ms): the index the offline scan
    /// reads from its oldest end.
    online: BTreeSet<(i64, AgentId)>,
    /// Open alerts by agent, then check name.
    open: HashMap<AgentId, BTreeMap<String, Alert>>,
    /// Resolved alerts, newest first.
    recent: VecDeque<Alert>,
    /// Report ids seen within the dedupe TTL. The TTL is the same for all,
    /// so insertion order is expiry order and `dedupe_order` expires them
    /// from its front.
    dedupe: HashMap<String, Instant>,
    dedupe_order: VecDeque<(Instant, String)>,
    /// Claimed idempotency keys with their expiry.
    idempotency: HashMap<String, Instant>,
    /// Size of `idempotency` after its last sweep of expired keys.
    idempotency_swept_len: usize,
}

impl MemoryStore {
    pub fn new(bus: MemoryBus, settings: StoreSettings) -> Self {
        Self { bus, settings, inner: Mutex::new(Inner::default()) }
    }

    async fn publish_all(&self, publishes: Vec<Publish>) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::with_capacity(publishes.len());
        for Publish { channel, draft, .. } in publishes {
            events.push(self.bus.publish(&channel, draft).await?);
        }
        Ok(events)
    }
}

impl Inner {
    fn expire_dedupe(&mut self, now: Instant) {
        while let Some((expiry, _)) = self.dedupe_order.front()
            && *expiry <= now
        {
            if let Some((expiry, id)) = self.dedupe_order.pop_front()
                && self.dedupe.get(&id) == Some(&expiry)
            {
                self.dedupe.remove(&id);
            }
        }
    }

    /// Stores `state`, keeping the online index in step.
    fn put_agent(&mut self, state: AgentState) {
        if let Some(old) = self.agents.get(&state.agent_id)
            && old.status == AgentStatus::Online
        {
            self.online.remove(&(old.last_seen.timestamp_millis(), old.agent_id.clone()));
        }
        if state.status == AgentStatus::Online {
            self.online.insert((state.last_seen.timestamp_millis(), state.agent_id.clone()));
        }
        self.agents.insert(state.agent_id.clone(), state);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError> {
        let mut inner = self.inner.lock().await;
        let now_instant = Instant::now();
        inner.expire_dedupe(now_instant);
        if inner.dedupe.contains_key(&report.report_id) {
            return Ok(ReportOutcome { duplicate: true, state: None, events: Vec::new() });
        }
        let open: HashMap<String, Alert> = inner
            .open
            .get(&report.agent_id)
            .map(|alerts| alerts.iter().map(|(check, alert)| (check.clone(), alert.clone())).collect())
            .unwrap_or_default();
        let plan = plan::plan_report(inner.agents.get(&report.agent_id), &open, report, timestamp::now(), trace)?;
        // Publish before changing anything: the memory bus fails only once
        // closed, and then most likely at the first publish, leaving
        // everything as it was.
        let events = self.publish_all(plan.publishes).await?;

        let expiry = now_instant + self.settings.dedupe_ttl;
        inner.dedupe.insert(report.report_id.clone(), expiry);
        inner.dedupe_order.push_back((expiry, report.report_id.clone()));
        inner.put_agent(plan.state.clone());
        let agent_alerts = inner.open.entry(report.agent_id.clone()).or_default();
        for alert in plan.opened {
            agent_alerts.insert(alert.check.clone(), alert);
        }
        for alert in &plan.resolved {
            agent_alerts.remove(&alert.check);
        }
        if agent_alerts.is_empty() {
            inner.open.remove(&report.agent_id);
        }
        for alert in plan.resolved {
            inner.recent.push_front(alert);
        }
        inner.recent.truncate(self.settings.recent_alerts);
        Ok(ReportOutcome { duplicate: false, state: Some(plan.state), events })
    }

    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let mut inner = self.inner.lock().await;
        let plan = plan::plan_heartbeat(inner.agents.get(agent_id), agent_id, ts, timestamp::now(), trace)?;
        let events = self.publish_all(plan.publishes).await?;
        inner.put_agent(plan.state.clone());
        Ok(HeartbeatOutcome { state: plan.state, events })
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        let inner = self.inner.lock().await;
        let mut agents: Vec<AgentState> = inner.agents.values().cloned().collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(agents)
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        Ok(self.inner.lock().await.agents.get(agent_id).cloned())
    }

    async fn alerts(&self) -> Result<AlertsView, StoreError> {
        let inner = self.inner.lock().await;
        let mut open: Vec<Alert> = inner.open.values().flat_map(|alerts| alerts.values().cloned()).collect();
        sort_newest_first(&mut open);
        Ok(AlertsView { open, recent: inner.recent.iter().cloned().collect() })
    }

    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        let mut inner = self.inner.lock().await;
        let deadline_ms = deadline.timestamp_millis();
        let silent: Vec<AgentId> = inner
            .online
            .iter()
            .take_while(|(seen, _)| *seen < deadline_ms)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let now = timestamp::now();
        let mut changes = Vec::with_capacity(silent.len());
        for agent_id in silent {
            let Some(state) = inner.agents.get(&agent_id) else { continue };
            let Some(plan) = plan::plan_offline(state, now)? else { continue };
            let agents = Channel::well_known(Channel::AGENTS);
            self.bus.publish(&agents, plan.draft.clone()).await?;
            self.bus.publish(&Channel::for_agent(&agent_id), plan.draft).await?;
            inner.put_agent(plan.state);
            changes.push(plan.change);
        }
        Ok(changes)
    }

    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        // Sweep expired keys whenever the map has doubled since the last
        // sweep: amortised O(1) per claim, bounded by the live keys.
        if inner.idempotency.len() >= 2 * inner.idempotency_swept_len.max(512) {
            inner.idempotency.retain(|_, expiry| *expiry > now);
            inner.idempotency_swept_len = inner.idempotency.len();
        }
        match inner.idempotency.get(key) {
            Some(expiry) if *expiry > now => Ok(false),
            _ => {
                inner.idempotency.insert(key.to_owned(), now + ttl);
                Ok(true)
            }
        }
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        self.inner.lock().await.idempotency.remove(key);
        Ok(())
    }

    async fn counts(&self) -> Result<AgentCounts, StoreError> {
        let inner = self.inner.lock().await;
        let online = inner.online.len() as u64;
        Ok(AgentCounts { online, offline: (inner.agents.len() as u64).saturating_sub(online) })
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Newest first by opening time, then by id for a stable order.
pub(crate) fn sort_newest_first(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| a.alert_id.cmp(&b.alert_id)));
}
