//! One client's bounded outbound queue.
//!
//! The queue is bounded twice: in frames (`gateway.queue_capacity`) and in
//! bytes (`gateway.queue_bytes`, control frames and snapshots included), so
//! that neither many small events nor a few large ones let one client hold
//! unbounded memory. A single frame larger than the byte bound is still
//! taken into an empty queue.
//!
//! The hub pushes with [`ClientQueue::push_live`], which never waits: a full
//! queue marks the client slow (its frames are dropped at once, freeing the
//! memory) and wakes its transport, which closes it with 4000. The hub
//! encodes a run of events of one channel once, into a [`Run`] shared by
//! every subscriber: a push is one refcount increment and one slot in a
//! `VecDeque` per subscriber and run, however many events the run holds.
//!
//! The transport (WebSocket session or SSE stream) takes everything queued
//! in one go ([`ClientQueue::take`]) and writes it as one batch.
//!
//! While a subscription is resuming, its live events are *held* aside
//! ([`ClientQueue::hold`]) and released after the replay
//! ([`ClientQueue::release`]), minus those the replay already sent, in the
//! same critical section as the hub's pushes, so no event is lost or
//! duplicated at the switch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use pulse_protocol::Position;
use tokio::sync::Notify;

/// Identifies a subscription within one connection (its index in the
/// connection's subscription table), carried with each frame so the SSE
/// transport knows which channel an event belongs to.
pub(crate) type Tag = u32;

/// Tag of frames that belong to no subscription (control messages).
pub(crate) const NO_TAG: Tag = Tag::MAX;

/// Tag of a `snapshot` frame (belongs to no subscription's position).
pub(crate) const SNAPSHOT_TAG: Tag = Tag::MAX - 1;

/// Tags below this number subscriptions.
pub(crate) const SUBSCRIPTION_TAGS: Tag = SNAPSHOT_TAG;

/// A frame's text and position ([`Position::ZERO`] for control messages).
pub(crate) type Frame = (Position, ByteString);

/// Consecutive events of one channel, encoded once and shared by every
/// subscriber they go to.
pub(crate) type Run = Arc<[Frame]>;

/// Frames waiting to be written: one control frame or replayed event, or
/// (part of) a run of live events.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub(crate) tag: Tag,
    frames: Frames,
}

#[derive(Debug, Clone)]
enum Frames {
    One(Frame),
    /// `run[from..]`.
    Run(Run, usize),
}

impl Outbound {
    fn one(tag: Tag, offset: Position, text: ByteString) -> Self {
        Self { tag, frames: Frames::One((offset, text)) }
    }

    /// The frames, in order.
    pub(crate) fn frames(&self) -> &[Frame] {
        match &self.frames {
            Frames::One(frame) => std::slice::from_ref(frame),
            Frames::Run(run, from) => run.get(*from..).unwrap_or_default(),
        }
    }

    fn bytes(&self) -> usize {
        self.frames().iter().map(|(_, text)| text.len()).sum()
    }

    /// The frames after `after`, or `None` if none follows it (live frames
    /// of a channel are in order, so those that follow are a suffix).
    fn after(self, after: Position) -> Option<Self> {
        match self.frames {
            Frames::One((offset, _)) if !offset.follows(&after) => None,
            Frames::One(_) => Some(self),
            Frames::Run(run, from) => {
                let skip = run.get(from..)?.iter().position(|(offset, _)| offset.follows(&after))?;
                Some(Self { tag: self.tag, frames: Frames::Run(run, from + skip) })
            }
        }
    }
}

/// Why a queue stopped accepting frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueStatus {
    Open,
    /// The client fell `capacity` frames or bytes behind.
    Overflowed,
    /// The transport is shutting the connection.
    Closed,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    /// Frames in `queue`.
    queued: usize,
    /// Subscriptions being resumed, the live frames held for each, and how
    /// many frames that is.
    held: Vec<(Tag, Vec<Outbound>, usize)>,
    /// Bytes of text in `queue` and in `held`.
    bytes: usize,
    /// A snapshot is in `queue`.
    snapshot_queued: bool,
    status: QueueStatus,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct ClientQueue {
    // A parking_lot mutex, not a tokio one: it is never held across an
    // `.await`, and the hub's fan-out takes it once per delivery.
    state: Mutex<State>,
    /// Wakes the transport: frames queued, or the status changed. With
    /// `woken`, a one-waiter `Notify` that the transport polls in place: it
    /// holds no waiter node (a `Notified` future is 80 bytes, kept by every
    /// idle connection).
    ready: AtomicWaker,
    /// Set by a wake, cleared when the transport sees it (a kept permit).
    woken: AtomicBool,
    /// Wakes a replay waiting for room.
    room: Notify,
    capacity: usize,
    max_bytes: usize,
}

impl ClientQueue {
    /// A queue of at most `capacity` frames and `max_bytes` bytes of text.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        let state = State {
            queue: VecDeque::new(),
            queued: 0,
            held: Vec::new(),
            bytes: 0,
            snapshot_queued: false,
            status: QueueStatus::Open,
        };
        Self {
            state: Mutex::new(state),
            ready: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            room: Notify::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Whether `frames` more frames of `bytes` bytes fit beside `queued`
    /// frames and everything queued and held.
    fn fits(&self, state: &State, queued: usize, frames: usize, bytes: usize) -> bool {
        queued + frames <= self.capacity && (state.bytes == 0 || state.bytes + bytes <= self.max_bytes)
    }

    /// Queues a run of live events of subscription `tag` (`bytes` of text in
    /// all) and wakes the transport. Never waits. Returns whether the client
    /// is still open.
    pub(crate) fn push_live(&self, tag: Tag, run: &Run, bytes: usize) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let entry = Outbound { tag, frames: Frames::Run(run.clone(), 0) };
        // While the subscription resumes, its live events are held aside.
        if let Some(index) = state.held.iter().position(|(t, _, _)| *t == tag) {
            if !self.fits(&state, state.held[index].2, run.len(), bytes) {
                return self.overflowed(&mut state);
            }
            state.bytes += bytes;
            let (_, held, count) = &mut state.held[index];
            held.push(entry);
            *count += run.len();
            return true;
        }
        self.push_locked(&mut state, entry, run.len(), bytes)
    }

    /// Queues a control message (counts toward the capacity like events).
    pub(crate) fn push_control(&self, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let bytes = text.len();
        self.push_locked(&mut state, Outbound::one(NO_TAG, Position::ZERO, text), 1, bytes)
    }

    /// Queues a `snapshot` (see [`Self::snapshot_queued`]).
    pub(crate) fn push_snapshot(&self, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let bytes = text.len();
        let pushed = self.push_locked(&mut state, Outbound::one(SNAPSHOT_TAG, Position::ZERO, text), 1, bytes);
        state.snapshot_queued |= pushed;
        pushed
    }

    /// Whether a snapshot waits in the queue (not yet taken by the
    /// transport).
    pub(crate) fn snapshot_queued(&self) -> bool {
        self.state.lock().snapshot_queued
    }

    /// Queues `entry`: `frames` frames of `bytes` bytes of text in all.
    fn push_locked(&self, state: &mut State, entry: Outbound, frames: usize, bytes: usize) -> bool {
        if !self.fits(state, state.queued, frames, bytes) {
            return self.overflowed(state);
        }
        state.bytes += bytes;
        state.queued += frames;
        let was_empty = state.queue.is_empty();
        state.queue.push_back(entry);
        // The transport takes everything at once: one wake-up per batch.
        if was_empty {
            self.wake();
        }
        true
    }

    /// Marks the client slow, frees its backlog, wakes its transport to
    /// close it; returns `false` (no longer open) for the caller to pass on.
    fn overflowed(&self, state: &mut State) -> bool {
        state.status = QueueStatus::Overflowed;
        state.queue = VecDeque::new();
        state.queued = 0;
        state.held = Vec::new();
        state.bytes = 0;
        self.wake();
        false
    }

    /// Queues replayed history. Replays may overshoot the capacity by one
    /// page; they wait for room between pages ([`Self::wait_for_room`]).
    pub(crate) fn push_replayed(&self, tag: Tag, offset: Position, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let was_empty = state.queue.is_empty();
        state.bytes += text.len();
        state.queued += 1;
        state.queue.push_back(Outbound::one(tag, offset, text));
        if was_empty {
            self.wake();
        }
        true
    }

    /// Waits until at most half the capacity (frames and bytes) is queued
    /// (or the queue is no longer open). Returns whether it is open.
    pub(crate) async fn wait_for_room(&self) -> bool {
        loop {
            let notified = self.room.notified();
            {
                let state = self.state.lock();
                if state.status != QueueStatus::Open {
                    return false;
                }
                if state.queued <= self.capacity / 2 && state.bytes <= self.max_bytes / 2 {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Starts holding live frames of `tag` aside.
    pub(crate) fn hold(&self, tag: Tag) {
        let mut state = self.state.lock();
        if !state.held.iter().any(|(t, _, _)| *t == tag) {
            state.held.reserve_exact(1);
            state.held.push((tag, Vec::new(), 0));
        }
    }

    /// Ends holding `tag`: queues the held frames after `last` (the replay
    /// sent those up to it), then `trailer`, and returns the offset of the
    /// last frame of `tag` the client will have been sent.
    pub(crate) fn release(
        &self,
        tag: Tag,
        last: Position,
        trailer: impl FnOnce(Position) -> ByteString,
    ) -> Option<Position> {
        let mut state = self.state.lock();
        let held = take_held(&mut state, tag)?;
        if state.status != QueueStatus::Open {
            return None;
        }
        let mut sent = last;
        for entry in held {
            let Some(entry) = entry.after(sent) else { continue };
            let (frames, bytes) = (entry.frames().len(), entry.bytes());
            if let Some((offset, _)) = entry.frames().last() {
                sent = *offset;
            }
            if !self.push_locked(&mut state, entry, frames, bytes) {
                return None;
            }
        }
        // The trailer carries the tag and offset so that SSE can put the
        // position in its event id even when no event was sent.
        let text = trailer(sent);
        let bytes = text.len();
        self.push_locked(&mut state, Outbound::one(tag, sent, text), 1, bytes).then_some(sent)
    }

    /// Stops holding `tag`, dropping what was held (unsubscribed mid-replay).
    pub(crate) fn discard(&self, tag: Tag) {
        let mut state = self.state.lock();
        take_held(&mut state, tag);
    }

    /// Moves every queued entry into `out` (which must be empty) and returns
    /// the status. The two buffers are swapped, so each keeps its capacity
    /// for as long as the transport keeps `out`'s.
    pub(crate) fn take(&self, out: &mut VecDeque<Outbound>) -> QueueStatus {
        let status = {
            let mut state = self.state.lock();
            std::mem::swap(&mut state.queue, out);
            let held: usize = state.held.iter().flat_map(|(_, held, _)| held).map(Outbound::bytes).sum();
            state.bytes = held;
            state.queued = 0;
            state.snapshot_queued = false;
            state.status
        };
        self.room.notify_waiters();
        status
    }

    pub(crate) fn status(&self) -> QueueStatus {
        self.state.lock().status
    }

    /// Frames waiting: queued, and held for subscriptions being resumed.
    pub(crate) fn len(&self) -> usize {
        let state = self.state.lock();
        state.queued + state.held.iter().map(|(_, _, count)| count).sum::<usize>()
    }

    /// Stops accepting frames and drops those queued.
    pub(crate) fn close(&self) {
        {
            let mut state = self.state.lock();
            if state.status == QueueStatus::Open {
                state.status = QueueStatus::Closed;
            }
            state.queue = VecDeque::new();
            state.queued = 0;
            state.held = Vec::new();
            state.bytes = 0;
        }
        self.wake();
        self.room.notify_waiters();
    }

    /// Makes the next [`Self::ready`] complete (the transport left frames
    /// for later).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.ready.wake();
    }

    /// Ready when frames were queued or the status changed since it was
    /// last ready. One task polls it (the transport's). Cancel-safe: a wake
    /// is kept until seen.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.ready.register(cx.waker());
        // A wake between the check and the registration found no waker.
        if self.woken.swap(false, Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// [`Self::poll_ready`] as a future.
    pub(crate) fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_ready(cx))
    }
}

/// Stops holding `tag`, returning what was held (its bytes no longer count).
fn take_held(state: &mut State, tag: Tag) -> Option<Vec<Outbound>> {
    let position = state.held.iter().position(|(t, _, _)| *t == tag)?;
    let (_, held, _) = state.held.swap_remove(position);
    state.bytes -= held.iter().map(Outbound::bytes).sum::<usize>();
    if state.held.is_empty() {
        // Nothing is resuming: do not keep the list's memory.
        state.held = Vec::new();
    }
    Some(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> Position {
        Position::new(pulse_protocol::Epoch::from_u64(1), pulse_protocol::Offset::new(ms, seq))
    }

    fn text(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    fn drain(queue: &ClientQueue) -> (Vec<String>, QueueStatus) {
        let mut out = VecDeque::new();
        let status = queue.take(&mut out);
        (out.iter().flat_map(Outbound::frames).map(|(_, text)| text.to_string()).collect(), status)
    }

    /// Pushes `frames` as one run, as the hub does.
    fn live(queue: &ClientQueue, tag: Tag, frames: &[Frame]) -> bool {
        let run: Run = frames.into();
        let bytes = frames.iter().map(|(_, text)| text.len()).sum();
        queue.push_live(tag, &run, bytes)
    }

    #[test]
    fn overflow_marks_slow_and_frees_the_backlog() {
        let queue = ClientQueue::new(2, 1 << 20);
        assert!(live(&queue, 0, &[(p(1, 0), text("a")), (p(2, 0), text("b"))]));
        assert!(!live(&queue, 0, &[(p(3, 0), text("c"))]));
        let (frames, status) = drain(&queue);
        assert!(frames.is_empty());
        assert_eq!(status, QueueStatus::Overflowed);
        assert!(!queue.push_control(text("x")));
    }

    #[test]
    fn held_frames_are_released_after_the_replay_without_duplicates() {
        let queue = ClientQueue::new(10, 1 << 20);
        queue.hold(1);
        assert!(live(&queue, 1, &[(p(5, 0), text("e5")), (p(6, 0), text("e6"))]));
        assert!(live(&queue, 2, &[(p(1, 0), text("other"))]));
        assert!(queue.push_replayed(1, p(4, 0), text("e4")));
        assert!(queue.push_replayed(1, p(5, 0), text("e5")));
        let sent = queue.release(1, p(5, 0), |last| text(&format!("subscribed {last}")));
        assert_eq!(sent, Some(p(6, 0)));
        assert!(live(&queue, 1, &[(p(7, 0), text("e7"))]));
        let (frames, status) = drain(&queue);
        assert_eq!(frames, ["other", "e4", "e5", "e6", "subscribed 1:6-0", "e7"]);
        assert_eq!(status, QueueStatus::Open);
    }

    #[test]
    fn held_frames_of_a_new_epoch_are_released_even_with_lower_offsets() {
        let queue = ClientQueue::new(10, 1 << 20);
        queue.hold(1);
        let new_epoch = |ms| Position::new(pulse_protocol::Epoch::from_u64(2), pulse_protocol::Offset::new(ms, 0));
        assert!(live(&queue, 1, &[(new_epoch(3), text("n3"))]));
        // The replay got as far as offset 9 of the old history.
        let sent = queue.release(1, p(9, 0), |last| text(&format!("subscribed {last}")));
        assert_eq!(sent, Some(new_epoch(3)));
        let (frames, _) = drain(&queue);
        assert_eq!(frames, ["n3", "subscribed 2:3-0"]);
    }

    #[test]
    fn held_frames_are_bounded_too() {
        let queue = ClientQueue::new(1, 1 << 20);
        queue.hold(0);
        assert!(live(&queue, 0, &[(p(1, 0), text("a"))]));
        assert!(!live(&queue, 0, &[(p(2, 0), text("b"))]));
        assert_eq!(queue.status(), QueueStatus::Overflowed);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let queue = ClientQueue::new(100, 10);
        // One frame larger than the bound fits into an empty queue.
        assert!(queue.push_control(text("0123456789abc")));
        let (frames, _) = drain(&queue);
        assert_eq!(frames.len(), 1);
        assert!(live(&queue, 0, &[(p(1, 0), text("12345"))]));
        assert!(queue.push_control(text("1234")));
        assert!(!live(&queue, 0, &[(p(2, 0), text("12"))]), "11 bytes > 10");
        assert_eq!(queue.status(), QueueStatus::Overflowed);
    }

    #[test]
    fn held_and_taken_bytes_are_accounted() {
        let queue = ClientQueue::new(100, 10);
        queue.hold(1);
        assert!(live(&queue, 1, &[(p(1, 0), text("1234"))]));
        queue.discard(1);
        assert!(queue.push_control(text("123456789")), "discarded frames no longer count");
        drain(&queue);
        assert!(queue.push_control(text("123456789")), "taken frames no longer count");
    }

    #[test]
    fn a_snapshot_is_known_to_be_queued_until_taken() {
        let queue = ClientQueue::new(10, 1 << 20);
        assert!(!queue.snapshot_queued());
        assert!(queue.push_snapshot(text("{}")));
        assert!(queue.snapshot_queued());
        drain(&queue);
        assert!(!queue.snapshot_queued());
    }

    #[tokio::test]
    async fn replay_waits_for_room() {
        let queue = std::sync::Arc::new(ClientQueue::new(4, 1 << 20));
        for i in 0..4 {
            queue.push_replayed(0, p(i, 0), text("r"));
        }
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain(&queue);
        assert!(waiter.await.unwrap());
    }
}
