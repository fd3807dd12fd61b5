//! The Pulse gateway: holds browser connections (WebSocket on `/ws`,
//! Server-Sent Events on `/sse`) and pushes them the events of the channels
//! they subscribe to.
//!
//! The parts, one file each:
//!
//! - `hub`: local subscribers per channel, the fan-out (each event
//!   serialised once, pushed without waiting to every subscriber's queue);
//! - `bridge`: owns the instance's one bus subscription, follows the hub's
//!   demand, feeds the hub;
//! - `queue`: one client's bounded outbound queue (slow → closed with 4000);
//! - `connection`: a client's identity and subscriptions, and resume
//!   (replay history, then live, no gap, no duplicate);
//! - `upgrade`: takes a WebSocket upgrade request and its socket from
//!   actix-http (below the router), checks it, and runs the session;
//! - `session`: the WebSocket session loop on the socket itself (protocol,
//!   heartbeat, limits, token expiry, drain); `frames`: the frame codec;
//! - [`sse`]: the SSE transport and its `Last-Event-ID` format;
//! - `auth`, `limits`, `presence`, [`snapshot`] (`refresh`),
//!   [`metrics`];
//! - `routes`: the HTTP side ([`configure`] mounts it in an actix app that
//!   [`serve`] serves); `startup`: [`Application`], the gateway as its own
//!   server;
//!   [`settings`]: [`Settings`] and their defaults.
//!
//! `proto-docs/asyncapi.yaml` and `proto-docs/close-codes.md` describe the
//! protocol and the close and error codes.

mod auth;
#[doc(hidden)]
pub mod bench_support;
mod bridge;
mod connection;
pub mod depth;
mod echo;
mod frames;
#[doc(hidden)]
pub mod fuzz_support;
mod gateway;
mod hub;
mod limits;
pub mod metrics;
mod presence;
mod queue;
mod routes;
mod server;
mod session;
pub mod settings;
pub mod snapshot;
pub mod sse;
mod startup;
mod upgrade;

pub use gateway::{Gateway, GatewayStats, StartupError};
pub use presence::MAX_LISTED as PRESENCE_MAX_LISTED;
pub use routes::{Rejected, configure, configure_static};
pub use server::serve;
pub use settings::Settings;
pub use snapshot::{NoState, SnapshotError, SnapshotSource, Snapshots, StoreSnapshots};
pub use startup::Application;
