//! Standalone Pulse (`pulse`): ingest, the heartbeat checker and the
//! gateway in one process, on one port, with no set-up. The zero-setup
//! default for one machine and for development; the same HTTP API,
//! WebSocket/SSE protocol and dashboard as the separate services.
//!
//! - [`settings`]: one settings file with the sections of every service
//!   (`[ingest]`, `[gateway]`, `[limits]`, `[checker]`, `[auth]`, …), and
//!   `[demo]`. Defaults: the in-memory bus and store, `127.0.0.1:8080`,
//!   anonymous browser access, a 30 s offline timeout.
//! - [`startup`]: [`Standalone`] binds first (port 0 works), then
//!   [`run_until`](Standalone::run_until) serves one actix-web app:
//!   `/healthz`, `/readyz`, `/metrics` (once, from `pulse-runtime`), the
//!   `/api/v1` API (`pulse-ingest`), `/ws` and `/sse`
//!   (`pulse-websocket-gateway`) and the dashboard at `/` ([`dashboard`]:
//!   embedded in the binary, or from `gateway.static_dir`). Beside it run
//!   the heartbeat checker (`pulse-heartbeat-checker`) on the same store and,
//!   with `[demo]` on, a [`pulse_probe::Fleet`] of simulated agents posting
//!   to this process's own HTTP address.
//!
//! `bus = "redis"` (or `--redis URL`) puts the same process on Redis, where
//! it can share state with other Pulse services; its Redis I/O then runs on
//! a thread of its own ([`redis_io`]), so that fan-out never delays it.

pub mod dashboard;
pub mod redis_io;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Standalone;
