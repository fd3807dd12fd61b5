//! The bridge between the bus and the hub: reads the instance's one bus
//! [`Subscription`] and hands every message it yields to the hub. Channels
//! are added and removed by the hub through the subscription's handle, so
//! nothing here waits on anything but the stream.

use std::sync::Arc;

use crate::hub::Hub;
use pulse_bus::{BusMessage, Subscription};
use pulse_protocol::Event;
use pulse_runtime::Shutdown;

/// Events handed to the hub at once, at most.
const MAX_BATCH: usize = 256;

/// Runs until `halt` (after the server has stopped: clients being drained
/// still receive events), or until the bus is gone.
pub(crate) async fn run(hub: Hub, mut subscription: Subscription, halt: Shutdown) {
    let halted = halt.cancelled();
    tokio::pin!(halted);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            message = subscription.next() => {
                let Some(first) = message else {
                    tracing::error!("the bus subscription ended; no more events will be delivered");
                    break;
                };
                // What else has arrived goes with it, as one batch: each
                // client is then woken once for all of it.
                let mut next = Some(first);
                while let Some(message) = next {
                    match message {
                        BusMessage::Event(event) => batch.push(event),
                        BusMessage::Gap { channel, after } => {
                            deliver(&hub, &mut batch);
                            tracing::warn!(%channel, %after, "events lost on the bus; clients told to refetch");
                            hub.gap(&channel, after);
                        }
                    }
                    next = if batch.len() < MAX_BATCH { subscription.try_next() } else { None };
                }
                deliver(&hub, &mut batch);
            }
            () = &mut halted => break,
        }
    }
}

/// Hands `batch` to the hub and empties it.
fn deliver(hub: &Hub, batch: &mut Vec<Arc<Event>>) {
    if batch.is_empty() {
        return;
    }
    // Continue each publisher's trace, paying for it only when spans are
    // recorded: exported (the exporter takes TRACE_TARGET at any log level)
    // or logged at debug. Then event by event, each in its own span.
    if tracing::enabled!(target: pulse_runtime::TRACE_TARGET, tracing::Level::DEBUG) {
        for event in batch.iter() {
            let span = tracing::debug_span!(target: pulse_runtime::TRACE_TARGET, "fan_out", channel = %event.channel, id = %event.id);
            if let Some(trace) = &event.trace {
                pulse_runtime::set_parent_from_traceparent(&span, trace);
            }
            let _entered = span.enter();
            hub.deliver(std::slice::from_ref(event));
        }
    } else {
        hub.deliver(batch);
    }
    batch.clear();
}
