//! pulse-ingest: the HTTP API where every event enters Pulse, and where
//! dashboards read the current state for their first paint.
//!
//! - [`routes`]: the `/api/v1` routes and [`configure`], which mounts them on
//!   any actix-web app (the standalone binary mounts ingest, gateway and
//!   checker on one port).
//! - [`auth`]: API keys with roles and channel limits for writers; browser
//!   tokens (shared with the gateway through `pulse-auth`) for readers.
//! - [`extract`]: the actix extractors that apply [`auth`] to a request,
//!   the trace to continue, and JSON bodies parsed once into their type.
//! - [`error`]: the refusals and their status codes, in one JSON error
//!   body ([`body`]), naming the field.
//! - [`observe`]: request spans that continue the caller's trace, metrics.
//! - [`settings`], [`state`], [`startup`]: configuration, shared state, and
//!   the [`Application`] that binds and runs the server.
//!
//! Report semantics (dedupe, agent state, alerts) live in `pulse-store`;
//! ingest validates, authorises, maps to HTTP and calls the store or bus.

pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
#[doc(hidden)]
pub mod fuzz_support;
pub mod observe;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;

pub use routes::{API_PREFIX, ROUTES, configure};
pub use settings::Settings;
pub use startup::{Application, OPS_ROUTES, connect};
pub use state::IngestState;
