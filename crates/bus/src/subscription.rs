//! A dynamic set of channels delivered as one ordered stream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use pulse_protocol::{Channel, Event, Offset, Position};
use tokio::sync::mpsc;

use crate::router::{Lag, Router};
use crate::{BusError, BusMessage, FILL_PAGE, History};

/// How many live events may wait in a subscription's queue before the
/// subscription is considered lagging and fills from history instead.
const QUEUE_CAPACITY: usize = 8_192;

/// What a subscription needs from its bus.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    async fn history(&self, channel: &Channel, after: Position, limit: usize) -> Result<History, BusError>;
    async fn head(&self, channel: &Channel) -> Result<Position, BusError>;
    /// Returns once live events of `channel` reach the router.
    async fn listen(&self, channel: &Channel) -> Result<(), BusError>;
    /// The router has no subscriber left for `channel`.
    fn release(&self, channel: &Channel);
    fn router(&self) -> &Arc<Router>;
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A dynamic set of channels, delivered as one stream of [`BusMessage`]s.
///
/// Per channel, every event published after the subscription started is
/// delivered exactly once and in offset order; when events were lost live
/// (a reconnection, a full queue) they are filled from history, and where
/// history no longer has them a [`BusMessage::Gap`] says so.
///
/// [`next`](Self::next) is cancel-safe: it can be used in `select!`.
pub struct Subscription {
    id: u64,
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Arc<Event>>,
    rx: mpsc::Receiver<Arc<Event>>,
    lag: Arc<Lag>,
    /// Last position delivered (or skipped as already known) per channel;
    /// the keys are the subscribed channels.
    last: HashMap<Channel, Position>,
    /// Channels to fill from history; kept here so that a cancelled fill is
    /// retried.
    to_fill: VecDeque<Channel>,
    /// Messages ready to be returned, in order.
    ready: VecDeque<BusMessage>,
    fill_failures: u32,
}

impl Subscription {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            tx,
            rx,
            lag: Arc::default(),
            last: HashMap::new(),
            to_fill: VecDeque::new(),
            ready: VecDeque::new(),
            fill_failures: 0,
        }
    }

    /// Subscribes to `channel` from now on. Returns the channel's head: the
    /// position of its newest event, after which delivery starts.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus cannot subscribe now.
    pub async fn subscribe(&mut self, channel: &Channel) -> Result<Position, BusError> {
        if let Some(last) = self.last.get(channel) {
            return Ok(*last);
        }
        self.start(channel).await?;
        let head = match self.backend.head(channel).await {
            Ok(head) => head,
            Err(err) => {
                self.stop(channel);
                return Err(err);
            }
        };
        self.last.insert(channel.clone(), head);
        Ok(head)
    }

    /// Subscribes to `channel`, first delivering the events after `after`
    /// from history (or a gap where history cannot continue from it).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus cannot subscribe now.
    pub async fn subscribe_from(&mut self, channel: &Channel, after: Position) -> Result<(), BusError> {
        if self.last.contains_key(channel) {
            self.unsubscribe(channel);
        }
        self.start(channel).await?;
        self.last.insert(channel.clone(), after);
        self.to_fill.push_back(channel.clone());
        Ok(())
    }

    /// Stops delivery of `channel`. Messages of it not yet returned are
    /// dropped.
    pub fn unsubscribe(&mut self, channel: &Channel) {
        if self.last.remove(channel).is_some() {
            self.stop(channel);
            self.ready.retain(|message| message_channel(message) != channel);
            self.to_fill.retain(|c| c != channel);
        }
    }

    /// The subscribed channels.
    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.last.keys()
    }

    pub fn is_subscribed(&self, channel: &Channel) -> bool {
        self.last.contains_key(channel)
    }

    /// The next message. Waits while there is none; returns `None` only if
    /// the bus has shut down.
    pub async fn next(&mut self) -> Option<BusMessage> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some(message);
            }
            for channel in self.lag.take() {
                if self.last.contains_key(&channel) && !self.to_fill.contains(&channel) {
                    self.to_fill.push_back(channel);
                }
            }
            if let Some(channel) = self.to_fill.front().cloned() {
                match self.fill(&channel).await {
                    Ok(()) => {
                        self.to_fill.pop_front();
                        self.fill_failures = 0;
                    }
                    Err(err) => {
                        // The bus is away; live delivery is stopped too, so
                        // waiting here holds nothing up. Retry with backoff.
                        self.fill_failures = self.fill_failures.saturating_add(1);
                        let delay = crate::backoff::delay(self.fill_failures);
                        tracing::debug!(channel = %channel, error = %err, ?delay, "filling from history failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                () = self.lag.notified() => {}
                event = self.rx.recv() => {
                    // `self` holds a sender, so the queue never closes.
                    let event = event?;
                    if let Some(message) = self.accept(event) {
                        return Some(message);
                    }
                }
            }
        }
    }

    /// The next message if one is ready now, without waiting: lets a
    /// consumer take what has piled up as one batch. A pending fill from
    /// history is left to [`next`](Self::next) (events it covers are skipped
    /// here as there).
    pub fn try_next(&mut self) -> Option<BusMessage> {
        if let Some(message) = self.ready.pop_front() {
            return Some(message);
        }
        loop {
            let event = self.rx.try_recv().ok()?;
            if let Some(message) = self.accept(event) {
                return Some(message);
            }
        }
    }

    /// Decides what a live event becomes: delivered, or skipped because it
    /// is already delivered, unsubscribed, or covered by a pending fill.
    fn accept(&mut self, event: Arc<Event>) -> Option<BusMessage> {
        // A lagging channel is about to be filled from history, which holds
        // this event too (it was appended before it was sent live).
        if self.lag.contains(&event.channel) || self.to_fill.contains(&event.channel) {
            return None;
        }
        let last = self.last.get_mut(&event.channel)?;
        if event.id.epoch != last.epoch && !last.epoch.is_none() {
            // The channel's history was replaced. Live events of the new
            // epoch may have gone by before this one (while the link was
            // quiet): take them all from its history, in order. (Where no
            // history existed when delivery started, every event of the
            // first one arrives live.)
            *last = Position::new(event.id.epoch, Offset::ZERO);
            self.to_fill.push_back(event.channel.clone());
            return None;
        }
        if !event.id.follows(last) {
            return None;
        }
        *last = event.id;
        Some(BusMessage::Event(event))
    }

    /// Reads history after the last delivered offset of `channel` into
    /// `ready`. Nothing is changed unless the whole fill succeeds, so a
    /// cancelled or failed fill can simply be retried.
    async fn fill(&mut self, channel: &Channel) -> Result<(), BusError> {
        let Some(&start) = self.last.get(channel) else { return Ok(()) };
        let mut after = start;
        let mut messages = Vec::new();
        loop {
            let page = self.backend.history(channel, after, FILL_PAGE).await?;
            if page.truncated {
                // Trimmed past `after`, replaced by another epoch, or `after`
                // is ahead of the head: what follows starts over from what
                // the history has.
                messages.push(BusMessage::Gap { channel: channel.clone(), after });
                if page.events.is_empty() {
                    after = page.head;
                }
            }
            let full = page.events.len() >= FILL_PAGE;
            for event in page.events {
                if event.id.follows(&after) {
                    after = event.id;
                    messages.push(BusMessage::Event(Arc::new(event)));
                }
            }
            if !full {
                break;
            }
        }
        self.last.insert(channel.clone(), after);
        self.ready.extend(messages);
        Ok(())
    }

    async fn start(&mut self, channel: &Channel) -> Result<(), BusError> {
        self.backend.router().add(channel, self.id, &self.tx, &self.lag);
        if let Err(err) = self.backend.listen(channel).await {
            self.stop(channel);
            return Err(err);
        }
        Ok(())
    }

    fn stop(&self, channel: &Channel) {
        if self.backend.router().remove(channel, self.id) {
            self.backend.release(channel);
        }
    }
}

fn message_channel(message: &BusMessage) -> &Channel {
    match message {
        BusMessage::Event(event) => &event.channel,
        BusMessage::Gap { channel, .. } => channel,
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for channel in self.last.keys() {
            self.stop(channel);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("channels", &self.last.len()).finish()
    }
}
