//! The operations of the store on Redis: read what a change depends on,
//! plan it with the shared rules, apply it with a script, retry on a
//! conflict.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use pulse_bus::redis_lua;
use pulse_protocol::probe::{AgentState, AgentStatusChange, Alert, Report};
use pulse_protocol::{AgentId, Channel, timestamp};

use super::lanes::Known;
use super::layout::Bucket;
use super::outbox::{Entry, OUTBOX_GRACE, RawEntry, parse_entries};
use super::script::{Applied, ApplyArgs, mode, parse_entry_id};
use super::{RedisStore, from_json, millis, readable, replaceable, to_json};
use crate::plan;
use crate::{AgentCounts, AlertsView, EventsDelayed, HeartbeatOutcome, ReportOutcome, StoreError};

impl RedisStore {
    pub(super) async fn op_apply_report(
        &self,
        report: &Report,
        trace: Option<String>,
    ) -> Result<ReportOutcome, StoreError> {
        let agent_id = &report.agent_id;
        let bucket = self.buckets.of(agent_id);
        let fields: Vec<String> =
            plan::distinct_checks(report).iter().map(|check| plan::alert_field(agent_id, &check.name)).collect();
        let mut lane = self.lanes.enter(agent_id).await;
        for _ in 0..self.settings.max_attempts {
            // What the plan depends on: what the lane knows, else a read.
            let known = match lane.take(agent_id) {
                Some(known) if fields.iter().all(|f| known.alerts.contains_key(f)) => known,
                // Boxed: the reads are the rare path, and their futures
                // would otherwise make every report's future (moved into a
                // box per call) several times larger.
                _ => match Box::pin(self.read_for_report(bucket, report, &fields)).await? {
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
                .apply(
                    bucket,
                    ApplyArgs {
                        report_id: Some(&report.report_id),
                        expected_state: &known.state_json,
                        state: &plan.state,
                        state_json: &state_json,
                        compared: &compared,
                        opened: &plan.opened,
                        resolved: &plan.resolved,
                        publishes: &plan.publishes,
                    },
                )
                .await?;
            match applied {
                Applied::Duplicate => {
                    // Nothing was written: what the lane knew still holds.
                    lane.keep(known);
                    return Ok(ReportOutcome { duplicate: true, state: None, events: Vec::new() });
                }
                // Another process changed the agent: read again.
                Applied::Conflict => continue,
                applied => {
                    let mut alerts: HashMap<String, String> = compared.into_iter().collect();
                    for alert in &plan.opened {
                        alerts.insert(plan::alert_field(agent_id, &alert.check), to_json(alert)?);
                    }
                    for alert in &plan.resolved {
                        alerts.insert(plan::alert_field(agent_id, &alert.check), String::new());
                    }
                    let known =
                        Known { agent_id: agent_id.clone(), state_json, state: Some(plan.state.clone()), alerts };
                    lane.keep(known);
                    // Still on the agent's lane: its next change finds
                    // these events published.
                    let events = self.events(bucket, plan.publishes, applied).await?;
                    return Ok(ReportOutcome { duplicate: false, state: Some(plan.state), events });
                }
            }
        }
        Err(self.contention(agent_id))
    }

    /// Reads what a report's plan depends on: `None` if the report is a
    /// duplicate. Separate commands, sent together, rather than one
    /// `MULTI`: a cluster connection does not follow a slot that moved
    /// (`MOVED`) inside a transaction. The reads need not be one snapshot:
    /// the compare-and-set refuses a plan made from reads that disagree, and
    /// the report's id is claimed again by the script.
    async fn read_for_report(
        &self,
        bucket: &Bucket,
        report: &Report,
        fields: &[String],
    ) -> Result<Option<Known>, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(bucket.dedupe(Some(&report.report_id)));
        let mut alerts = redis::cmd("HMGET");
        alerts.arg(&bucket.alerts).arg(fields);
        let duplicate = self.query::<bool>(exists);
        let state = self.state_json(bucket, &report.agent_id);
        let alerts = async {
            if fields.is_empty() {
                return Ok(Vec::new());
            }
            self.query::<Vec<Option<String>>>(alerts).await
        };
        let (duplicate, state_json, alert_jsons) = futures_util::try_join!(duplicate, state, alerts)?;
        if duplicate {
            return Ok(None);
        }
        let alerts = fields.iter().cloned().zip(alert_jsons.into_iter().map(Option::unwrap_or_default)).collect();
        Ok(Some(self.known(&report.agent_id, state_json, alerts)))
    }

    /// The stored state JSON of an agent, if any.
    async fn state_json(&self, bucket: &Bucket, agent_id: &AgentId) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("HGET");
        get.arg(&bucket.state).arg(agent_id.as_str());
        self.query(get).await
    }

    /// Reads an agent's state (for a heartbeat's plan).
    async fn read_state(&self, bucket: &Bucket, agent_id: &AgentId) -> Result<Known, StoreError> {
        let state_json = self.state_json(bucket, agent_id).await?;
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
        let bucket = self.buckets.of(agent_id);
        let mut lane = self.lanes.enter(agent_id).await;
        for _ in 0..self.settings.max_attempts {
            let known = match lane.take(agent_id) {
                Some(known) => known,
                _ => Box::pin(self.read_state(bucket, agent_id)).await?,
            };
            let plan = plan::plan_heartbeat(known.state.as_ref(), agent_id, ts, timestamp::now(), trace.clone())?;
            let state_json = to_json(&plan.state)?;
            let applied = self
                .apply(
                    bucket,
                    ApplyArgs {
                        report_id: None,
                        expected_state: &known.state_json,
                        state: &plan.state,
                        state_json: &state_json,
                        compared: &[],
                        opened: &[],
                        resolved: &[],
                        publishes: &plan.publishes,
                    },
                )
                .await?;
            match applied {
                Applied::Conflict | Applied::Duplicate => continue,
                applied => {
                    let known = Known { state_json, state: Some(plan.state.clone()), ..known };
                    lane.keep(known);
                    let events = self.events(bucket, plan.publishes, applied).await?;
                    return Ok(HeartbeatOutcome { state: plan.state, events });
                }
            }
        }
        Err(self.contention(agent_id))
    }

    /// Runs `read` on every bucket at once (one command or one-slot
    /// pipeline each: a cluster refuses pipelines across slots).
    async fn each_bucket<'a, T, F, Fut>(&'a self, read: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(&'a Bucket) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        try_join_all(self.buckets.all().iter().map(read)).await
    }

    pub(super) async fn op_agents(&self) -> Result<Vec<AgentState>, StoreError> {
        let jsons = self
            .each_bucket(|bucket| {
                let mut values = redis::cmd("HVALS");
                values.arg(&bucket.state);
                self.query::<Vec<String>>(values)
            })
            .await?;
        let mut agents = readable::<AgentState>("agent state", &jsons.concat());
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(agents)
    }

    pub(super) async fn op_agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        let json = self.state_json(self.buckets.of(agent_id), agent_id).await?;
        json.as_deref().map(|json| from_json("agent state", json)).transpose()
    }

    pub(super) async fn op_alerts(&self) -> Result<AlertsView, StoreError> {
        let keep = self.settings.recent_alerts.max(1);
        // Two commands per bucket, not a `MULTI` (see `read_for_report`).
        let parts = self
            .each_bucket(|bucket| async move {
                let mut open = redis::cmd("HVALS");
                open.arg(&bucket.alerts);
                let mut recent = redis::cmd("LRANGE");
                recent.arg(&bucket.recent).arg(0).arg(keep - 1);
                futures_util::try_join!(self.query::<Vec<String>>(open), self.query::<Vec<String>>(recent))
            })
            .await?;
        let (open, recent): (Vec<Vec<String>>, Vec<Vec<String>>) = parts.into_iter().unzip();
        let mut open = readable::<Alert>("open alert", &open.concat());
        crate::memory::sort_newest_first(&mut open);
        let mut recent = readable::<Alert>("resolved alert", &recent.concat());
        if self.buckets.all().len() > 1 {
            // Each bucket's list is newest first; so is their merge.
            recent.sort_by_key(|alert| std::cmp::Reverse(alert.resolved_at));
            recent.truncate(keep);
        }
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
        let buckets = self.buckets.all();
        // Calls start at different buckets, so that the first buckets are
        // not always the ones served first.
        let start = self.scan_start.fetch_add(1, Ordering::Relaxed);
        let mut changes = Vec::new();
        for n in 0..buckets.len() {
            let bucket = &buckets[(start + n) % buckets.len()];
            changes.extend(self.offline_in(bucket, deadline, limit - changes.len()).await?);
            if changes.len() >= limit {
                break;
            }
        }
        Ok(changes)
    }

    /// [`Store::mark_silent_offline`](crate::Store::mark_silent_offline) in
    /// one bucket; with an outbox, also publishes the entries left in it
    /// for longer than [`OUTBOX_GRACE`].
    async fn offline_in(
        &self,
        bucket: &Bucket,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        let deadline_ms = deadline.timestamp_millis();
        let outbox = self.buckets.outbox();
        let cutoff = if outbox {
            let grace = chrono::TimeDelta::from_std(OUTBOX_GRACE).unwrap_or(chrono::TimeDelta::MAX);
            (timestamp::now() - grace).timestamp_millis().max(0).to_string()
        } else {
            String::new()
        };
        let mut conn = self.conn().await?;
        let (silent, left_behind): (Vec<String>, Vec<RawEntry>) = self
            .call(
                self.scripts
                    .silent
                    .key(&bucket.seen)
                    .key(&bucket.state)
                    .key(&bucket.outbox)
                    .arg(deadline_ms)
                    .arg(limit)
                    .arg(cutoff)
                    .arg(limit)
                    .invoke_async(&mut conn),
            )
            .await?;
        let mut unreadable = Vec::new();
        let left_behind = parse_entries(left_behind, bucket, &mut unreadable);
        if !unreadable.is_empty() {
            self.ack(bucket, unreadable).await?;
        }
        if silent.is_empty() {
            if !left_behind.is_empty() {
                self.publish_left_behind(bucket, left_behind, Vec::new(), &[]).await?;
            }
            return Ok(Vec::new());
        }

        let now = timestamp::now();
        let agents_channel = Channel::well_known(Channel::AGENTS);
        let mut invocation = self.scripts.offline.prepare_invoke();
        invocation
            .key(&bucket.state)
            .key(&bucket.seen)
            .key(&bucket.outbox)
            .key(&bucket.pending)
            .arg(deadline_ms)
            .arg(self.bus.history_len())
            .arg(redis_lua::epoch_candidate())
            .arg(mode(outbox))
            .arg(agents_channel.as_str());
        if !outbox {
            self.channel_keys(&mut invocation, &agents_channel);
        }
        let mut changes = Vec::with_capacity(silent.len() / 2);
        for pair in silent.chunks_exact(2) {
            let (id, json) = (&pair[0], &pair[1]);
            let agent_id = AgentId::parse(id);
            let plan = agent_id
                .as_ref()
                .map_err(|e| StoreError::corrupt("agent id in the online index", e.clone()))
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
            // An entry that is not announced publishes nothing; its channel
            // only keeps the script's arguments aligned.
            let channel = agent_id.map_or_else(|_| agents_channel.clone(), |agent_id| Channel::for_agent(&agent_id));
            if !outbox {
                self.channel_keys(&mut invocation, &channel);
            }
            invocation.arg(id).arg(json).arg(offline_json).arg(&draft_json).arg(channel.as_str());
            changes.push((change, draft_json, channel));
        }
        let ids: Vec<String> = self.call(invocation.invoke_async(&mut conn)).await?;
        if ids.iter().any(|id| !id.is_empty()) {
            self.replicated(&mut conn, &bucket.state).await?;
        }
        if ids.len() != changes.len() * 2 {
            return Err(StoreError::backend(format!(
                "offline script returned {} ids for {} agents",
                ids.len(),
                changes.len()
            )));
        }
        // Only the transitions this call made, which the script marks with
        // the ids of their events (or of their outbox entries).
        let mut made = Vec::new();
        let mut queued = Vec::new();
        let mut behind = Vec::new();
        for ((change, draft, channel), ids) in changes.into_iter().zip(ids.chunks_exact(2)) {
            let Some(change) = change else { continue };
            if ids[0].is_empty() {
                continue;
            }
            if outbox {
                let id = parse_entry_id(&ids[0])?
                    .ok_or_else(|| StoreError::backend("offline script returned no entry id"))?;
                let agent = change.agent_id.as_str().to_owned();
                if parse_entry_id(&ids[1])?.is_some() {
                    behind.push(agent.clone());
                }
                queued.push(Entry {
                    id,
                    agent,
                    publishes: vec![(agents_channel.clone(), draft.clone()), (channel, draft)],
                });
            }
            made.push(change);
        }
        if !queued.is_empty() || !left_behind.is_empty() {
            let behind: Vec<&str> = behind.iter().map(String::as_str).collect();
            self.publish_left_behind(bucket, left_behind, queued, &behind)
                .await
                .map_err(|err| StoreError::Unavailable(Box::new(EventsDelayed { made: made.len(), source: err })))?;
        }
        Ok(made)
    }

    /// Publishes entries of one bucket that are in its outbox: entries
    /// found left behind, the entries this process just queued, and the
    /// earlier pending entries of the agents in `behind`, all in outbox
    /// order; then removes them.
    async fn publish_left_behind(
        &self,
        bucket: &Bucket,
        left_behind: Vec<Entry>,
        queued: Vec<Entry>,
        behind: &[&str],
    ) -> Result<(), StoreError> {
        let mut entries = left_behind;
        if let Some(newest) = queued.iter().map(|e| e.id).max()
            && !behind.is_empty()
        {
            entries.extend(self.pending_of(bucket, &behind.iter().copied().collect(), newest).await?);
        }
        entries.extend(queued);
        entries.sort_by_key(|e| e.id);
        entries.dedup_by_key(|e| e.id);
        self.publish_entries(&entries).await?;
        self.ack(bucket, entries.into_iter().map(|e| (e.id.to_string(), e.agent)).collect()).await
    }

    /// `{prefix}idem:{key}`: an idempotency key of the publish API.
    fn idempotency_key(&self, key: &str) -> String {
        self.bus_keys().key(&format!("idem:{key}"))
    }

    pub(super) async fn op_claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut claim = redis::cmd("SET");
        claim.arg(self.idempotency_key(key)).arg(1).arg("NX").arg("PX").arg(millis(ttl).max(1));
        Ok(self.query::<Option<String>>(claim).await?.is_some())
    }

    pub(super) async fn op_release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        let mut release = redis::cmd("DEL");
        release.arg(self.idempotency_key(key));
        self.query::<u64>(release).await.map(drop)
    }

    pub(super) async fn op_counts(&self) -> Result<AgentCounts, StoreError> {
        // Two commands per bucket, not a `MULTI` (see `read_for_report`).
        let parts = self
            .each_bucket(|bucket| async move {
                let mut online = redis::cmd("ZCARD");
                online.arg(&bucket.seen);
                let mut total = redis::cmd("HLEN");
                total.arg(&bucket.state);
                futures_util::try_join!(self.query::<u64>(online), self.query::<u64>(total))
            })
            .await?;
        let (online, total) = parts.iter().fold((0, 0), |(online, total), (o, t)| (online + o, total + t));
        Ok(AgentCounts { online, offline: total.saturating_sub(online) })
    }

    pub(super) async fn op_check(&self) -> Result<(), StoreError> {
        let _: String = self.query(redis::cmd("PING")).await?;
        Ok(())
    }

    fn contention(&self, agent_id: &AgentId) -> StoreError {
        StoreError::Contention { agent_id: agent_id.to_string(), attempts: self.settings.max_attempts }
    }
}

#[cfg(test)]
mod tests {
    use pulse_protocol::probe::Report;

    use super::RedisStore;

    /// Every report's future is moved into a box (`async_trait`), so its
    /// size is copied once per report. It was 15,280 bytes (in a release
    /// build) while it held the futures of the rare paths (reading before
    /// planning, opening a connection, waiting for replicas, the outbox)
    /// inline, and the copy was a tenth of ingest's instructions per
    /// report; those paths are boxed now.
    #[test]
    fn a_report_s_future_is_small() {
        fn future_size<F: Future>(_: impl Fn(&'static RedisStore, &'static Report) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(|store, report| store.op_apply_report(report, None));
        assert!(size <= 2560, "a report's future is {size} bytes");
    }
}
