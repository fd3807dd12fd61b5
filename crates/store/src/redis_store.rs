//! The Redis store, and the keys it keeps.
//!
//! All keys start with the bus prefix (`pulse:` by default), so one Redis
//! can hold several Pulse installations side by side.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{prefix}agents` | hash | agent id → [`AgentState`] JSON, for every agent ever heard from |
//! | `{prefix}agents:seen` | sorted set | agent id → last-seen time (ms since the epoch), for **online** agents only: the heartbeat checker's index. An agent leaves it when it goes offline and comes back with its next report or heartbeat, so a scan for silent agents is a range over this set and never meets an agent already offline. An offline agent's last-seen time is in its state. |
//! | `{prefix}alerts:open` | hash | `{agent_id}/{check}` → open [`Alert`] JSON (agent ids never contain `/`) |
//! | `{prefix}alerts:recent` | list | resolved [`Alert`] JSON, newest first, capped at [`StoreSettings::recent_alerts`] |
//! | `{prefix}dedupe:{report_id}` | string with TTL | the agent id of a report applied less than [`StoreSettings::dedupe_ttl`] ago: a retry is a duplicate |
//! | `{prefix}idem:{key}` | string with TTL | an idempotency key of the publish API, claimed for the TTL its claimer gave |
//!
//! Events go through the bus keys (`{prefix}hist:{channel}`,
//! `{prefix}ch:{channel}`), written by the bus's own publish function from
//! inside this store's scripts.
//!
//! # How a change is made
//!
//! 1. Read what the change depends on (the agent's state, the open alerts of
//!    the report's checks) in one `MULTI`, unless this process's previous
//!    change of the agent left it known (see below).
//! 2. Plan the change with the shared rules, in Rust.
//! 3. Run one Lua script (`lua/apply.lua`, `lua/offline.lua`) that checks
//!    that everything read in step 1 is unchanged, then writes the new state
//!    and publishes the events. If something changed, nothing is written and
//!    the change is planned again from fresh reads.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_bus::RedisBus;
use pulse_bus::redis_lua::{self, Keys};
use pulse_protocol::probe::{AgentState, AgentStatusChange, Alert, Report};
use pulse_protocol::{AgentId, Channel, Event, Position, timestamp};
use redis::Script;
use redis::aio::MultiplexedConnection;
use serde::de::DeserializeOwned;

use crate::plan::{self, Publish};
use crate::{AgentCounts, AlertsView, HeartbeatOutcome, ReportOutcome, Store, StoreError, StoreSettings};

/// The [`Store`] on Redis, sharing the [`RedisBus`]'s connection pool and
/// key prefix. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    bus: RedisBus,
    settings: StoreSettings,
    scripts: Arc<Scripts>,
    keys: StoreKeys,
    lanes: Arc<Lanes>,
    connection: Arc<SharedConnection>,
}

/// One multiplexed connection shared by every operation of the store.
///
/// Concurrent commands are pipelined on it, where a pool of connections
/// would hold one connection per command in flight (and check each one with
/// a `PING` round trip when it is handed out). The connection is taken from
/// the bus's pool, so it has the bus's settings; when it fails (Redis
/// restarted, a command timed out) it is dropped and the next operation
/// takes a fresh one.
#[derive(Default)]
struct SharedConnection {
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        // The guarded value is only ever replaced whole: a panic elsewhere
        // cannot leave it half-written.
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn get(&self, pool: &deadpool_redis::Pool) -> Result<MultiplexedConnection, StoreError> {
        if let Some(connection) = self.current().clone() {
            return Ok(connection);
        }
        let connection = deadpool_redis::Connection::take(pool.get().await?);
        *self.current() = Some(connection.clone());
        Ok(connection)
    }

    fn forget(&self) {
        self.current().take();
    }
}

/// How many lanes the agents of one process are spread over.
const LANES: usize = 1024;

/// Serialises the changes of each agent within this process: an agent's id
/// hashes to one of [`LANES`] lanes, and one change at a time runs on a
/// lane (in arrival order: tokio's mutex is fair). Two agents may share a
/// lane; they then wait for each other, which costs some latency and never
/// correctness. Memory stays bounded however many agents there are.
///
/// Each lane also remembers what its last change left in Redis ([`Known`]),
/// so that the next change of the same agent can be planned without reading
/// first: the compare-and-set checks that guess like any read, and a wrong
/// guess (another process changed the agent) costs one attempt and a read.
struct Lanes {
    hasher: std::hash::RandomState,
    lanes: Box<[tokio::sync::Mutex<Option<Known>>]>,
}

/// The largest [`Known`] a lane keeps (bytes of JSON); bigger ones are
/// read each time. Bounds the memory of all lanes to `LANES` times this.
const KNOWN_MAX_BYTES: usize = 16 * 1024;

/// What one agent's last change on a lane left in Redis.
struct Known {
    agent_id: AgentId,
    /// The stored state JSON, `""` for none.
    state_json: String,
    /// The same, parsed (`None` also for unreadable JSON).
    state: Option<AgentState>,
    /// Values of this agent's `alerts:open` fields (`""` for none open).
    alerts: HashMap<String, String>,
}

impl Known {
    fn size(&self) -> usize {
        self.state_json.len() + self.alerts.iter().map(|(field, json)| field.len() + json.len()).sum::<usize>()
    }

    /// Keeps `known` on the lane unless it is too big to keep.
    fn keep(lane: &mut Option<Known>, known: Known) {
        *lane = (known.size() <= KNOWN_MAX_BYTES).then_some(known);
    }
}

impl Lanes {
    fn new() -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(None)).collect(),
        }
    }

    /// Waits for the agent's lane; the lane is free again when the guard
    /// drops.
    async fn enter(&self, agent_id: &AgentId) -> tokio::sync::MutexGuard<'_, Option<Known>> {
        use std::hash::BuildHasher;
        let lane = (self.hasher.hash_one(agent_id.as_str()) % self.lanes.len() as u64) as usize;
        self.lanes[lane].lock().await
    }
}

struct Scripts {
    apply: Script,
    silent: Script,
    offline: Script,
}

/// The store's fixed keys, built once.
#[derive(Clone)]
struct StoreKeys {
    agents: String,
    seen: String,
    alerts_open: String,
    alerts_recent: String,
}

/// Where a script's Lua source is prepended with the bus's publish function.
fn script(source: &str) -> Script {
    Script::new(&format!("{}\n{source}", redis_lua::PUBLISH_FUNCTION))
}

impl RedisStore {
    pub fn new(bus: RedisBus, settings: StoreSettings) -> Self {
        let keys = bus.keys();
        let keys = StoreKeys {
            agents: keys.key("agents"),
            seen: keys.key("agents:seen"),
            alerts_open: keys.key("alerts:open"),
            alerts_recent: keys.key("alerts:recent"),
        };
        let scripts = Scripts {
            apply: script(include_str!("lua/apply.lua")),
            silent: Script::new(include_str!("lua/silent.lua")),
            offline: script(include_str!("lua/offline.lua")),
        };
        Self {
            bus,
            settings,
            scripts: Arc::new(scripts),
            keys,
            lanes: Arc::new(Lanes::new()),
            connection: Arc::default(),
        }
    }

    fn bus_keys(&self) -> &Keys {
        self.bus.keys()
    }

    /// Adds the keys `pulse_publish` needs for `channel`: its history
    /// stream, live channel and epoch.
    fn channel_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, channel: &Channel) {
        let keys = self.bus_keys();
        invocation.key(keys.hist(channel)).key(keys.live(channel)).key(keys.epoch(channel));
    }

    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        self.connection.get(self.bus.pool()).await
    }

    /// Runs `apply.lua` for one planned change.
    async fn apply(&self, change: ApplyArgs<'_>) -> Result<Applied, StoreError> {
        let mut invocation = self.scripts.apply.prepare_invoke();
        let dedupe_key = match change.report_id {
            Some(report_id) => self.bus_keys().key(&format!("dedupe:{report_id}")),
            // Never read: a heartbeat has no dedupe (TTL 0).
            None => self.bus_keys().key("dedupe:"),
        };
        invocation
            .key(&self.keys.agents)
            .key(&self.keys.seen)
            .key(&self.keys.alerts_open)
            .key(&self.keys.alerts_recent)
            .key(dedupe_key);
        for publish in change.publishes {
            self.channel_keys(&mut invocation, &publish.channel);
        }
        let dedupe_ms = if change.report_id.is_some() { millis(self.settings.dedupe_ttl).max(1) } else { 0 };
        invocation
            .arg(change.state.agent_id.as_str())
            .arg(change.expected_state)
            .arg(change.state_json)
            .arg(change.state.last_seen.timestamp_millis())
            .arg(dedupe_ms)
            .arg(self.bus.history_len())
            .arg(self.settings.recent_alerts.max(1))
            .arg(redis_lua::epoch_candidate());
        invocation.arg(change.compared.len());
        for (field, expected) in change.compared {
            invocation.arg(field).arg(expected);
        }
        invocation.arg(change.opened.len());
        for alert in change.opened {
            invocation.arg(plan::alert_field(&alert.agent_id, &alert.check)).arg(to_json(alert)?);
        }
        invocation.arg(change.resolved.len());
        for alert in change.resolved {
            invocation.arg(plan::alert_field(&alert.agent_id, &alert.check)).arg(to_json(alert)?);
        }
        for publish in change.publishes {
            invocation.arg(redis_lua::encode_draft(&publish.draft));
        }

        let reply: Vec<String> = invocation.invoke_async(&mut self.conn().await?).await?;
        match reply.split_first() {
            Some((status, ids)) if status == "ok" => {
                if ids.len() != change.publishes.len() {
                    return Err(StoreError::Backend(format!(
                        "apply script returned {} event ids for {} events",
                        ids.len(),
                        change.publishes.len()
                    )));
                }
                let events = change
                    .publishes
                    .iter()
                    .zip(ids)
                    .map(|(publish, id)| Ok(publish.draft.clone().into_event(publish.channel.clone(), parse_id(id)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Applied::Done(events))
            }
            Some((status, _)) if status == "duplicate" => Ok(Applied::Duplicate),
            Some((status, _)) if status == "conflict" => Ok(Applied::Conflict),
            _ => Err(StoreError::Backend(format!("apply script returned {reply:?}"))),
        }
    }

    /// Fails an operation that takes longer than
    /// [`StoreSettings::request_timeout`] with [`StoreError::Unavailable`], so
    /// that a Redis that hangs is treated like one that is down. A script cut
    /// off this way has either run completely or not at all: a caller that
    /// retries a report gets the dedupe answer if it had run.
    async fn bounded<T>(&self, operation: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let result = tokio::time::timeout(self.settings.request_timeout, operation).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!("redis did not answer within {:?}", self.settings.request_timeout)))
        });
        if result.as_ref().is_err_and(StoreError::is_unavailable) {
            // The next operation starts on a fresh connection.
            self.connection.forget();
        }
        result
    }

    fn contention(&self, agent_id: &AgentId) -> StoreError {
        StoreError::Contention { agent_id: agent_id.to_string(), attempts: self.settings.max_attempts }
    }
}

/// Everything `apply.lua` needs for one change.
struct ApplyArgs<'a> {
    /// The report's id, for dedupe; `None` for a heartbeat.
    report_id: Option<&'a str>,
    /// The state JSON the plan was made from, `""` for an unknown agent.
    expected_state: &'a str,
    state: &'a AgentState,
    /// `state` as JSON.
    state_json: &'a str,
    /// Alert fields the plan read, with the values it read (`""` = none).
    compared: &'a [(String, String)],
    opened: &'a [Alert],
    resolved: &'a [Alert],
    publishes: &'a [Publish],
}

enum Applied {
    Done(Vec<Event>),
    Duplicate,
    Conflict,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding state: {e}")))
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

/// The operations, each bounded by [`RedisStore::bounded`] in the [`Store`]
/// implementation below.
impl RedisStore {
    async fn op_apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError> {
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
                Applied::Done(events) => {
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
            let (duplicate, state_json) = pipe.query_async(&mut conn).await?;
            (duplicate, state_json, Vec::new())
        } else {
            pipe.cmd("HMGET").arg(&self.keys.alerts_open).arg(fields).query_async(&mut conn).await?
        };
        if duplicate {
            return Ok(None);
        }
        let alerts = fields.iter().cloned().zip(alert_jsons.into_iter().map(Option::unwrap_or_default)).collect();
        Ok(Some(self.known(&report.agent_id, state_json, alerts)))
    }

    /// Reads an agent's state (for a heartbeat's plan).
    async fn read_state(&self, agent_id: &AgentId) -> Result<Known, StoreError> {
        let state_json: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.agents)
            .arg(agent_id.as_str())
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(self.known(agent_id, state_json, HashMap::new()))
    }

    fn known(&self, agent_id: &AgentId, state_json: Option<String>, alerts: HashMap<String, String>) -> Known {
        let state = replaceable("agent state", state_json.as_deref());
        Known { agent_id: agent_id.clone(), state_json: state_json.unwrap_or_default(), state, alerts }
    }

    async fn op_apply_heartbeat(
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
                Applied::Done(events) => {
                    let known = Known { state_json, state: Some(plan.state.clone()), ..known };
                    Known::keep(&mut lane, known);
                    return Ok(HeartbeatOutcome { state: plan.state, events });
                }
                Applied::Conflict | Applied::Duplicate => continue,
            }
        }
        Err(self.contention(agent_id))
    }

    async fn op_agents(&self) -> Result<Vec<AgentState>, StoreError> {
        let jsons: Vec<String> =
            redis::cmd("HVALS").arg(&self.keys.agents).query_async(&mut self.conn().await?).await?;
        let mut agents = readable::<AgentState>("agent state", &jsons);
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(agents)
    }

    async fn op_agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.keys.agents)
            .arg(agent_id.as_str())
            .query_async(&mut self.conn().await?)
            .await?;
        json.as_deref().map(|json| from_json("agent state", json)).transpose()
    }

    async fn op_alerts(&self) -> Result<AlertsView, StoreError> {
        let (open, recent): (Vec<String>, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("HVALS")
            .arg(&self.keys.alerts_open)
            .cmd("LRANGE")
            .arg(&self.keys.alerts_recent)
            .arg(0)
            .arg(self.settings.recent_alerts.max(1) - 1)
            .query_async(&mut self.conn().await?)
            .await?;
        let mut open = readable::<Alert>("open alert", &open);
        crate::memory::sort_newest_first(&mut open);
        let recent = readable("resolved alert", &recent);
        Ok(AlertsView { open, recent })
    }

    async fn op_mark_silent_offline(
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
            .scripts
            .silent
            .key(&self.keys.seen)
            .key(&self.keys.agents)
            .arg(deadline_ms)
            .arg(limit)
            .invoke_async(&mut conn)
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
        let ids: Vec<String> = invocation.invoke_async(&mut conn).await?;
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

    async fn op_claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.bus_keys().key(&format!("idem:{key}")))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(reply.is_some())
    }

    async fn op_release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        let _: u64 = redis::cmd("DEL")
            .arg(self.bus_keys().key(&format!("idem:{key}")))
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(())
    }

    async fn op_counts(&self) -> Result<AgentCounts, StoreError> {
        let (online, total): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("ZCARD")
            .arg(&self.keys.seen)
            .cmd("HLEN")
            .arg(&self.keys.agents)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(AgentCounts { online, offline: total.saturating_sub(online) })
    }

    async fn op_check(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn apply_report(&self, report: &Report, trace: Option<String>) -> Result<ReportOutcome, StoreError> {
        self.bounded(self.op_apply_report(report, trace)).await
    }

    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.bounded(self.op_apply_heartbeat(agent_id, ts, trace)).await
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        self.bounded(self.op_agents()).await
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        self.bounded(self.op_agent(agent_id)).await
    }

    async fn alerts(&self) -> Result<AlertsView, StoreError> {
        self.bounded(self.op_alerts()).await
    }

    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        self.bounded(self.op_mark_silent_offline(deadline, limit)).await
    }

    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.bounded(self.op_claim_idempotency_key(key, ttl)).await
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        self.bounded(self.op_release_idempotency_key(key)).await
    }

    async fn counts(&self) -> Result<AgentCounts, StoreError> {
        self.bounded(self.op_counts()).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.bounded(self.op_check()).await
    }
}
