//! The bridge between the bus and the hub: owns the instance's one bus
//! [`Subscription`], applies the hub's subscribe/unsubscribe commands to it,
//! and hands every message it yields to the hub.

use pulse_bus::{BusMessage, Subscription};
use pulse_runtime::Shutdown;
use tokio::sync::mpsc;

use crate::hub::{Command, Hub};

/// Runs until `halt` (after the server has stopped: clients being drained
/// still receive events), or until the bus is gone.
pub(crate) async fn run(
    hub: Hub,
    mut subscription: Subscription,
    mut commands: mpsc::UnboundedReceiver<Command>,
    halt: Shutdown,
) {
    let halted = halt.cancelled();
    tokio::pin!(halted);
    loop {
        tokio::select! {
            // Commands first: a subscriber is waiting on each Subscribe.
            biased;
            command = commands.recv() => match command {
                Some(Command::Subscribe { entry, reply }) => {
                    let result = subscription.subscribe(&entry.channel).await;
                    if let Ok(head) = &result {
                        entry.set_head(*head);
                    }
                    let _ = reply.send(result);
                }
                Some(Command::Unsubscribe(channel)) => {
                    // A new local subscriber may have re-created the channel
                    // already; its Subscribe command queues after this one.
                    subscription.unsubscribe(&channel);
                }
                None => break,
            },
            message = subscription.next() => match message {
                Some(BusMessage::Event(event)) => {
                    // Continue the publisher's trace, paying for it only
                    // when the span is recorded.
                    let span = tracing::debug_span!("fan_out", channel = %event.channel, id = %event.id);
                    if !span.is_disabled()
                        && let Some(trace) = &event.trace
                    {
                        pulse_runtime::set_parent_from_traceparent(&span, trace);
                    }
                    let _entered = span.enter();
                    hub.deliver(&event);
                }
                Some(BusMessage::Gap { channel, after }) => {
                    tracing::warn!(%channel, %after, "events lost on the bus; clients told to refetch");
                    hub.gap(&channel, after);
                }
                None => {
                    tracing::error!("the bus subscription ended; no more events will be delivered");
                    break;
                }
            },
            () = &mut halted => break,
        }
    }
}
