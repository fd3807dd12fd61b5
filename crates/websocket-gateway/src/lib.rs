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
//! - `queue`: one client's outbound queue, bounded in frames and bytes
//!   (slow → closed with 4000);
//! - `client`: a client's identity and subscriptions, and resume (replay
//!   history, then live, no gap, no duplicate);
//! - `core`: the client core, one loop per connection applying every
//!   policy (protocol messages, auth and token expiry, limits, heartbeat,
//!   slow clients, drain) over a `Transport`;
//! - the transports: `session` (WebSocket, on the socket itself, on the
//!   threads of `sessions`; `frames`: the frame codec) and [`sse`] (Server-Sent Events and its
//!   `Last-Event-ID` format);
//! - `admission`: the checks every new connection passes ([`Rejected`]);
//!   `upgrade`: takes a WebSocket upgrade request and its socket from
//!   actix-http (below the router);
//! - `auth`, `limits`, `presence`, [`snapshot`] (`refresh`),
//!   [`metrics`];
//! - `routes`: the HTTP side ([`configure`] mounts it in an actix app that
//!   [`serve`] serves); `startup`: [`Application`], the gateway as its own
//!   server;
//!   [`settings`]: [`Settings`] and their defaults.
//!
//! `proto-docs/asyncapi.yaml` and `proto-docs/close-codes.md` describe the
//! protocol and the close and error codes.

mod admission;
mod auth;
#[doc(hidden)]
pub mod bench_support;
mod bridge;
mod client;
mod core;
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
mod sessions;
pub mod settings;
pub mod snapshot;
pub mod sse;
mod startup;
mod upgrade;

pub use admission::Rejected;
pub use gateway::{Gateway, GatewayStats, StartupError};
pub use presence::MAX_LISTED as PRESENCE_MAX_LISTED;
pub use routes::{configure, configure_static};
pub use server::serve;
pub use settings::Settings;
pub use snapshot::{NoState, SnapshotError, SnapshotSource, Snapshots, StoreSnapshots};
pub use startup::Application;
