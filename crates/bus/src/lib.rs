//! The Pulse event bus.
//!
//! One [`Bus`] interface, used by every service, with two implementations:
//!
//! - [`RedisBus`]: publishing appends to the channel's capped stream
//!   (`{prefix}hist:{channel}`) and publishes live (`{prefix}ch:{channel}`)
//!   in one Lua script, so the live copy and the history copy carry the same
//!   id. One pub/sub connection per process serves every [`Subscription`];
//!   when it drops, it reconnects with backoff and subscriptions fill what
//!   they missed from history.
//! - [`MemoryBus`]: the same semantics inside one process (a ring buffer of
//!   history per channel), for standalone mode.
//!
//! A [`Subscription`] is a dynamic set of channels delivered as one ordered
//! stream of [`BusMessage`]s. Whatever the cause of a lost live message (a
//! reconnection, a full queue), a subscription fills the gap from history
//! after the last offset it delivered, so every event arrives once and in
//! order per channel; where history no longer reaches back, it delivers a
//! [`BusMessage::Gap`] instead.

mod backoff;
mod error;
mod memory;
mod redis_bus;
pub mod redis_lua;
mod router;
mod subscription;

use std::sync::Arc;

use async_trait::async_trait;
use pulse_protocol::{Channel, Event, EventDraft, Offset};

pub use error::BusError;
pub use memory::{MemoryBus, MemoryBusConfig};
pub use redis_bus::{RedisBus, RedisBusConfig};
pub use subscription::Subscription;

/// Events of a channel after some offset, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub events: Vec<Event>,
    /// Events after the requested offset were trimmed from history and are
    /// gone: the caller cannot rebuild a complete sequence from here and
    /// should refetch state.
    pub truncated: bool,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// The next event of one of the subscribed channels. Shared, because the
    /// gateway hands the same event to many clients.
    Event(Arc<Event>),
    /// Events of `channel` after `after` could not be delivered and are no
    /// longer in history. Events that follow are complete again.
    Gap { channel: Channel, after: Offset },
}

/// The bus every service uses: publish with history, read history,
/// subscribe live.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends the event to the channel's history and publishes it live, in
    /// one atomic step. Returns the event with its assigned offset.
    async fn publish(&self, channel: &Channel, draft: EventDraft) -> Result<Event, BusError>;

    /// Up to `limit` events published after `after`, oldest first.
    async fn history(&self, channel: &Channel, after: Offset, limit: usize) -> Result<History, BusError>;

    /// The newest `limit` events of the channel, oldest first.
    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError>;

    /// The offset of the channel's newest event, [`Offset::ZERO`] if none.
    async fn head(&self, channel: &Channel) -> Result<Offset, BusError>;

    /// A new, empty subscription set.
    fn subscription(&self) -> Subscription;

    /// Whether the bus can serve requests now (for `/readyz`).
    async fn check(&self) -> Result<(), BusError>;
}

/// The largest page a subscription reads from history at once while filling
/// a gap.
pub const FILL_PAGE: usize = 1_000;
