//! The Pulse heartbeat checker: agents that go silent are marked offline,
//! exactly once, however many replicas run.
//!
//! - [`Checker`] (in [`checker`]) scans every `scan_interval` for online
//!   agents not heard from for `timeout`, and takes them offline through
//!   [`Store::mark_silent_offline`](pulse_store::Store::mark_silent_offline),
//!   a compare-and-set that publishes `agent_status_changed` in the same
//!   atomic step. It runs over any [`Store`](pulse_store::Store): Redis for
//!   the service, memory for standalone mode.
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
