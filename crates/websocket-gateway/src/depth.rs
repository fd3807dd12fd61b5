//! Client queue depths, sampled: every connection's queue is registered
//! here, and a background task reads their lengths every few seconds. The
//! fan-out path pays nothing for it; a connection pays one registry insert
//! and one removal. The same registry wakes every connection when the
//! gateway drains ([`QueueDepths::wake_all`]).
//!
//! - `pulse_gateway_queue_depth_frames` (histogram): each client's queue
//!   length at each sample;
//! - `pulse_gateway_queue_depth_max_frames` (gauge): the longest queue at
//!   the latest sample;
//! - `pulse_gateway_queued_frames` (gauge): frames waiting in all queues.

use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::{describe_gauge, describe_histogram, gauge, histogram};
use parking_lot::Mutex;
use pulse_runtime::Shutdown;
use slab::Slab;

use crate::queue::ClientQueue;

/// Histogram of sampled queue lengths.
pub const QUEUE_DEPTH: &str = "pulse_gateway_queue_depth_frames";
/// The longest queue at the latest sample.
pub const QUEUE_DEPTH_MAX: &str = "pulse_gateway_queue_depth_max_frames";
/// Frames waiting in all queues at the latest sample.
pub const QUEUED: &str = "pulse_gateway_queued_frames";

/// How often queue lengths are read.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The queues of open connections.
#[derive(Default)]
pub(crate) struct QueueDepths {
    queues: Mutex<Slab<Weak<ClientQueue>>>,
}

/// A queue's place in the registry; dropping it removes the queue.
pub(crate) struct Registered {
    depths: Arc<QueueDepths>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.depths.queues.lock().try_remove(self.key);
    }
}

impl QueueDepths {
    pub(crate) fn new() -> Arc<Self> {
        describe_histogram!(QUEUE_DEPTH, "Client queue lengths in frames, sampled every 5 s");
        describe_gauge!(QUEUE_DEPTH_MAX, "Longest client queue in frames at the latest sample");
        describe_gauge!(QUEUED, "Frames waiting in all client queues at the latest sample");
        Arc::default()
    }

    pub(crate) fn register(self: &Arc<Self>, queue: &Arc<ClientQueue>) -> Registered {
        let key = self.queues.lock().insert(Arc::downgrade(queue));
        Registered { depths: self.clone(), key }
    }

    /// Wakes every queue's transport (to see a drain).
    pub(crate) fn wake_all(&self) {
        let queues: Vec<Weak<ClientQueue>> = self.queues.lock().iter().map(|(_, q)| q.clone()).collect();
        for queue in queues.iter().filter_map(Weak::upgrade) {
            queue.wake();
        }
    }

    /// Reads every queue's length and records them.
    pub(crate) fn sample(&self) {
        // Copy the handles out first: the registry's lock is not held while
        // each queue's own lock is taken.
        let queues: Vec<Weak<ClientQueue>> = self.queues.lock().iter().map(|(_, q)| q.clone()).collect();
        let depth = histogram!(QUEUE_DEPTH);
        let (mut total, mut max) = (0usize, 0usize);
        for queue in queues.iter().filter_map(Weak::upgrade) {
            let len = queue.len();
            depth.record(len as f64);
            total += len;
            max = max.max(len);
        }
        gauge!(QUEUED).set(total as f64);
        gauge!(QUEUE_DEPTH_MAX).set(max as f64);
    }

    /// Samples every [`SAMPLE_EVERY`] until `halt`.
    pub(crate) async fn run(self: Arc<Self>, halt: Shutdown) {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = halt.cancelled() => return,
                _ = ticker.tick() => self.sample(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytestring::ByteString;

    use super::*;

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.split([' ', '{']).next() == Some(name))
    }

    #[test]
    fn a_sample_reads_every_registered_queue() {
        let handle = pulse_runtime::install_metrics().unwrap();
        let depths = QueueDepths::new();
        let (a, b) = (Arc::new(ClientQueue::new(100, 1 << 20)), Arc::new(ClientQueue::new(100, 1 << 20)));
        let _a = depths.register(&a);
        let gone = depths.register(&b);
        for _ in 0..3 {
            a.push_control(ByteString::from_static("{}"));
        }
        b.push_control(ByteString::from_static("{}"));
        depths.sample();
        let text = handle.render();
        assert_eq!(line(&text, QUEUED), Some("pulse_gateway_queued_frames 4"), "{text}");
        assert_eq!(line(&text, QUEUE_DEPTH_MAX), Some("pulse_gateway_queue_depth_max_frames 3"), "{text}");
        assert!(text.contains("pulse_gateway_queue_depth_frames_bucket{le=\"4\"}"), "{text}");
        assert!(text.contains("# HELP pulse_gateway_queued_frames "), "{text}");
        // A closed connection leaves the registry.
        drop(gone);
        depths.sample();
        let text = handle.render();
        assert_eq!(line(&text, QUEUED), Some("pulse_gateway_queued_frames 3"), "{text}");
    }
}
