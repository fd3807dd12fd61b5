//! The state of the link that carries live events, for `/readyz` and
//! metrics.

use std::time::Duration;

use tokio::sync::watch;

/// Whether live events can reach this process now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected, and answering its liveness check in time.
    Up,
    /// Disconnected, or silent past its deadline: reconnecting. Events
    /// published meanwhile are filled from history once it is back.
    Down,
}

/// The link's state as the pub/sub task last saw it, mirrored in the
/// `pulse_bus_link_up` gauge (1 up, 0 down).
#[derive(Debug)]
pub(crate) struct Link {
    up: watch::Sender<bool>,
}

impl Link {
    pub(crate) fn new() -> Self {
        metrics::describe_gauge!(
            "pulse_bus_link_up",
            "1 while the Redis pub/sub link carrying live events is up, else 0"
        );
        metrics::describe_counter!(
            "pulse_bus_reconnects_total",
            "Times the Redis pub/sub link was re-established after it dropped or went silent"
        );
        metrics::describe_counter!(
            "pulse_bus_errors_total",
            "Redis requests of the bus that failed, by operation (publish, history, head, latest, check, subscribe, ping)"
        );
        metrics::gauge!("pulse_bus_link_up").set(0.0);
        Self { up: watch::Sender::new(false) }
    }

    pub(crate) fn set(&self, state: LinkState) {
        let up = state == LinkState::Up;
        self.up.send_replace(up);
        metrics::gauge!("pulse_bus_link_up").set(if up { 1.0 } else { 0.0 });
    }

    pub(crate) fn get(&self) -> LinkState {
        if *self.up.borrow() { LinkState::Up } else { LinkState::Down }
    }

    /// Waits up to `deadline` for the link to be up; returns whether it is.
    pub(crate) async fn wait_up(&self, deadline: Duration) -> bool {
        let mut up = self.up.subscribe();
        tokio::time::timeout(deadline, up.wait_for(|up| *up)).await.is_ok_and(|r| r.is_ok())
    }
}

/// Counts a failed Redis request of `op` in `pulse_bus_errors_total`.
pub(crate) fn count_error(op: &'static str) {
    metrics::counter!("pulse_bus_errors_total", "op" => op).increment(1);
}

/// Counts a re-established pub/sub link in `pulse_bus_reconnects_total`.
pub(crate) fn count_reconnect() {
    metrics::counter!("pulse_bus_reconnects_total").increment(1);
}
