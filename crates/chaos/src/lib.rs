//! Pulse's fault suite: the real services under a steady publish load with
//! resuming clients, one production fault at a time, and an exact account
//! of every acknowledged event. See `docs/reliability.md`.
//!
//! - [`stack`]: Redis, ingest, two gateways (behind [`pulse_testkit::TcpProxy`]s),
//!   two heartbeat-checkers, or one standalone `pulse`, as child processes.
//! - [`publisher`]: one careful publisher per channel (idempotency key,
//!   bounded retries with the same key).
//! - [`client`]: resuming WebSocket clients recording everything raw.
//! - [`accounting`]: the verdict — delivered exactly once and in order, or
//!   told; never a silent loss; never published twice.
//! - [`scenario`]: the faults and the run around each.

pub mod accounting;
pub mod client;
pub mod publisher;
pub mod scenario;
pub mod stack;

pub use scenario::{Fault, RunOptions, ScenarioReport};
