//! Where the store's keys live: one set of keys on a single Redis, or
//! agents spread over hash-tagged buckets on a Redis Cluster.

use pulse_bus::redis_lua::Keys;
use pulse_protocol::AgentId;

/// How many buckets [`Layout::Partitioned`] spreads agents over. Part of
/// the key layout: every process must use the same number, and changing it
/// moves agents to other keys. 64 buckets land on 64 hash slots, about
/// evenly over the masters of a cluster of up to a dozen, while a read of
/// the whole fleet stays 64 commands.
pub const BUCKETS: usize = 64;

/// How [`RedisStore`](super::RedisStore) lays out its keys, and how a
/// change's events reach the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One set of keys (`pulse:agents`, `pulse:agents:seen`, …). Each change
    /// publishes its events inside the script that makes it. Every key must
    /// be on one node: a single Redis (or a primary with replicas).
    Single,
    /// Agents spread over [`BUCKETS`] buckets, each bucket's keys sharing a
    /// hash tag (`pulse:{agents:7}:state`, …), so that each change touches
    /// one hash slot. A change's events are appended to its bucket's outbox
    /// in the same script, then published (see the `outbox` module). What a
    /// Redis Cluster needs; works on a single Redis as well.
    Partitioned,
}

impl Layout {
    /// The layout `bus`'s Redis needs: [`Layout::Single`] on a single
    /// Redis, [`Layout::Partitioned`] on a cluster.
    pub fn for_bus(bus: &pulse_bus::RedisBus) -> Self {
        if bus.is_cluster() { Self::Partitioned } else { Self::Single }
    }
}

/// The keys of one bucket.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    /// Hash: agent id → state JSON.
    pub(super) state: String,
    /// Sorted set: online agent id → last seen, ms.
    pub(super) seen: String,
    /// Hash: `{agent_id}/{check}` → open alert JSON.
    pub(super) alerts: String,
    /// List: resolved alert JSON, newest first.
    pub(super) recent: String,
    /// `dedupe:{report_id}` keys start with this.
    dedupe_prefix: String,
    /// Stream: event drafts of applied changes, not yet published
    /// (partitioned layout only).
    pub(super) outbox: String,
    /// Hash: agent id → id of its latest outbox entry not yet published
    /// (partitioned layout only).
    pub(super) pending: String,
}

impl Bucket {
    /// The dedupe key of a report; `None` (a heartbeat) gives a key that is
    /// never read.
    pub(super) fn dedupe(&self, report_id: Option<&str>) -> String {
        format!("{}{}", self.dedupe_prefix, report_id.unwrap_or(""))
    }
}

/// Every bucket of a layout, with its key names built once.
pub(super) struct Buckets {
    layout: Layout,
    all: Vec<Bucket>,
}

impl Buckets {
    pub(super) fn new(layout: Layout, keys: &Keys) -> Self {
        let all = match layout {
            Layout::Single => vec![Bucket {
                state: keys.key("agents"),
                seen: keys.key("agents:seen"),
                alerts: keys.key("alerts:open"),
                recent: keys.key("alerts:recent"),
                dedupe_prefix: keys.key("dedupe:"),
                outbox: keys.key("agents:outbox"),
                pending: keys.key("agents:pending"),
            }],
            Layout::Partitioned => (0..BUCKETS)
                .map(|index| {
                    let tagged = |suffix: &str| keys.key(&format!("{{agents:{index}}}:{suffix}"));
                    Bucket {
                        state: tagged("state"),
                        seen: tagged("seen"),
                        alerts: tagged("alerts"),
                        recent: tagged("recent"),
                        dedupe_prefix: tagged("dedupe:"),
                        outbox: tagged("outbox"),
                        pending: tagged("pending"),
                    }
                })
                .collect(),
        };
        Self { layout, all }
    }

    pub(super) fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether changes queue their events in an outbox rather than
    /// publishing them in their own script.
    pub(super) fn outbox(&self) -> bool {
        self.layout == Layout::Partitioned
    }

    pub(super) fn all(&self) -> &[Bucket] {
        &self.all
    }

    /// The bucket of an agent: Redis Cluster's own key hash (CRC16, stable
    /// across processes and versions, unlike std's `RandomState`) of its id.
    pub(super) fn of(&self, agent_id: &AgentId) -> &Bucket {
        let hash = crc16::State::<crc16::XMODEM>::calculate(agent_id.as_str().as_bytes());
        &self.all[usize::from(hash) % self.all.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_keeps_the_keys_of_one_redis() {
        let buckets = Buckets::new(Layout::Single, &Keys::new("pulse:"));
        let bucket = buckets.of(&AgentId::parse("web-1").expect("id"));
        assert_eq!((bucket.state.as_str(), bucket.seen.as_str()), ("pulse:agents", "pulse:agents:seen"));
        assert_eq!(bucket.dedupe(Some("r-1")), "pulse:dedupe:r-1");
    }

    #[test]
    fn partitioned_buckets_are_stable_and_share_a_tag() {
        let buckets = Buckets::new(Layout::Partitioned, &Keys::new("pulse:"));
        assert_eq!(buckets.all().len(), BUCKETS);
        // A different bucket here moves agents to other keys: every process
        // of an installation must agree.
        let bucket = buckets.of(&AgentId::parse("web-1").expect("id"));
        assert_eq!(bucket.state, "pulse:{agents:6}:state");
        assert_eq!(bucket.dedupe(Some("r-1")), "pulse:{agents:6}:dedupe:r-1");
        // Agents spread over every bucket.
        let used: std::collections::HashSet<&str> =
            (0..1000).map(|n| buckets.of(&AgentId::parse(&format!("agent-{n}")).expect("id")).state.as_str()).collect();
        assert_eq!(used.len(), BUCKETS);
    }
}
