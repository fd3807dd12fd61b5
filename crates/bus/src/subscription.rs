//! A dynamic set of channels delivered as one ordered stream.
//!
//! The stream ([`Subscription`]) and the channel set
//! ([`SubscriptionHandle`]) are separate, so that subscribing a channel
//! (a round trip to the bus, seconds when it is slow) never holds up the
//! task that takes events off the stream: a consumer hands out handles to
//! whoever asks for channels and keeps reading.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use pulse_protocol::{Channel, Event, Offset, Position};
use tokio::sync::{Notify, mpsc};

use crate::pages::HistoryPages;
use crate::router::{Lag, Router};
use crate::{BusError, BusMessage, FILL_PAGE, History};

/// How many live events may wait in a subscription's queue before the
/// subscription is considered lagging and fills from history instead.
const QUEUE_CAPACITY: usize = 8_192;

/// Live events of a channel kept while it is being subscribed; beyond
/// that, the channel fills from history once subscribed.
const EARLY_CAPACITY: usize = 1_024;

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
/// Per channel, every event published after the channel was subscribed is
/// delivered exactly once and in offset order; when events were lost live
/// (a reconnection, a full queue) they are filled from history, and where
/// history no longer has them a [`BusMessage::Gap`] says so.
///
/// Channels are added and removed through a [`SubscriptionHandle`]
/// ([`handle`](Self::handle)), from any task, while this stream is read.
/// [`next`](Self::next) is cancel-safe: it can be used in `select!`.
pub struct Subscription {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Arc<Event>>,
    fill_failures: u32,
}

/// Adds channels to and removes them from a [`Subscription`]. Cheap to
/// clone; usable from any task.
#[derive(Clone)]
pub struct SubscriptionHandle {
    shared: Arc<Shared>,
}

struct Shared {
    id: u64,
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Arc<Event>>,
    lag: Arc<Lag>,
    state: Mutex<State>,
    /// Wakes the stream: a handle made messages ready.
    woken: Notify,
    next_generation: AtomicU64,
}

#[derive(Default)]
struct State {
    channels: HashMap<Channel, Entry>,
    /// Messages ready to be returned, in order.
    ready: VecDeque<BusMessage>,
    /// Channels to fill from history; kept here so that a cancelled fill is
    /// retried.
    to_fill: VecDeque<Channel>,
}

struct Entry {
    /// Tells one subscribe of the channel from a later one.
    generation: u64,
    /// Last position delivered (or skipped as already known); `None` while
    /// the channel is being subscribed.
    last: Option<Position>,
    /// Live events that arrived while the channel was being subscribed.
    early: Vec<Arc<Event>>,
    /// More arrived early than were kept: fill from history.
    overflowed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops live delivery of `channel` to this subscription.
    fn stop(&self, channel: &Channel) {
        if self.backend.router().remove(channel, self.id) {
            self.backend.release(channel);
        }
    }
}

impl State {
    /// Decides what a live event becomes: delivered, kept until its channel
    /// is subscribed, or skipped because it is already delivered,
    /// unsubscribed, or covered by a pending fill.
    fn accept(&mut self, lag: &Lag, event: Arc<Event>) -> Option<BusMessage> {
        // A lagging channel is about to be filled from history, which holds
        // this event too (it was appended before it was sent live).
        if lag.contains(&event.channel) || self.to_fill.contains(&event.channel) {
            return None;
        }
        let entry = self.channels.get_mut(&event.channel)?;
        let Some(last) = entry.last.as_mut() else {
            if entry.early.len() < EARLY_CAPACITY {
                entry.early.push(event);
            } else {
                entry.overflowed = true;
            }
            return None;
        };
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

    fn forget(&mut self, channel: &Channel) {
        self.ready.retain(|message| message_channel(message) != channel);
        self.to_fill.retain(|c| c != channel);
    }
}

impl Subscription {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            tx,
            lag: Arc::default(),
            state: Mutex::default(),
            woken: Notify::new(),
            next_generation: AtomicU64::new(1),
        };
        Self { shared: Arc::new(shared), rx, fill_failures: 0 }
    }

    /// A handle to add and remove channels while this stream is read.
    pub fn handle(&self) -> SubscriptionHandle {
        SubscriptionHandle { shared: self.shared.clone() }
    }

    /// Subscribes to `channel`; see [`SubscriptionHandle::subscribe`].
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus cannot subscribe now.
    pub async fn subscribe(&self, channel: &Channel) -> Result<Position, BusError> {
        self.handle().subscribe(channel).await
    }

    /// Stops delivery of `channel`; see [`SubscriptionHandle::unsubscribe`].
    pub fn unsubscribe(&self, channel: &Channel) {
        self.handle().unsubscribe(channel);
    }

    /// Whether `channel` is subscribed (or being subscribed).
    pub fn is_subscribed(&self, channel: &Channel) -> bool {
        self.shared.lock().channels.contains_key(channel)
    }

    /// The next message. Waits while there is none; returns `None` only if
    /// the bus has shut down.
    pub async fn next(&mut self) -> Option<BusMessage> {
        loop {
            let lagged = self.shared.lag.take();
            let fill = {
                let mut state = self.shared.lock();
                for channel in lagged {
                    let live = match state.channels.get_mut(&channel) {
                        Some(Entry { last: None, overflowed, .. }) => {
                            *overflowed = true;
                            false
                        }
                        Some(_) => true,
                        None => false,
                    };
                    if live && !state.to_fill.contains(&channel) {
                        state.to_fill.push_back(channel);
                    }
                }
                if let Some(message) = state.ready.pop_front() {
                    return Some(message);
                }
                state.to_fill.front().cloned()
            };
            if let Some(channel) = fill {
                match self.fill(&channel).await {
                    Ok(()) => self.fill_failures = 0,
                    Err(err) => {
                        // The bus is away; live delivery is stopped too, so
                        // waiting here holds nothing up. Retry with backoff.
                        self.fill_failures = self.fill_failures.saturating_add(1);
                        let delay = crate::backoff::delay(self.fill_failures);
                        tracing::debug!(channel = %channel, error = %crate::error_chain(&err), ?delay, "filling from history failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                () = self.shared.woken.notified() => {}
                () = self.shared.lag.notified() => {}
                event = self.rx.recv() => {
                    // `shared` holds a sender, so the queue never closes.
                    let event = event?;
                    if let Some(message) = self.shared.lock().accept(&self.shared.lag, event) {
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
        let mut state = self.shared.lock();
        if let Some(message) = state.ready.pop_front() {
            return Some(message);
        }
        loop {
            let event = self.rx.try_recv().ok()?;
            if let Some(message) = state.accept(&self.shared.lag, event) {
                return Some(message);
            }
        }
    }

    /// Reads history after the last delivered position of `channel` into
    /// the ready messages. Nothing is changed unless the whole fill
    /// succeeds, so a cancelled or failed fill can simply be retried.
    async fn fill(&mut self, channel: &Channel) -> Result<(), BusError> {
        let start = {
            let mut state = self.shared.lock();
            match state.channels.get(channel) {
                Some(Entry { last: Some(last), generation, .. }) => Some((*last, *generation)),
                _ => {
                    // Unsubscribed, or not yet subscribed (it fills then).
                    state.to_fill.retain(|c| c != channel);
                    None
                }
            }
        };
        let Some((start, generation)) = start else { return Ok(()) };
        let mut pages = HistoryPages::new(start, None, FILL_PAGE);
        let mut messages = Vec::new();
        while let Some(after) = pages.next_request() {
            let page = pages.accept(self.shared.backend.history(channel, after, pages.limit()).await?);
            if page.truncated {
                // Trimmed past `after`, replaced by another epoch, or `after`
                // is ahead of the head: what follows starts over from what
                // the history has.
                messages.push(BusMessage::Gap { channel: channel.clone(), after });
            }
            messages.extend(page.events.into_iter().map(|event| BusMessage::Event(Arc::new(event))));
        }
        let mut state = self.shared.lock();
        if let Some(pos) = state.to_fill.iter().position(|c| c == channel) {
            state.to_fill.remove(pos);
        }
        // Unless the channel was unsubscribed (and maybe subscribed again)
        // meanwhile.
        if let Some(entry) = state.channels.get_mut(channel)
            && entry.generation == generation
        {
            entry.last = Some(pages.last());
            state.ready.extend(messages);
        }
        Ok(())
    }
}

impl SubscriptionHandle {
    /// Subscribes to `channel` from now on. Returns the channel's head: the
    /// position of its newest event, after which delivery starts. The
    /// stream keeps flowing meanwhile; if this future is dropped before it
    /// completes, the channel is not subscribed. Subscribing a channel that
    /// is subscribed already returns the last position delivered.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus cannot subscribe now (nothing
    /// is left subscribed then).
    pub async fn subscribe(&self, channel: &Channel) -> Result<Position, BusError> {
        let shared = &self.shared;
        let generation = {
            let mut state = shared.lock();
            if let Some(Entry { last: Some(last), .. }) = state.channels.get(channel) {
                return Ok(*last);
            }
            let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
            let entry = Entry { generation, last: None, early: Vec::new(), overflowed: false };
            state.channels.insert(channel.clone(), entry);
            generation
        };
        let mut rollback = Rollback { shared, channel, generation, armed: true };
        shared.backend.router().add(channel, shared.id, &shared.tx, &shared.lag);
        shared.backend.listen(channel).await?;
        let head = shared.backend.head(channel).await?;
        rollback.armed = false;
        let mut state = shared.lock();
        let Some(entry) = state.channels.get_mut(channel) else {
            return Err(BusError::Unavailable(format!("{channel} was unsubscribed while subscribing").into()));
        };
        if entry.generation != generation {
            // A later subscribe of the same channel took over.
            return entry
                .last
                .ok_or_else(|| BusError::Unavailable(format!("{channel} is being subscribed again").into()));
        }
        entry.last = Some(head);
        let early = std::mem::take(&mut entry.early);
        if std::mem::take(&mut entry.overflowed) {
            state.to_fill.push_back(channel.clone());
        }
        // What arrived while subscribing and follows the head is delivered
        // in order, before anything that arrives from now on.
        for event in early {
            if let Some(message) = state.accept(&shared.lag, event) {
                state.ready.push_back(message);
            }
        }
        drop(state);
        shared.woken.notify_one();
        Ok(head)
    }

    /// Stops delivery of `channel`. Messages of it not yet returned are
    /// dropped.
    pub fn unsubscribe(&self, channel: &Channel) {
        let removed = {
            let mut state = self.shared.lock();
            let removed = state.channels.remove(channel).is_some();
            state.forget(channel);
            removed
        };
        if removed {
            self.shared.stop(channel);
        }
    }
}

/// Undoes a subscribe that did not complete (failed, or its future was
/// dropped), unless a later subscribe of the channel took over.
struct Rollback<'a> {
    shared: &'a Shared,
    channel: &'a Channel,
    generation: u64,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ours = {
            let mut state = self.shared.lock();
            let ours = state.channels.get(self.channel).is_some_and(|e| e.generation == self.generation);
            if ours {
                state.channels.remove(self.channel);
                state.forget(self.channel);
            }
            ours
        };
        if ours {
            self.shared.stop(self.channel);
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
        let channels: Vec<Channel> = self.shared.lock().channels.drain().map(|(channel, _)| channel).collect();
        for channel in &channels {
            self.shared.stop(channel);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels = self.shared.lock().channels.len();
        f.debug_struct("Subscription").field("id", &self.shared.id).field("channels", &channels).finish()
    }
}

impl std::fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionHandle").field("id", &self.shared.id).finish()
    }
}
