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
//! memory) and wakes its transport, which closes it with 4000. Frames are
//! shared [`ByteString`]s, so a push is a refcount increment and a slot in a
//! `VecDeque`, with no allocation once the deque has grown.
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

use bytestring::ByteString;
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

/// A frame waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub(crate) text: ByteString,
    pub(crate) tag: Tag,
    /// The event's position; [`Position::ZERO`] for control messages.
    pub(crate) offset: Position,
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
    frames: VecDeque<Outbound>,
    /// Subscriptions being resumed, and the live frames held for each.
    held: Vec<(Tag, Vec<Outbound>)>,
    /// Bytes of text in `frames` and in `held`.
    bytes: usize,
    /// A snapshot is among `frames`.
    snapshot_queued: bool,
    status: QueueStatus,
}

fn text_bytes<'a>(frames: impl IntoIterator<Item = &'a Outbound>) -> usize {
    frames.into_iter().map(|frame| frame.text.len()).sum()
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct ClientQueue {
    // A parking_lot mutex, not a tokio one: it is never held across an
    // `.await`, and the hub's fan-out takes it once per delivery.
    state: Mutex<State>,
    /// Wakes the transport: frames queued, or the status changed.
    ready: Notify,
    /// Wakes a replay waiting for room.
    room: Notify,
    capacity: usize,
    max_bytes: usize,
}

impl ClientQueue {
    /// A queue of at most `capacity` frames and `max_bytes` bytes of text.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        let state = State {
            frames: VecDeque::new(),
            held: Vec::new(),
            bytes: 0,
            snapshot_queued: false,
            status: QueueStatus::Open,
        };
        Self {
            state: Mutex::new(state),
            ready: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Whether `frames` more frames of `bytes` bytes fit beside what is
    /// queued and held.
    fn fits(&self, state: &State, queued: usize, frames: usize, bytes: usize) -> bool {
        queued + frames <= self.capacity && (state.bytes == 0 || state.bytes + bytes <= self.max_bytes)
    }

    /// Queues live events of subscription `tag`, in order, and wakes the
    /// transport once. Never waits. Returns whether the client is still open.
    pub(crate) fn push_live(&self, tag: Tag, events: &[(Position, ByteString)]) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let frames = events.iter().map(|(offset, text)| Outbound { text: text.clone(), tag, offset: *offset });
        // While the subscription resumes, its live events are held aside.
        let bytes: usize = events.iter().map(|(_, text)| text.len()).sum();
        if let Some(index) = state.held.iter().position(|(t, _)| *t == tag) {
            if !self.fits(&state, state.held[index].1.len(), events.len(), bytes) {
                return self.overflowed(&mut state);
            }
            state.bytes += bytes;
            state.held[index].1.extend(frames);
            return true;
        }
        self.push_locked(&mut state, frames, bytes)
    }

    /// Queues a control message (counts toward the capacity like events).
    pub(crate) fn push_control(&self, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let bytes = text.len();
        self.push_locked(&mut state, std::iter::once(Outbound { text, tag: NO_TAG, offset: Position::ZERO }), bytes)
    }

    /// Queues a `snapshot` (see [`Self::snapshot_queued`]).
    pub(crate) fn push_snapshot(&self, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let bytes = text.len();
        let frame = Outbound { text, tag: SNAPSHOT_TAG, offset: Position::ZERO };
        let pushed = self.push_locked(&mut state, std::iter::once(frame), bytes);
        state.snapshot_queued |= pushed;
        pushed
    }

    /// Whether a snapshot waits in the queue (not yet taken by the
    /// transport).
    pub(crate) fn snapshot_queued(&self) -> bool {
        self.state.lock().snapshot_queued
    }

    /// Queues `frames`, of `bytes` bytes of text in all.
    fn push_locked(&self, state: &mut State, frames: impl ExactSizeIterator<Item = Outbound>, bytes: usize) -> bool {
        if !self.fits(state, state.frames.len(), frames.len(), bytes) {
            return self.overflowed(state);
        }
        state.bytes += bytes;
        let was_empty = state.frames.is_empty();
        state.frames.extend(frames);
        // The transport takes everything at once: one wake-up per batch.
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Marks the client slow, frees its backlog, wakes its transport to
    /// close it; returns `false` (no longer open) for the caller to pass on.
    fn overflowed(&self, state: &mut State) -> bool {
        state.status = QueueStatus::Overflowed;
        state.frames = VecDeque::new();
        state.held = Vec::new();
        state.bytes = 0;
        self.ready.notify_one();
        false
    }

    /// Queues replayed history. Replays may overshoot the capacity by one
    /// page; they wait for room between pages ([`Self::wait_for_room`]).
    pub(crate) fn push_replayed(&self, tag: Tag, offset: Position, text: ByteString) -> bool {
        let mut state = self.state.lock();
        if state.status != QueueStatus::Open {
            return false;
        }
        let was_empty = state.frames.is_empty();
        state.bytes += text.len();
        state.frames.push_back(Outbound { text, tag, offset });
        if was_empty {
            self.ready.notify_one();
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
                if state.frames.len() <= self.capacity / 2 && state.bytes <= self.max_bytes / 2 {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Starts holding live frames of `tag` aside.
    pub(crate) fn hold(&self, tag: Tag) {
        let mut state = self.state.lock();
        if !state.held.iter().any(|(t, _)| *t == tag) {
            state.held.reserve_exact(1);
            state.held.push((tag, Vec::new()));
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
        state.bytes -= text_bytes(&held);
        let mut sent = last;
        for frame in held {
            if frame.offset.follows(&sent) {
                sent = frame.offset;
                let bytes = frame.text.len();
                if !self.push_locked(&mut state, std::iter::once(frame), bytes) {
                    return None;
                }
            }
        }
        // The trailer carries the tag and offset so that SSE can put the
        // position in its event id even when no event was sent.
        let text = trailer(sent);
        let bytes = text.len();
        self.push_locked(&mut state, std::iter::once(Outbound { text, tag, offset: sent }), bytes).then_some(sent)
    }

    /// Stops holding `tag`, dropping what was held (unsubscribed mid-replay).
    pub(crate) fn discard(&self, tag: Tag) {
        let mut state = self.state.lock();
        if let Some(held) = take_held(&mut state, tag) {
            state.bytes -= text_bytes(&held);
        }
    }

    /// Moves every queued frame into `out` (which must be empty) and returns
    /// the status. The two buffers are swapped, so each keeps its capacity
    /// for as long as the transport keeps `out`'s.
    pub(crate) fn take(&self, out: &mut VecDeque<Outbound>) -> QueueStatus {
        let status = {
            let mut state = self.state.lock();
            std::mem::swap(&mut state.frames, out);
            state.bytes -= text_bytes(out.iter());
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
        state.frames.len() + state.held.iter().map(|(_, held)| held.len()).sum::<usize>()
    }

    /// Stops accepting frames and drops those queued.
    pub(crate) fn close(&self) {
        {
            let mut state = self.state.lock();
            if state.status == QueueStatus::Open {
                state.status = QueueStatus::Closed;
            }
            state.frames = VecDeque::new();
            state.held = Vec::new();
            state.bytes = 0;
        }
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Makes the next [`Self::ready`] complete (the transport left frames
    /// for later).
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Completes when frames were queued or the status changed since the
    /// last call. Cancel-safe (a `Notify` permit is kept).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// Stops holding `tag`, returning what was held.
fn take_held(state: &mut State, tag: Tag) -> Option<Vec<Outbound>> {
    let position = state.held.iter().position(|(t, _)| *t == tag)?;
    let (_, held) = state.held.swap_remove(position);
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
        (out.into_iter().map(|f| f.text.to_string()).collect(), status)
    }

    #[test]
    fn overflow_marks_slow_and_frees_the_backlog() {
        let queue = ClientQueue::new(2, 1 << 20);
        assert!(queue.push_live(0, &[(p(1, 0), text("a")), (p(2, 0), text("b"))]));
        assert!(!queue.push_live(0, &[(p(3, 0), text("c"))]));
        let (frames, status) = drain(&queue);
        assert!(frames.is_empty());
        assert_eq!(status, QueueStatus::Overflowed);
        assert!(!queue.push_control(text("x")));
    }

    #[test]
    fn held_frames_are_released_after_the_replay_without_duplicates() {
        let queue = ClientQueue::new(10, 1 << 20);
        queue.hold(1);
        assert!(queue.push_live(1, &[(p(5, 0), text("e5")), (p(6, 0), text("e6"))]));
        assert!(queue.push_live(2, &[(p(1, 0), text("other"))]));
        assert!(queue.push_replayed(1, p(4, 0), text("e4")));
        assert!(queue.push_replayed(1, p(5, 0), text("e5")));
        let sent = queue.release(1, p(5, 0), |last| text(&format!("subscribed {last}")));
        assert_eq!(sent, Some(p(6, 0)));
        assert!(queue.push_live(1, &[(p(7, 0), text("e7"))]));
        let (frames, status) = drain(&queue);
        assert_eq!(frames, ["other", "e4", "e5", "e6", "subscribed 1:6-0", "e7"]);
        assert_eq!(status, QueueStatus::Open);
    }

    #[test]
    fn held_frames_of_a_new_epoch_are_released_even_with_lower_offsets() {
        let queue = ClientQueue::new(10, 1 << 20);
        queue.hold(1);
        let new_epoch = |ms| Position::new(pulse_protocol::Epoch::from_u64(2), pulse_protocol::Offset::new(ms, 0));
        assert!(queue.push_live(1, &[(new_epoch(3), text("n3"))]));
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
        assert!(queue.push_live(0, &[(p(1, 0), text("a"))]));
        assert!(!queue.push_live(0, &[(p(2, 0), text("b"))]));
        assert_eq!(queue.status(), QueueStatus::Overflowed);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let queue = ClientQueue::new(100, 10);
        // One frame larger than the bound fits into an empty queue.
        assert!(queue.push_control(text("0123456789abc")));
        let (frames, _) = drain(&queue);
        assert_eq!(frames.len(), 1);
        assert!(queue.push_live(0, &[(p(1, 0), text("12345"))]));
        assert!(queue.push_control(text("1234")));
        assert!(!queue.push_live(0, &[(p(2, 0), text("12"))]), "11 bytes > 10");
        assert_eq!(queue.status(), QueueStatus::Overflowed);
    }

    #[test]
    fn held_and_taken_bytes_are_accounted() {
        let queue = ClientQueue::new(100, 10);
        queue.hold(1);
        assert!(queue.push_live(1, &[(p(1, 0), text("1234"))]));
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
