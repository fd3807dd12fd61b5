//! The Pulse heartbeat checker: agents that go silent are marked offline,
//! exactly once, however many replicas run.
//!
//! - [`Checker`] (in [`checker`]) scans every `scan_interval` for online
//!   agents not heard from for `timeout`, and takes them offline through
//!   [`Store::mark_silent_offline`](pulse_store::Store::mark_silent_offline),
//!   a compare-and-set that publishes `agent_status_changed` in the same
//!   atomic step (on a Redis Cluster: queues it with the change in the
//!   agent's bucket and publishes it right after, exactly once). It runs
//!   over any [`Store`](pulse_store::Store): Redis for the service, memory
//!   for standalone mode. On a Redis Cluster each scan reads every bucket
//!   of agents, and also publishes the events that any process left queued
//!   when it stopped between a change and its publish.
//! - [`Application`] (in [`app`]) is the `pulse-heartbeat-checker` service:
//!   settings, the checker against Redis, and `/healthz`, `/readyz` and
//!   `/metrics` on its HTTP port (8082 by default).
//!
//! Metrics: `pulse_agents{status="online"|"offline"}` (gauge, after each
//! scan), `pulse_agent_transitions_total{to="offline"}`,
//! `pulse_heartbeat_scan_duration_seconds` (histogram) and
//! `pulse_heartbeat_scan_failures_total`.

pub mod app;
pub mod checker;

pub use app::{Application, Settings};
pub use checker::{Checker, CheckerSettings, CheckerStatus, run};
