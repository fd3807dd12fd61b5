//! The outbox of the partitioned layout: how the events of a change whose
//! script could not publish them (their channels live in other hash slots)
//! reach the bus, each exactly once and in order.
//!
//! 1. The change's script appends one entry to its bucket's outbox stream
//!    (`{agents:<b>}:outbox`): the agent id, then (channel, draft) pairs in
//!    publish order. It also records the entry as the agent's latest pending
//!    one (`{agents:<b>}:pending`) and answers with the agent's previous
//!    pending entry, if any.
//! 2. The process that made the change publishes the entry, one script
//!    per channel (`lua/outbox_publish.lua`), all channels at once. If the
//!    agent had an earlier entry still pending (another process is
//!    publishing it, or stopped before it could), that process first
//!    publishes every earlier pending entry of the agent, oldest first.
//! 3. Once the channels' replicas have the events (`redis.replicas_to_ack`,
//!    as for every publish of the bus), it removes the published entries
//!    from the outbox (`lua/outbox_ack.lua`).
//!
//! Entries left behind by a process that stopped between 1 and 3 are
//! published by the agent's next change (step 2), and by the heartbeat
//! checker's scan, which reads every bucket's outbox for entries older
//! than [`OUTBOX_GRACE`].
//!
//! Each channel keeps, per agent, the latest entry published on it (in its
//! own hash slot): a publisher skips an entry that is not newer. Since every
//! publisher goes through an agent's entries oldest first, an entry not
//! newer than the mark was published already: racing publishers (a live one
//! and a sweeping checker, two processes changing one agent) and retries
//! publish each event once, and an agent's events keep their order on every
//! channel.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use pulse_bus::{Bus, redis_lua};
use pulse_protocol::{Channel, EventDraft, Offset, Position};

use super::layout::Bucket;
use super::{RedisStore, parse_id};
use crate::StoreError;
use crate::plan::Publish;

/// How old an outbox entry must be before the checker's sweep publishes it:
/// the process that made the change publishes it within a few round trips,
/// so an older entry was left behind. Publishing one that is merely slow
/// is harmless (each event is published once), only wasted work.
pub(super) const OUTBOX_GRACE: Duration = Duration::from_secs(5);

/// Outbox entries read per round trip.
const PAGE: usize = 500;

/// How many of a channel's latest events are searched for an event that
/// another publisher published, when its position is no longer recorded.
const LOOKBACK: usize = 256;

/// One outbox entry: a change's events, in publish order.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: Offset,
    pub(super) agent: String,
    /// (channel, draft JSON) in publish order.
    pub(super) publishes: Vec<(Channel, String)>,
}

/// A stream entry as XRANGE returns it: id and flat field/value list.
pub(super) type RawEntry = (String, Vec<String>);

impl Entry {
    /// The entry a change's script appended, rebuilt from the change's own
    /// publishes (encoded as the script was given them).
    pub(super) fn of(id: Offset, agent: &str, publishes: &[Publish], drafts: &[String]) -> Self {
        let publishes = publishes.iter().zip(drafts).map(|(p, draft)| (p.channel.clone(), draft.clone())).collect();
        Self { id, agent: agent.to_owned(), publishes }
    }

    /// Parses an entry read from the outbox: `agent <id>`, then pairs
    /// (channel, draft), a draft `''` repeating the previous one.
    pub(super) fn parse((id, fields): RawEntry) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::corrupt("outbox entry", format!("{id}: {reason}"));
        let offset: Offset = id.parse().map_err(|e| corrupt(format!("{e}")))?;
        let mut pairs = fields.chunks_exact(2);
        let agent = match pairs.next() {
            Some([field, agent]) if field == "agent" => agent.clone(),
            _ => return Err(corrupt("no agent".into())),
        };
        let mut publishes: Vec<(Channel, String)> = Vec::new();
        for pair in pairs {
            let channel = Channel::parse(&pair[0]).map_err(|e| corrupt(format!("{e}")))?;
            let draft = if pair[1].is_empty() {
                publishes.last().map(|(_, draft)| draft.clone()).ok_or_else(|| corrupt("repeats nothing".into()))?
            } else {
                pair[1].clone()
            };
            publishes.push((channel, draft));
        }
        Ok(Self { id: offset, agent, publishes })
    }
}

/// Parses entries read from an outbox, dropping (and logging) unreadable
/// ones: one bad entry must not hold up the events behind it.
pub(super) fn parse_entries(raw: Vec<RawEntry>, bucket: &Bucket, unreadable: &mut Vec<(String, String)>) -> Vec<Entry> {
    raw.into_iter()
        .filter_map(|raw| {
            let (id, agent) = (raw.0.clone(), agent_of(&raw.1));
            Entry::parse(raw)
                .map_err(|error| {
                    tracing::error!(%error, outbox = %bucket.outbox, "dropping an unreadable outbox entry");
                    unreadable.push((id, agent));
                })
                .ok()
        })
        .collect()
}

fn agent_of(fields: &[String]) -> String {
    match fields {
        [field, agent, ..] if field == "agent" => agent.clone(),
        _ => String::new(),
    }
}

impl RedisStore {
    /// Key of a channel's outbox marks: in the channel's hash slot.
    fn marker_key(&self, channel: &Channel) -> String {
        self.bus_keys().channel_key(channel, "outbox")
    }

    /// Publishes a change's queued entry `own` of `bucket`, after the
    /// agent's earlier pending entries if `previous` says there are any,
    /// then removes them from the outbox. Returns the positions of `own`'s
    /// events, `None` where another publisher got there first and the
    /// position is no longer recorded.
    pub(super) async fn deliver(
        &self,
        bucket: &Bucket,
        own: Entry,
        previous: Option<Offset>,
    ) -> Result<Vec<Option<Position>>, StoreError> {
        let mut entries = match previous {
            Some(_) => {
                let agents = HashSet::from([own.agent.as_str()]);
                self.pending_of(bucket, &agents, own.id).await?
            }
            None => Vec::new(),
        };
        entries.push(own);
        let mut positions = self.publish_entries(&entries).await?;
        self.ack(bucket, entries.iter().map(|e| (e.id.to_string(), e.agent.clone())).collect()).await?;
        Ok(positions.pop().unwrap_or_default())
    }

    /// The pending entries of `agents` in `bucket` older than `before`,
    /// oldest first.
    pub(super) async fn pending_of(
        &self,
        bucket: &Bucket,
        agents: &HashSet<&str>,
        before: Offset,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let mut page = redis::cmd("XRANGE");
            page.arg(&bucket.outbox).arg(&start).arg(format!("({before}")).arg("COUNT").arg(PAGE);
            let raw: Vec<RawEntry> = self.query(page).await?;
            let full = raw.len() >= PAGE;
            if let Some((last, _)) = raw.last() {
                start = format!("({last}");
            }
            let entries = parse_entries(raw, bucket, &mut unreadable);
            found.extend(entries.into_iter().filter(|e| agents.contains(e.agent.as_str())));
            if !full {
                break;
            }
        }
        if !unreadable.is_empty() {
            self.ack(bucket, unreadable).await?;
        }
        Ok(found)
    }

    /// Publishes entries of one bucket, in outbox order per agent: one
    /// script per channel, all channels at once. Returns the positions of
    /// each entry's events, in its publish order.
    pub(super) async fn publish_entries(&self, entries: &[Entry]) -> Result<Vec<Vec<Option<Position>>>, StoreError> {
        // Per channel: (entry index, indexes of its publishes there).
        let mut by_channel: BTreeMap<&Channel, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
        for (e, entry) in entries.iter().enumerate() {
            for (p, (channel, _)) in entry.publishes.iter().enumerate() {
                let groups = by_channel.entry(channel).or_default();
                match groups.last_mut() {
                    Some((last, publishes)) if *last == e => publishes.push(p),
                    _ => groups.push((e, vec![p])),
                }
            }
        }
        let calls = by_channel.iter().map(|(channel, groups)| async move {
            let mut invocation = self.scripts.outbox_publish.prepare_invoke();
            let marker = self.marker_key(channel);
            self.channel_keys(&mut invocation, channel);
            invocation.key(&marker).arg(self.bus.history_len()).arg(redis_lua::epoch_candidate());
            for (e, publishes) in groups {
                let entry = &entries[*e];
                invocation.arg(&entry.agent).arg(entry.id.to_string()).arg(publishes.len());
                for p in publishes {
                    invocation.arg(&entry.publishes[*p].1);
                }
            }
            let mut conn = self.conn().await?;
            let positions: Vec<String> = self.call(invocation.invoke_async(&mut conn)).await?;
            // Before the entries leave the outbox: an event a failover
            // loses is then published again (its mark is lost with it).
            self.replicated(&mut conn, &marker).await?;
            Ok::<_, StoreError>((groups, positions))
        });
        let mut result: Vec<Vec<Option<Position>>> = entries.iter().map(|e| vec![None; e.publishes.len()]).collect();
        // Every channel is tried, even when one fails: events of the others
        // need not wait for the retry.
        let answers: Vec<_> = join_all(calls).await.into_iter().collect::<Result<_, _>>()?;
        for (groups, positions) in answers {
            let expected: usize = groups.iter().map(|(_, publishes)| publishes.len()).sum();
            if positions.len() != expected {
                return Err(StoreError::backend(format!(
                    "outbox publish returned {} positions for {expected} events",
                    positions.len()
                )));
            }
            let mut positions = positions.iter();
            for (e, publishes) in groups {
                for (p, position) in publishes.iter().zip(&mut positions) {
                    result[*e][*p] = if position.is_empty() { None } else { Some(parse_id(position)?) };
                }
            }
        }
        Ok(result)
    }

    /// Removes published entries (id, agent id) from `bucket`'s outbox.
    pub(super) async fn ack(&self, bucket: &Bucket, entries: Vec<(String, String)>) -> Result<(), StoreError> {
        let mut invocation = self.scripts.outbox_ack.prepare_invoke();
        invocation.key(&bucket.outbox).key(&bucket.pending);
        for (id, agent) in entries {
            invocation.arg(id).arg(agent);
        }
        let mut conn = self.conn().await?;
        let _: i64 = self.call(invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Where `draft` was published on `channel`, looked up among the
    /// channel's latest events: for an event another publisher published
    /// whose position is no longer recorded.
    pub(super) async fn find_published(&self, channel: &Channel, draft: &EventDraft) -> Option<Position> {
        match self.bus.latest(channel, LOOKBACK).await {
            Ok(events) => {
                events.into_iter().rev().find(|e| draft.clone().into_event(channel.clone(), e.id) == *e).map(|e| e.id)
            }
            Err(error) => {
                tracing::warn!(%error, %channel, "cannot look up where an event was published");
                None
            }
        }
    }
}
