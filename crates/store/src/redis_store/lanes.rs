//! The lanes that make the changes of one agent take turns within a
//! process, and what each lane remembers of its last change.

use std::collections::HashMap;

use pulse_protocol::AgentId;
use pulse_protocol::probe::AgentState;

/// How many lanes the agents of one process are spread over. Two agents
/// on one lane evict each other's [`Known`] and read before every change:
/// with 1,024 lanes that was 8–14 % of the reports of 100 agents.
const LANES: usize = 4096;

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
pub(super) struct Lanes {
    hasher: std::hash::RandomState,
    lanes: Box<[tokio::sync::Mutex<Option<Known>>]>,
}

/// The largest [`Known`] a lane keeps (bytes of JSON); bigger ones are
/// read each time. Bounds the memory of all lanes to `LANES` times this.
/// (4,096 lanes of at most 4 KiB: 16 MiB.)
const KNOWN_MAX_BYTES: usize = 4 * 1024;

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
        self.state_json.len() + self.alerts.iter().map(|(field, json)| field.len() + json.len()).sum::<usize>()
    }

    /// Keeps `known` on the lane unless it is too big to keep.
    pub(super) fn keep(lane: &mut Option<Known>, known: Known) {
        *lane = (known.size() <= KNOWN_MAX_BYTES).then_some(known);
    }
}

impl Lanes {
    pub(super) fn new() -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            lanes: (0..LANES).map(|_| tokio::sync::Mutex::new(None)).collect(),
        }
    }

    /// Waits for the agent's lane; the lane is free again when the guard
    /// drops.
    pub(super) async fn enter(&self, agent_id: &AgentId) -> tokio::sync::MutexGuard<'_, Option<Known>> {
        use std::hash::BuildHasher;
        let lane = (self.hasher.hash_one(agent_id.as_str()) % self.lanes.len() as u64) as usize;
        self.lanes[lane].lock().await
    }
}
