//! The scripts of the store, and the arguments of `apply.lua`: one
//! planned change, checked and applied with its events in one step.

use pulse_bus::redis_lua;
use pulse_protocol::probe::{AgentState, Alert};
use pulse_protocol::{Channel, Event, Position};
use redis::Script;

use super::{RedisStore, millis, parse_id, to_json};
use crate::StoreError;
use crate::plan::{self, Publish};

pub(super) struct Scripts {
    pub(super) apply: Script,
    pub(super) silent: Script,
    pub(super) offline: Script,
}

/// The store's fixed keys, built once.
#[derive(Clone)]
pub(super) struct StoreKeys {
    pub(super) agents: String,
    pub(super) seen: String,
    pub(super) alerts_open: String,
    pub(super) alerts_recent: String,
}

/// Where a script's Lua source is prepended with the bus's publish function.
pub(super) fn script(source: &str) -> Script {
    Script::new(&format!("{}\n{source}", redis_lua::PUBLISH_FUNCTION))
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            apply: script(include_str!("lua/apply.lua")),
            silent: Script::new(include_str!("lua/silent.lua")),
            offline: script(include_str!("lua/offline.lua")),
        }
    }
}

/// The events of `publishes`, published at `positions`.
pub(super) fn events(publishes: Vec<Publish>, positions: Vec<Position>) -> Vec<Event> {
    publishes.into_iter().zip(positions).map(|(publish, id)| publish.draft.into_event(publish.channel, id)).collect()
}

impl RedisStore {
    /// Adds the keys `pulse_publish` needs for `channel`: its history
    /// stream, live channel and epoch.
    pub(super) fn channel_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, channel: &Channel) {
        let keys = self.bus_keys();
        invocation.key(keys.hist(channel)).key(keys.live(channel)).key(keys.epoch(channel));
    }

    /// Runs `apply.lua` for one planned change.
    pub(super) async fn apply(&self, change: ApplyArgs<'_>) -> Result<Applied, StoreError> {
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
        // An event published on two channels (fleet and agent) is encoded
        // once.
        let mut encoded = String::new();
        for publish in change.publishes {
            if !publish.repeats_previous || encoded.is_empty() {
                encoded = redis_lua::encode_draft(&publish.draft);
            }
            invocation.arg(&encoded);
        }

        let mut conn = self.conn().await?;
        let reply: Vec<String> = self.call(invocation.invoke_async(&mut conn)).await?;
        match reply.split_first() {
            Some((status, ids)) if status == "ok" => {
                if ids.len() != change.publishes.len() {
                    return Err(StoreError::Backend(format!(
                        "apply script returned {} event ids for {} events",
                        ids.len(),
                        change.publishes.len()
                    )));
                }
                let positions = ids.iter().map(|id| parse_id(id)).collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Applied::Done(positions))
            }
            Some((status, _)) if status == "duplicate" => Ok(Applied::Duplicate),
            Some((status, _)) if status == "conflict" => Ok(Applied::Conflict),
            _ => Err(StoreError::Backend(format!("apply script returned {reply:?}"))),
        }
    }
}

/// Everything `apply.lua` needs for one change.
pub(super) struct ApplyArgs<'a> {
    /// The report's id, for dedupe; `None` for a heartbeat.
    pub(super) report_id: Option<&'a str>,
    /// The state JSON the plan was made from, `""` for an unknown agent.
    pub(super) expected_state: &'a str,
    pub(super) state: &'a AgentState,
    /// `state` as JSON.
    pub(super) state_json: &'a str,
    /// Alert fields the plan read, with the values it read (`""` = none).
    pub(super) compared: &'a [(String, String)],
    pub(super) opened: &'a [Alert],
    pub(super) resolved: &'a [Alert],
    pub(super) publishes: &'a [Publish],
}

pub(super) enum Applied {
    /// Applied; the positions of the events, in the order of the publishes.
    Done(Vec<Position>),
    Duplicate,
    Conflict,
}
