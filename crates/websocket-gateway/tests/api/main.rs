//! Integration tests: real redis-server, gateways on port 0, real clients.
//! All in one binary (one link, shared helpers).

mod auth;
mod cluster;
mod delivery;
mod drain;
mod helpers;
mod limits;
mod presence;
mod protocol;
mod proxies;
mod resume;
mod slow;
mod sse;
mod state;
mod truth;
