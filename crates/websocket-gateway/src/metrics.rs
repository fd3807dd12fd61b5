//! The gateway's Prometheus metrics (through the `metrics` facade; the
//! recorder is installed by the binary, see `pulse_runtime::install_metrics`).
//!
//! Handles are resolved once and kept, so the hot path pays an atomic add,
//! not a registry lookup; per-delivery counts are added once per event.

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Open connections, by `transport` (`ws`, `sse`).
pub const CONNECTIONS: &str = "pulse_gateway_connections";
/// Local subscriptions (connection × channel).
pub const SUBSCRIPTIONS: &str = "pulse_gateway_subscriptions";
/// Channels subscribed on the bus by this instance.
pub const CHANNELS: &str = "pulse_gateway_channels";
/// Events received from the bus.
pub const EVENTS_IN: &str = "pulse_gateway_events_in_total";
/// Event deliveries queued to clients.
pub const EVENTS_OUT: &str = "pulse_gateway_events_out_total";
/// Bytes of event deliveries queued to clients.
pub const BYTES_OUT: &str = "pulse_gateway_bytes_out_total";
/// Clients closed because their queue overflowed (4000).
pub const SLOW_CLOSES: &str = "pulse_gateway_slow_client_closes_total";
/// Resumes (`subscribe` with `since`), by `recovered`.
pub const REPLAYS: &str = "pulse_gateway_replays_total";
/// Events sent from history during resumes.
pub const REPLAYED_EVENTS: &str = "pulse_gateway_replayed_events_total";
/// Connections refused at the upgrade, by `reason`.
pub const REJECTED: &str = "pulse_gateway_rejected_connections_total";
/// Connections closed by the server, by `code`.
pub const CLOSES: &str = "pulse_gateway_closes_total";
/// Connections ended, by `transport`, `by` (`client`, `server`) and `reason`.
pub const CONNECTIONS_CLOSED: &str = "pulse_gateway_connections_closed_total";
/// Seconds from the event's `ts` (set by the publisher) to its fan-out here.
pub const LATENCY: &str = "pulse_gateway_publish_to_send_seconds";

/// Resolved metric handles of the hot path.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) subscriptions: Gauge,
    pub(crate) channels: Gauge,
    pub(crate) events_in: Counter,
    pub(crate) events_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) latency: Histogram,
    pub(crate) slow_closes: Counter,
    pub(crate) replayed_events: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        describe_gauge!(CONNECTIONS, "Open client connections, by transport");
        describe_gauge!(SUBSCRIPTIONS, "Local subscriptions (connection x channel)");
        describe_gauge!(CHANNELS, "Channels subscribed on the bus");
        describe_counter!(EVENTS_IN, "Events received from the bus");
        describe_counter!(EVENTS_OUT, "Event deliveries queued to clients");
        describe_counter!(BYTES_OUT, "Bytes of event deliveries queued to clients");
        describe_counter!(SLOW_CLOSES, "Clients closed for falling behind (4000)");
        describe_counter!(REPLAYS, "Resumes from an offset, by recovered");
        describe_counter!(REPLAYED_EVENTS, "Events sent from history while resuming");
        describe_counter!(REJECTED, "Connections refused at the upgrade, by reason");
        describe_counter!(CLOSES, "Connections closed by the server, by close code");
        describe_counter!(CONNECTIONS_CLOSED, "Connections ended, by transport, by whom (client, server) and reason");
        describe_histogram!(LATENCY, metrics::Unit::Seconds, "Event ts to fan-out on this gateway");
        Self {
            subscriptions: gauge!(SUBSCRIPTIONS),
            channels: gauge!(CHANNELS),
            events_in: counter!(EVENTS_IN),
            events_out: counter!(EVENTS_OUT),
            bytes_out: counter!(BYTES_OUT),
            latency: histogram!(LATENCY),
            slow_closes: counter!(SLOW_CLOSES),
            replayed_events: counter!(REPLAYED_EVENTS),
        }
    }
}

pub(crate) fn connection_opened(transport: &'static str) {
    gauge!(CONNECTIONS, "transport" => transport).increment(1.0);
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClosedBy {
    /// A close frame from the client, or the client going away.
    Client,
    /// The gateway closed it (slow, heartbeat, token, drain, limits…).
    Server,
}

pub(crate) fn connection_closed(transport: &'static str, by: ClosedBy, reason: &'static str) {
    gauge!(CONNECTIONS, "transport" => transport).decrement(1.0);
    let by = match by {
        ClosedBy::Client => "client",
        ClosedBy::Server => "server",
    };
    counter!(CONNECTIONS_CLOSED, "transport" => transport, "by" => by, "reason" => reason).increment(1);
}

/// The `reason` label of a server close with WebSocket close `code`.
pub(crate) fn close_reason(code: u16) -> &'static str {
    use pulse_protocol::browser::close;
    match code {
        close::SLOW_CONSUMER => "slow_consumer",
        close::HEARTBEAT_TIMEOUT => "heartbeat_timeout",
        close::TOKEN_EXPIRED => "token_expired",
        close::UNAUTHORIZED => "unauthorized",
        close::SERVICE_RESTART => "drain",
        close::POLICY_VIOLATION => "policy_violation",
        close::MESSAGE_TOO_BIG => "message_too_big",
        close::TRY_AGAIN_LATER => "try_again_later",
        close::INTERNAL_ERROR => "internal_error",
        1002 => "protocol_error",
        1007 => "invalid_payload",
        _ => "other",
    }
}

pub(crate) fn rejected(reason: &'static str) {
    counter!(REJECTED, "reason" => reason).increment(1);
}

pub(crate) fn closed_with(code: u16) {
    counter!(CLOSES, "code" => code.to_string()).increment(1);
}

pub(crate) fn replay(recovered: bool) {
    counter!(REPLAYS, "recovered" => if recovered { "true" } else { "false" }).increment(1);
}
