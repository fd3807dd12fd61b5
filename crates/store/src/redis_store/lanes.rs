//! The lanes that make the changes of one agent take turns within a
//! process, and what each lane remembers of its last change.

use std::collections::HashMap;

use pulse_protocol::AgentId;
use pulse_protocol::probe::AgentState;

/// How many lanes the agents of one process are spread over. Agents on
/// one lane take turns; each lane remembers several of them ([`Remembered`]).
const LANES: usize = 4096;

/// Serialises the changes of each agent within this process: an agent's id
/// hashes to one of [`LANES`] lanes, and one change at a time runs on a
/// lane (in arrival order: tokio's mutex is fair). Two agents may share a
/// lane; they then wait for each other, which costs some latency and never
/// correctness. Memory stays bounded however many agents there are.
///
/// Each lane also remembers what the last changes of its agents left in
/// Redis ([`Remembered`]), so that the next change of one of them can be
/// planned without reading first: the compare-and-set checks that guess
/// like any read, and a wrong guess (another process changed the agent)
/// costs one attempt and a read.
pub(super) struct Lanes {
    hasher: std::hash::RandomState,
    lanes: Box<[tokio::sync::Mutex<Remembered>]>,
}

/// Bytes of JSON a lane remembers, for all its agents together; an agent
/// whose [`Known`] alone is bigger is read each time. Bounds the memory of
/// all lanes to `LANES` times this (4,096 lanes of 4 KiB: 16 MiB): about
/// 13 agents of one check per lane, 50,000 per process. With one agent
/// per lane, 10,000 agents (2.4 per lane) read before 9 in 10 reports.
const LANE_MAX_BYTES: usize = 4 * 1024;

/// What a lane remembers: the [`Known`] of its agents, least recently
/// changed first, at most [`LANE_MAX_BYTES`] of JSON together.
#[derive(Default)]
pub(super) struct Remembered(Vec<Known>);

impl Remembered {
    /// Takes what is known of `agent_id`, if anything: the caller plans
    /// from it and [`keep`](Self::keep)s what its change leaves.
    pub(super) fn take(&mut self, agent_id: &AgentId) -> Option<Known> {
        let at = self.0.iter().position(|known| known.agent_id == *agent_id)?;
        Some(self.0.remove(at))
    }

    /// Remembers `known` as the most recent, forgetting the least recent
    /// agents of the lane until all fit in [`LANE_MAX_BYTES`].
    pub(super) fn keep(&mut self, known: Known) {
        if known.size() > LANE_MAX_BYTES {
            return;
        }
        self.0.retain(|other| other.agent_id != known.agent_id);
        self.0.push(known);
        let mut total: usize = self.0.iter().map(Known::size).sum();
        while total > LANE_MAX_BYTES {
            total -= self.0.remove(0).size();
        }
    }
}

/// What one agent's last change on a lane left in Redis.
pub(super) struct Known {
    pub(super) agent_id: AgentId,
    /// The stored state JSON, `""` for none.
    pub(super) state_json: String,
    /// The same, parsed (`None` also for unreadable JSON).
    pub(super) state: Option<AgentState>,
    /// Values of this agent's `alerts:open` fields (`""` for none open).
    pub(super) alerts: HashMap<String, String>,
}

impl Known {
    fn size(&self) -> usize {
        self.agent_id.as_str().len()
            + self.state_json.len()
            + self.alerts.iter().map(|(field, json)| field.len() + json.len()).sum::<usize>()
    }
}

impl Lanes {
    pub(super) fn new() -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(Remembered::default())).collect(),
        }
    }

    /// Waits for the agent's lane; the lane is free again when the guard
    /// drops.
    pub(super) async fn enter(&self, agent_id: &AgentId) -> tokio::sync::MutexGuard<'_, Remembered> {
        use std::hash::BuildHasher;
        let lane = (self.hasher.hash_one(agent_id.as_str()) % self.lanes.len() as u64) as usize;
        self.lanes[lane].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(agent: &str, state_bytes: usize) -> Known {
        Known {
            agent_id: AgentId::parse(agent).unwrap(),
            state_json: "x".repeat(state_bytes),
            state: None,
            alerts: HashMap::new(),
        }
    }

    #[test]
    fn a_lane_remembers_several_agents_within_its_budget() {
        let mut lane = Remembered::default();
        lane.keep(known("a", 1000));
        lane.keep(known("b", 1000));
        lane.keep(known("c", 1000));
        // Taken once: the caller keeps what its change leaves.
        assert_eq!(lane.take(&AgentId::parse("b").unwrap()).map(|k| k.state_json.len()), Some(1000));
        assert!(lane.take(&AgentId::parse("b").unwrap()).is_none());
        lane.keep(known("b", 1500));
        // a (1,001) + c (1,001) + b (1,501) + d (1,501) > 4 KiB: a, the
        // least recently changed, is forgotten.
        lane.keep(known("d", 1500));
        assert!(lane.take(&AgentId::parse("a").unwrap()).is_none());
        for agent in ["c", "b", "d"] {
            assert!(lane.take(&AgentId::parse(agent).unwrap()).is_some(), "{agent} forgotten");
        }
    }

    #[test]
    fn an_agent_too_big_for_a_lane_is_not_remembered_and_evicts_nobody() {
        let mut lane = Remembered::default();
        lane.keep(known("a", 100));
        lane.keep(known("big", LANE_MAX_BYTES));
        assert!(lane.take(&AgentId::parse("big").unwrap()).is_none());
        assert!(lane.take(&AgentId::parse("a").unwrap()).is_some());
    }
}
