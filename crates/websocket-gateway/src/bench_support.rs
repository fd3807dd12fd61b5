//! For the micro-benchmarks of `pulse-bench` only (not a stable API): the
//! hub's fan-out to many local subscribers and the sessions' frame encoding,
//! without sockets.

use std::collections::VecDeque;
use std::sync::Arc;

use pulse_protocol::{Channel, Event, Position};

use crate::frames;
use crate::hub::{Hub, Subscriber};
use crate::metrics::Metrics;
use crate::queue::{ClientQueue, Outbound};

/// One channel with `n` local subscribers, each with its own queue.
pub struct FanOut {
    hub: Hub,
    channel: Channel,
    queues: Vec<Arc<ClientQueue>>,
    batch: VecDeque<Outbound>,
    out: Vec<u8>,
    next: u64,
}

impl FanOut {
    pub fn new(subscribers: usize) -> Self {
        // The hub's bus is never asked for anything here: every subscriber is
        // added as if the bus delivered the channel already.
        let bus = pulse_bus::MemoryBus::new(pulse_bus::MemoryBusConfig::default());
        let hub = Hub::new(Metrics::new(), pulse_bus::Bus::subscription(&bus).handle());
        let channel = Channel::parse("bench").unwrap_or_else(|e| unreachable!("valid channel: {e}"));
        let queues: Vec<_> = (0..subscribers).map(|_| Arc::new(ClientQueue::new(1024, usize::MAX))).collect();
        for queue in &queues {
            hub.add_local(&channel, Subscriber { queue: queue.clone(), tag: 0 });
        }
        Self { hub, channel, queues, batch: VecDeque::new(), out: Vec::new(), next: 1 }
    }

    /// Fans out `events` (copies of `template`, with fresh offsets) as one
    /// bus batch, then takes and encodes every queue as its session would.
    /// Returns the frames encoded.
    pub fn round(&mut self, template: &Event, events: usize) -> usize {
        let batch: Vec<Arc<Event>> = (0..events)
            .map(|_| {
                self.next += 1;
                let mut event = template.clone();
                event.channel = self.channel.clone();
                event.id = Position::new(pulse_protocol::Epoch::from_u64(1), pulse_protocol::Offset::new(self.next, 0));
                Arc::new(event)
            })
            .collect();
        self.hub.deliver(&batch);
        let mut frames = 0;
        for queue in &self.queues {
            queue.take(&mut self.batch);
            for frame in self.batch.drain(..) {
                frames::put_frame(&mut self.out, frames::OP_TEXT, frame.text.as_bytes());
                frames += 1;
            }
            self.out.clear();
        }
        frames
    }
}
