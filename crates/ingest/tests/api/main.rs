//! Integration tests: the real application on port 0, its own
//! `redis-server`, real HTTP. One binary for every test (see `helpers`).

mod auth;
mod bad_input;
mod cluster;
mod contention;
mod cors;
mod decisions;
mod heartbeats;
mod helpers;
mod openapi;
mod publish;
mod reads;
mod redis_outage;
mod reports;
