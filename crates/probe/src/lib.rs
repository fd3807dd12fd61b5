//! pulse-probe: a fleet of simulated Probe agents that post real reports to
//! Pulse through its HTTP API (`POST /api/v1/reports`, an agent API key as
//! `Authorization: Bearer`). The standalone binary runs one in-process for
//! its demo; the `pulse-probe` binary points one at any Pulse for load.
//!
//! - `agent`: [`SimAgent`], one agent's checks (`cpu`, `mem`, `load`,
//!   `disk:/`, `http:api`, `db:replication`) with drifting readings and
//!   occasional L3 failures that last a few reports and then recover, so
//!   Pulse raises an alert and later resolves it. Deterministic per seed.
//! - `fleet`: [`Fleet`] runs one task per agent on [`FleetConfig::interval`],
//!   spread evenly over the interval. A report that times out or gets a 5xx
//!   or 429 is retried with the same `report_id`, which Pulse accepts once.
//!   The last [`FleetConfig::silent_agents`] agents stop after
//!   [`FleetConfig::silent_after`], so the heartbeat checker's offline
//!   transition shows. With a [`FleetConfig::publisher_key`] it also posts a
//!   decision (`POST /api/v1/decisions`) for each L3 failure, as a deciding
//!   component would. [`FleetStats`] counts what happened.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pulse_probe::{Fleet, FleetConfig};
//! let fleet = Fleet::new(FleetConfig { base_url: "http://127.0.0.1:8080".into(), ..FleetConfig::default() })?;
//! let shutdown = pulse_runtime::Shutdown::new();
//! let summary = fleet.run(shutdown).await;
//! println!("{summary}");
//! # Ok(()) }
//! ```

mod agent;
mod fleet;

pub use agent::{L3_CHECKS, SimAgent, agent_name, decision_for};
pub use fleet::{Fleet, FleetConfig, FleetStats, FleetSummary, MAX_RETRIES, PostOutcome};
