#![allow(clippy::unwrap_used)]
//! Standalone Pulse, started for real on port 0 and driven over HTTP and
//! WebSocket. One test binary.

mod binary;
mod demo;
mod fanout;
mod helpers;
mod history_settings;
mod ops;
mod otel;
mod redis;
mod reports;
mod settings_reference;
