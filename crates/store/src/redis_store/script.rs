//! The scripts of the store, and the arguments of `apply.lua`: one
//! planned change, checked and applied with its events in one step.

use pulse_bus::redis_lua;
use pulse_protocol::probe::{AgentState, Alert};
use pulse_protocol::{Channel, Event, Offset, Position};
use redis::Script;

use super::layout::Bucket;
use super::outbox::Entry;
use super::{RedisStore, millis, parse_id, to_json};
use crate::plan::{self, Publish};
use crate::{EventsDelayed, StoreError};

pub(super) struct Scripts {
    pub(super) apply: Script,
    pub(super) silent: Script,
    pub(super) offline: Script,
    pub(super) outbox_publish: Script,
    pub(super) outbox_ack: Script,
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
            outbox_publish: script(include_str!("lua/outbox_publish.lua")),
            outbox_ack: Script::new(include_str!("lua/outbox_ack.lua")),
        }
    }
}

/// The `mode` argument of the change scripts.
pub(super) fn mode(outbox: bool) -> &'static str {
    if outbox { "outbox" } else { "publish" }
}

/// The drafts of `publishes` as the scripts take them, each encoded once:
/// `''` for a draft that is the previous one's (the same event on its agent
/// channel).
pub(super) fn encode_drafts(publishes: &[Publish]) -> Vec<String> {
    let mut encoded = Vec::with_capacity(publishes.len());
    for (n, publish) in publishes.iter().enumerate() {
        if publish.repeats_previous && n > 0 {
            encoded.push(String::new());
        } else {
            encoded.push(redis_lua::encode_draft(&publish.draft));
        }
    }
    encoded
}

/// `encode_drafts` with every repeat filled in.
fn resolve_repeats(encoded: &[String]) -> Vec<String> {
    let mut previous = String::new();
    encoded
        .iter()
        .map(|draft| {
            if !draft.is_empty() {
                previous.clone_from(draft);
            }
            previous.clone()
        })
        .collect()
}

/// Parses an outbox entry id as a script returns it (`''` = none).
pub(super) fn parse_entry_id(id: &str) -> Result<Option<Offset>, StoreError> {
    if id.is_empty() {
        return Ok(None);
    }
    id.parse().map(Some).map_err(|e| StoreError::corrupt("outbox entry id returned by a script", e))
}

impl RedisStore {
    /// Adds the keys `pulse_publish` needs for `channel`: its history
    /// stream, live channel and epoch.
    pub(super) fn channel_keys(&self, invocation: &mut redis::ScriptInvocation<'_>, channel: &Channel) {
        let keys = self.bus_keys();
        invocation.key(keys.hist(channel)).key(keys.live(channel)).key(keys.epoch(channel));
    }

    /// Runs `apply.lua` for one planned change.
    pub(super) async fn apply(&self, bucket: &Bucket, change: ApplyArgs<'_>) -> Result<Applied, StoreError> {
        let outbox = self.buckets.outbox();
        let mut invocation = self.scripts.apply.prepare_invoke();
        invocation
            .key(&bucket.state)
            .key(&bucket.seen)
            .key(&bucket.alerts)
            .key(&bucket.recent)
            .key(bucket.dedupe(change.report_id))
            .key(&bucket.outbox)
            .key(&bucket.pending);
        if !outbox {
            for publish in change.publishes {
                self.channel_keys(&mut invocation, &publish.channel);
            }
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
            .arg(redis_lua::epoch_candidate())
            .arg(mode(outbox));
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
        let drafts = encode_drafts(change.publishes);
        for (publish, draft) in change.publishes.iter().zip(&drafts) {
            invocation.arg(publish.channel.as_str()).arg(draft);
        }

        let mut conn = self.conn().await?;
        let reply: Vec<String> = self.call(invocation.invoke_async(&mut conn)).await?;
        if reply.first().is_some_and(|status| status == "ok") {
            self.replicated(&mut conn, &bucket.state).await?;
        }
        match reply.split_first() {
            Some((status, [id, previous])) if status == "ok" && outbox => {
                let Some(id) = parse_entry_id(id)? else { return Ok(Applied::Published(Vec::new())) };
                let entry = Entry::of(id, change.state.agent_id.as_str(), change.publishes, &resolve_repeats(&drafts));
                Ok(Applied::Queued { entry, previous: parse_entry_id(previous)? })
            }
            Some((status, ids)) if status == "ok" && !outbox => {
                if ids.len() != change.publishes.len() {
                    return Err(StoreError::backend(format!(
                        "apply script returned {} event ids for {} events",
                        ids.len(),
                        change.publishes.len()
                    )));
                }
                let positions = ids.iter().map(|id| parse_id(id)).collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Applied::Published(positions))
            }
            Some((status, _)) if status == "duplicate" => Ok(Applied::Duplicate),
            Some((status, _)) if status == "conflict" => Ok(Applied::Conflict),
            _ => Err(StoreError::backend(format!("apply script returned {reply:?}"))),
        }
    }

    /// The events of an applied change: published by its script already, or
    /// published now from the outbox. A change whose events could not be
    /// published now is still made, and its events still go out (with the
    /// agent's next change, or the checker's sweep): the error says so.
    pub(super) async fn events(
        &self,
        bucket: &Bucket,
        publishes: Vec<Publish>,
        applied: Applied,
    ) -> Result<Vec<Event>, StoreError> {
        let positions = match applied {
            Applied::Published(positions) => positions.into_iter().map(Some).collect(),
            // Boxed, like the lookup below: only the outbox layout waits
            // here, and the futures would make every change's future larger.
            Applied::Queued { entry, previous } => Box::pin(self.deliver(bucket, entry, previous))
                .await
                .map_err(|err| StoreError::Unavailable(Box::new(EventsDelayed { made: 1, source: err })))?,
            Applied::Duplicate | Applied::Conflict => Vec::new(),
        };
        let mut events = Vec::with_capacity(publishes.len());
        for (publish, position) in publishes.into_iter().zip(positions) {
            let position = match position {
                Some(position) => Some(position),
                None => Box::pin(self.find_published(&publish.channel, &publish.draft)).await,
            };
            match position {
                Some(id) => events.push(publish.draft.into_event(publish.channel, id)),
                None => tracing::warn!(
                    channel = %publish.channel,
                    event_type = %publish.draft.event_type,
                    "an event was published by another process and its position is unknown"
                ),
            }
        }
        Ok(events)
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
    /// Applied and published; the positions of the events, in the order of
    /// the publishes.
    Published(Vec<Position>),
    /// Applied; the events wait in the outbox as `entry`. `previous` is the
    /// agent's previous entry, if it was still pending.
    Queued {
        entry: Entry,
        previous: Option<Offset>,
    },
    Duplicate,
    Conflict,
}
