//! The operations of the store on Redis: read what a change depends on,
//! plan it with the shared rules, apply it with a script, retry on a
//! conflict.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_bus::redis_lua;
use pulse_protocol::probe::{AgentState, AgentStatusChange, Alert, Report};
use pulse_protocol::{AgentId, Channel, timestamp};

use super::lanes::Known;
use super::script::{Applied, ApplyArgs, events};
use super::{RedisStore, from_json, millis, readable, replaceable, to_json};
use crate::plan;
use crate::{AgentCounts, AlertsView, HeartbeatOutcome, ReportOutcome, StoreError};

impl RedisStore {
    pub(super) async fn op_apply_report(
        &self,
        report: &Report,
        trace: Option<String>,
    ) -> Result<ReportOutcome, StoreError> {
        let agent_id = &report.agent_id;
        let fields: Vec<String> =
            plan::distinct_checks(report).iter().map(|check| plan::alert_field(agent_id, &check.name)).collect();
        let mut lane = self.lanes.enter(agent_id).await;
        for _ in 0..self.settings.max_attempts {
            // What the plan depends on: what the lane knows, else a read.
            let known = match lane.take() {
                Some(known) if known.agent_id == *agent_id && fields.iter().all(|f| known.alerts.contains_key(f)) => {
                    known
                }
                _ => match self.read_for_report(report, &fields).await? {
                    Some(known) => known,
                    None => return Ok(ReportOutcome { duplicate: true, state: None, events: Vec::new() }),
                },
            };
            let mut open = HashMap::new();
            let mut compared = Vec::with_capacity(fields.len());
            for field in &fields {
                let json = known.alerts.get(field).map_or("", String::as_str);
                if let Some(alert) = replaceable::<Alert>("open alert", (!json.is_empty()).then_some(json)) {
                    open.insert(alert.check.clone(), alert);
                }
                compared.push((field.clone(), json.to_owned()));
            }
            let plan = plan::plan_report(known.state.as_ref(), &open, report, timestamp::now(), trace.clone())?;
            let state_json = to_json(&plan.state)?;
            let applied = self
                .apply(ApplyArgs {
                    report_id: Some(&report.report_id),
                    expected_state: &known.state_json,
                    state: &plan.state,
                    state_json: &state_json,
                    compared: &compared,
                    opened: &plan.opened,
                    resolved: &plan.resolved,
                    publishes: &plan.publishes,
                })
                .await?;
            match applied {
                Applied::Done(positions) => {
                    let events = events(plan.publishes, positions);
                    let mut alerts: HashMap<String, String> = compared.into_iter().collect();
                    for alert in &plan.opened {
                        alerts.insert(plan::alert_field(agent_id, &alert.check), to_json(alert)?);
                    }
                    for alert in &plan.resolved {
                        alerts.insert(plan::alert_field(agent_id, &alert.check), String::new());
                    }
                    let known =
                        Known { agent_id: agent_id.clone(), state_json, state: Some(plan.state.clone()), alerts };
                    Known::keep(&mut lane, known);
                    return Ok(ReportOutcome { duplicate: false, state: Some(plan.state), events });
                }
                Applied::Duplicate => {
                    // Nothing was written: what the lane knew still holds.
                    Known::keep(&mut lane, known);
                    return Ok(ReportOutcome { duplicate: true, state: None, events: Vec::new() });
                }
                // Another process changed the agent: read again.
                Applied::Conflict => continue,
            }
        }
        Err(self.contention(agent_id))
    }

    /// Reads what a report's plan depends on, in one snapshot: `None` if
    /// the report is a duplicate.
    async fn read_for_report(&self, report: &Report, fields: &[String]) -> Result<Option<Known>, StoreError> {
        let dedupe_key = self.bus_keys().key(&format!("dedupe:{}", report.report_id));
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("EXISTS").arg(&dedupe_key).cmd("HGET").arg(&self.keys.agents).arg(report.agent_id.as_str());
        let mut conn = self.conn().await?;
        let (duplicate, state_json, alert_jsons): (bool, Option<String>, Vec<Option<String>>) = if fields.is_empty() {
            let (duplicate, state_json) = self.call(pipe.query_async(&mut conn)).await?;
            (duplicate, state_json, Vec::new())
        } else {
            self.call(pipe.cmd("HMGET").arg(&self.keys.alerts_open).arg(fields).query_async(&mut conn)).await?
        };
        if duplicate {
            return Ok(None);
        }
        let alerts = fields.iter().cloned().zip(alert_jsons.into_iter().map(Option::unwrap_or_default)).collect();
        Ok(Some(self.known(&report.agent_id, state_json, alerts)))
    }

    /// Reads an agent's state (for a heartbeat's plan).
    async fn read_state(&self, agent_id: &AgentId) -> Result<Known, StoreError> {
        let mut conn = self.conn().await?;
        let state_json: Option<String> =
            self.call(redis::cmd("HGET").arg(&self.keys.agents).arg(agent_id.as_str()).query_async(&mut conn)).await?;
        Ok(self.known(agent_id, state_json, HashMap::new()))
    }

    fn known(&self, agent_id: &AgentId, state_json: Option<String>, alerts: HashMap<String, String>) -> Known {
        let state = replaceable("agent state", state_json.as_deref());
        Known { agent_id: agent_id.clone(), state_json: state_json.unwrap_or_default(), state, alerts }
    }

    pub(super) async fn op_apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let mut lane = self.lanes.enter(agent_id).await;
        for _ in 0..self.settings.max_attempts {
            let known = match lane.take() {
                Some(known) if known.agent_id == *agent_id => known,
                _ => self.read_state(agent_id).await?,
            };
            let plan = plan::plan_heartbeat(known.state.as_ref(), agent_id, ts, timestamp::now(), trace.clone())?;
            let state_json = to_json(&plan.state)?;
            let applied = self
                .apply(ApplyArgs {
                    report_id: None,
                    expected_state: &known.state_json,
                    state: &plan.state,
                    state_json: &state_json,
                    compared: &[],
                    opened: &[],
                    resolved: &[],
                    publishes: &plan.publishes,
                })
                .await?;
            match applied {
                Applied::Done(positions) => {
                    let events = events(plan.publishes, positions);
                    let known = Known { state_json, state: Some(plan.state.clone()), ..known };
                    Known::keep(&mut lane, known);
                    return Ok(HeartbeatOutcome { state: plan.state, events });
                }
                Applied::Conflict | Applied::Duplicate => continue,
            }
        }
        Err(self.contention(agent_id))
    }

    pub(super) async fn op_agents(&self) -> Result<Vec<AgentState>, StoreError> {
        let mut conn = self.conn().await?;
        let jsons: Vec<String> = self.call(redis::cmd("HVALS").arg(&self.keys.agents).query_async(&mut conn)).await?;
        let mut agents = readable::<AgentState>("agent state", &jsons);
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(agents)
    }

    pub(super) async fn op_agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        let mut conn = self.conn().await?;
        let json: Option<String> =
            self.call(redis::cmd("HGET").arg(&self.keys.agents).arg(agent_id.as_str()).query_async(&mut conn)).await?;
        json.as_deref().map(|json| from_json("agent state", json)).transpose()
    }

    pub(super) async fn op_alerts(&self) -> Result<AlertsView, StoreError> {
        let mut conn = self.conn().await?;
        let (open, recent): (Vec<String>, Vec<String>) = self
            .call(
                redis::pipe()
                    .atomic()
                    .cmd("HVALS")
                    .arg(&self.keys.alerts_open)
                    .cmd("LRANGE")
                    .arg(&self.keys.alerts_recent)
                    .arg(0)
                    .arg(self.settings.recent_alerts.max(1) - 1)
                    .query_async(&mut conn),
            )
            .await?;
        let mut open = readable::<Alert>("open alert", &open);
        crate::memory::sort_newest_first(&mut open);
        let recent = readable("resolved alert", &recent);
        Ok(AlertsView { open, recent })
    }

    pub(super) async fn op_mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let deadline_ms = deadline.timestamp_millis();
        let mut conn = self.conn().await?;
        let silent: Vec<String> = self
            .call(
                self.scripts
                    .silent
                    .key(&self.keys.seen)
                    .key(&self.keys.agents)
                    .arg(deadline_ms)
                    .arg(limit)
                    .invoke_async(&mut conn),
            )
            .await?;
        if silent.is_empty() {
            return Ok(Vec::new());
        }

        let now = timestamp::now();
        let agents_channel = Channel::well_known(Channel::AGENTS);
        let mut invocation = self.scripts.offline.prepare_invoke();
        invocation
            .key(&self.keys.agents)
            .key(&self.keys.seen)
            .arg(deadline_ms)
            .arg(self.bus.history_len())
            .arg(redis_lua::epoch_candidate());
        self.channel_keys(&mut invocation, &agents_channel);
        let mut changes = Vec::with_capacity(silent.len() / 2);
        for pair in silent.chunks_exact(2) {
            let (id, json) = (&pair[0], &pair[1]);
            let agent_id = AgentId::parse(id);
            let plan = agent_id
                .as_ref()
                .map_err(|e| StoreError::corrupt("agent id in the online index", e))
                .and_then(|_| from_json::<AgentState>("agent state", json))
                .and_then(|state| plan::plan_offline(&state, now));
            let (offline_json, draft_json, change) = match plan {
                Ok(Some(plan)) => (to_json(&plan.state)?, redis_lua::encode_draft(&plan.draft), Some(plan.change)),
                // In the index but not online: repaired by dropping it from
                // the index.
                Ok(None) => (String::new(), String::new(), None),
                Err(err) => {
                    // One bad entry must not block the scan for every agent
                    // behind it: it leaves the index, unannounced.
                    tracing::error!(agent_id = %id, error = %err, "dropping an unreadable agent from the online index");
                    (String::new(), String::new(), None)
                }
            };
            // An entry that is not announced publishes nothing; its keys
            // only keep the script's key triples aligned.
            let channel = agent_id.map_or_else(|_| agents_channel.clone(), |agent_id| Channel::for_agent(&agent_id));
            self.channel_keys(&mut invocation, &channel);
            invocation.arg(id).arg(json).arg(offline_json).arg(draft_json);
            changes.push(change);
        }
        let ids: Vec<String> = self.call(invocation.invoke_async(&mut conn)).await?;
        if ids.len() != changes.len() * 2 {
            return Err(StoreError::Backend(format!(
                "offline script returned {} ids for {} agents",
                ids.len(),
                changes.len()
            )));
        }
        // Only the transitions this call made, which the script marks with
        // the ids of their events.
        Ok(changes
            .into_iter()
            .zip(ids.chunks_exact(2))
            .filter_map(|(change, ids)| if ids[0].is_empty() { None } else { change })
            .collect())
    }

    pub(super) async fn op_claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let reply: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(self.bus_keys().key(&format!("idem:{key}")))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl).max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply.is_some())
    }

    pub(super) async fn op_release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: u64 = self
            .call(redis::cmd("DEL").arg(self.bus_keys().key(&format!("idem:{key}"))).query_async(&mut conn))
            .await?;
        Ok(())
    }

    pub(super) async fn op_counts(&self) -> Result<AgentCounts, StoreError> {
        let mut conn = self.conn().await?;
        let (online, total): (u64, u64) = self
            .call(
                redis::pipe()
                    .atomic()
                    .cmd("ZCARD")
                    .arg(&self.keys.seen)
                    .cmd("HLEN")
                    .arg(&self.keys.agents)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(AgentCounts { online, offline: total.saturating_sub(online) })
    }

    pub(super) async fn op_check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: String = self.call(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }

    fn contention(&self, agent_id: &AgentId) -> StoreError {
        StoreError::Contention { agent_id: agent_id.to_string(), attempts: self.settings.max_attempts }
    }
}
