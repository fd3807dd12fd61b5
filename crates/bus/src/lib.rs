//! The Pulse event bus.
//!
//! One [`Bus`] interface, used by every service, with two implementations:
//!
//! - [`RedisBus`]: publishing appends to the channel's capped stream
//!   (`{prefix}{ch:<channel>}:hist`) and publishes live on the sharded
//!   pub/sub channel `{prefix}{ch:<channel>}` in one Lua script, so the live
//!   copy and the history copy carry the same id. One pub/sub connection
//!   per process serves every [`Subscription`]; when it drops, it
//!   reconnects with backoff and subscriptions fill what they missed from
//!   history. The same code runs on one Redis server and on a Redis Cluster
//!   (every key of a channel shares its hash slot; see [`RedisConnection`]).
//! - [`MemoryBus`]: the same semantics inside one process (a ring buffer of
//!   history per channel), for standalone mode.
//!
//! Every channel history has an [`Epoch`] that changes whenever the history
//! is lost or replaced, and every event's id is a [`Position`] (epoch and
//! offset). Whether a reader that has everything up to a position can
//! continue without missing an event is decided in one place,
//! [`History::truncated`], for every reader: the gateway's resume, the HTTP
//! history read and a subscription's gap fill. Those that read page by page
//! (the resume and the gap fill) do it with one [`HistoryPages`].
//!
//! A [`Subscription`] is a dynamic set of channels delivered as one ordered
//! stream of [`BusMessage`]s; its [`SubscriptionHandle`] adds and removes
//! channels from other tasks without holding the stream up. Whatever the cause of a lost live message (a
//! reconnection, a full queue), a subscription fills the gap from history
//! after the last offset it delivered, so every event arrives once and in
//! order per channel; where history no longer reaches back, it delivers a
//! [`BusMessage::Gap`] instead.

mod backoff;
mod connection;
pub mod deadline;
mod error;
mod link;
mod memory;
mod pages;
mod redis_bus;
pub mod redis_lua;
mod router;
pub mod settings;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pulse_protocol::{Channel, Epoch, Event, EventDraft, Offset, Position};

pub use backoff::backoff;
pub use connection::RedisConnection;
pub use error::{BusError, error_chain, is_unavailable as redis_unavailable};
pub use link::LinkState;
pub use memory::{MemoryBus, MemoryBusConfig};
pub use pages::{HistoryPages, Page};
pub use redis_bus::{RedisBus, RedisBusConfig};
pub use settings::RedisSettings;
pub use subscription::{Subscription, SubscriptionHandle};

/// Events kept per channel when no setting says otherwise: how far back a
/// reconnecting client can resume. Every service that publishes trims the
/// shared history to its own `history_len`, so a deployment sets one value
/// for all of them.
pub const DEFAULT_HISTORY_LEN: usize = 1_000;

/// Events of a channel after some position, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The events after the requested position; when that position is of
    /// another epoch, the oldest events of the current history.
    pub events: Vec<Event>,
    /// The reader cannot continue from the requested position without
    /// missing events, and should refetch state: events after it were
    /// trimmed, the history was replaced since (another epoch, or one not
    /// known), the position was never issued (ahead of the head), or (on
    /// Redis) the history no longer holds it although it should: a failover
    /// lost the newest events.
    pub truncated: bool,
    /// The channel's head when read: the position of its newest event, or
    /// the start of its (current) history if it has none.
    pub head: Position,
}

/// Whether a reader that has every event up to `after` can continue in the
/// history of `epoch`, whose newest offset ever is `head` and whose newest
/// trimmed offset is `max_trimmed`, without missing an event.
///
/// Offset zero ("from the beginning") fits any epoch as long as nothing was
/// trimmed. Any other position must be of this epoch, never trimmed past,
/// and not ahead of the head (an offset the channel never issued: a host
/// whose clock is behind after a failover issues lower ones again).
pub(crate) fn continuous(after: Position, epoch: Epoch, head: Offset, max_trimmed: Offset) -> bool {
    if after.is_start() {
        return max_trimmed == Offset::ZERO;
    }
    !epoch.is_none() && after.epoch == epoch && after.offset <= head && after.offset >= max_trimmed
}

/// What an idempotent publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The event's position; for a duplicate, the position the first publish
    /// with the same key was given.
    pub id: Position,
    /// The key was used before (within its time to live): nothing was
    /// published this time.
    pub duplicate: bool,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// The next event of one of the subscribed channels. Shared, because the
    /// gateway hands the same event to many clients.
    Event(Arc<Event>),
    /// Events of `channel` after `after` could not be delivered and are no
    /// longer in history (trimmed, or the history was replaced by a new
    /// epoch). Events that follow are complete again.
    Gap { channel: Channel, after: Position },
}

/// The bus every service uses: publish with history, read history,
/// subscribe live.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends the event to the channel's history and publishes it live, in
    /// one atomic step. Returns the event with its assigned position.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when nothing was sent (retrying is safe);
    /// [`BusError::OutcomeUnknown`] when the request was sent but not
    /// answered in time: the event may have been published.
    async fn publish(&self, channel: &Channel, draft: EventDraft) -> Result<Event, BusError>;

    /// Like [`publish`](Self::publish), once per `key` within `ttl`: the key
    /// is checked and recorded in the same atomic step as the append, so a
    /// retry with the same key after any failure (even
    /// [`BusError::OutcomeUnknown`]) never publishes twice.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    async fn publish_once(
        &self,
        channel: &Channel,
        draft: EventDraft,
        key: &str,
        ttl: Duration,
    ) -> Result<Publication, BusError>;

    /// Up to `limit` events published after `after`, oldest first, and
    /// whether a reader at `after` can continue from them (see [`History`]).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the backing store cannot be reached.
    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError>;

    /// The newest `limit` events of the channel, oldest first.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the backing store cannot be reached.
    async fn latest(&self, channel: &Channel, limit: usize) -> Result<Vec<Event>, BusError>;

    /// The position of the channel's newest event; offset zero (in the
    /// current epoch, if there is one) when it has none.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the backing store cannot be reached.
    async fn head(&self, channel: &Channel) -> Result<Position, BusError>;

    /// A new, empty subscription set.
    fn subscription(&self) -> Subscription;

    /// Whether the bus can serve requests now (for `/readyz`); services that
    /// deliver live events also check [`link`](Self::link).
    ///
    /// # Errors
    /// Why it cannot.
    async fn check(&self) -> Result<(), BusError>;

    /// The state of the link that carries live events (always up in memory).
    fn link(&self) -> LinkState;
}

/// The largest page a subscription reads from history at once while filling
/// a gap.
pub const FILL_PAGE: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, ms: u64) -> Position {
        Position::new(Epoch::from_u64(epoch), Offset::new(ms, 0))
    }

    #[test]
    fn continuity_needs_the_same_epoch_an_issued_offset_and_nothing_trimmed_past_it() {
        let epoch = Epoch::from_u64(7);
        let head = Offset::new(50, 0);
        assert!(continuous(at(7, 20), epoch, head, Offset::ZERO));
        assert!(continuous(at(7, 50), epoch, head, Offset::ZERO), "at the head");
        assert!(continuous(at(7, 20), epoch, head, Offset::new(20, 0)), "the trimmed event itself was seen");
        assert!(!continuous(at(7, 19), epoch, head, Offset::new(20, 0)), "trimmed past");
        assert!(!continuous(at(7, 51), epoch, head, Offset::ZERO), "ahead of the head: never issued");
        assert!(!continuous(at(6, 20), epoch, head, Offset::ZERO), "another epoch");
        assert!(!continuous(Offset::new(20, 0).into(), epoch, head, Offset::ZERO), "unknown epoch");
        assert!(!continuous(at(7, 20), Epoch::NONE, Offset::ZERO, Offset::ZERO), "no history any more");
    }

    #[test]
    fn from_the_beginning_fits_any_epoch_unless_trimmed() {
        let epoch = Epoch::from_u64(7);
        assert!(continuous(Position::ZERO, epoch, Offset::new(50, 0), Offset::ZERO));
        assert!(continuous(at(3, 0), epoch, Offset::new(50, 0), Offset::ZERO));
        assert!(continuous(Position::ZERO, Epoch::NONE, Offset::ZERO, Offset::ZERO));
        assert!(!continuous(Position::ZERO, epoch, Offset::new(50, 0), Offset::new(10, 0)));
    }
}
