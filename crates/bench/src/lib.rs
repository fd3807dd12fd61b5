//! Pulse benchmark: a load generator of real WebSocket clients that measures
//! delivery, loss, duplicates, latency and the server's CPU and memory, and
//! a minimal reference broadcaster to compare Pulse with the floor of the
//! machine it runs on.
//!
//! - [`accounting`]: loss and duplicates by sequence number;
//! - [`client`]: one benchmark client;
//! - [`publisher`]: publishing on the bus or through ingest;
//! - [`run`]: a whole run and its [`RunReport`];
//! - [`report`]: the human table;
//! - [`procstat`]: CPU and RSS from `/proc`;
//! - [`ingest`]: how many probe reports one ingest takes;
//! - [`reference`]: the minimal broadcaster.

pub mod accounting;
pub mod bus;
pub mod client;
pub mod ingest;
pub mod procstat;
pub mod publisher;
pub mod reference;
pub mod report;
pub mod run;

pub use publisher::Publisher;
pub use run::{Layout, RunConfig, RunReport, run};
