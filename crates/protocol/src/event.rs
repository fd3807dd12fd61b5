//! The event envelope: one shape on the bus, in history and to the browser.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Channel, Position};

/// Types that control messages of the browser protocol use. No event may
/// carry one of them, so that a client can `switch (msg.type)` over every
/// frame it receives.
pub const RESERVED_TYPES: &[&str] = &[
    "welcome",
    "subscribed",
    "unsubscribed",
    "snapshot",
    "pong",
    "error",
    "auth",
    "subscribe",
    "unsubscribe",
    "refresh",
    "ping",
    "gap",
];

/// The longest event type accepted.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// An event type: 1 to 64 characters from `[a-z0-9_.:-]`, not one of
/// [`RESERVED_TYPES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(Arc<str>);

/// Why a string is not a valid event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    #[error("event type is empty")]
    Empty,
    #[error("event type is {len} characters long; at most {MAX_EVENT_TYPE_LEN} are allowed")]
    TooLong { len: usize },
    #[error("event type {name:?} has {found:?}; only lower-case letters, digits and `_ . : -` are allowed")]
    InvalidCharacter { name: String, found: char },
    #[error("event type {0:?} is reserved for control messages")]
    Reserved(String),
}

impl EventType {
    pub const REPORT_RECEIVED: &'static str = "report_received";
    pub const ALERT_TRIGGERED: &'static str = "alert_triggered";
    pub const ALERT_RESOLVED: &'static str = "alert_resolved";
    pub const DECISION_MADE: &'static str = "decision_made";
    pub const AGENT_STATUS_CHANGED: &'static str = "agent_status_changed";
    pub const PRESENCE_UPDATE: &'static str = "presence_update";

    pub fn parse(name: &str) -> Result<Self, EventTypeError> {
        if name.is_empty() {
            return Err(EventTypeError::Empty);
        }
        let len = name.chars().count();
        if len > MAX_EVENT_TYPE_LEN {
            return Err(EventTypeError::TooLong { len });
        }
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-');
        if let Some(found) = name.chars().find(|c| !ok(*c)) {
            return Err(EventTypeError::InvalidCharacter { name: name.to_owned(), found });
        }
        if RESERVED_TYPES.contains(&name) {
            return Err(EventTypeError::Reserved(name.to_owned()));
        }
        Ok(Self(Arc::from(name)))
    }

    /// One of the Probe domain's types (the constants on this type).
    pub fn well_known(name: &'static str) -> Self {
        debug_assert!(Self::parse(name).is_ok(), "{name} is not a valid event type");
        Self(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventType {
    type Err = EventTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EventType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An event as it travels everywhere: on the bus, in history, to browsers.
///
/// ```json
/// {"type":"alert_triggered","channel":"alerts","id":"k3f9x2ab:1763800000000-0",
///  "ts":"2026-11-22T10:00:00.123Z","data":{},"trace":"00-…-01"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub channel: Channel,
    /// The event's position in its channel (epoch and offset), assigned by
    /// the bus.
    pub id: Position,
    #[serde(with = "crate::timestamp")]
    pub ts: DateTime<Utc>,
    pub data: serde_json::Value,
    /// W3C `traceparent` of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// An event before the bus has placed it in a channel: what publishers hand
/// to [`publish`](https://docs.rs/pulse-bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "crate::timestamp")]
    pub ts: DateTime<Utc>,
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl EventDraft {
    /// A draft stamped with the current time and no trace.
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self { event_type, ts: crate::timestamp::now(), data, trace: None }
    }

    /// A draft whose data is a typed payload.
    pub fn from_payload<T: Serialize>(event_type: &'static str, payload: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::new(EventType::well_known(event_type), serde_json::to_value(payload)?))
    }

    pub fn with_trace(mut self, trace: Option<String>) -> Self {
        self.trace = trace;
        self
    }

    /// The event this draft becomes at `id` in `channel`.
    pub fn into_event(self, channel: Channel, id: Position) -> Event {
        Event { event_type: self.event_type, channel, id, ts: self.ts, data: self.data, trace: self.trace }
    }
}

impl Event {
    /// Parses an envelope, saying what is wrong with a malformed one.
    pub fn from_json(text: &str) -> Result<Self, crate::ProtocolError> {
        serde_json::from_str(text).map_err(|e| crate::ProtocolError::malformed("event", &e))
    }

    /// The envelope as JSON. Serialising an `Event` cannot fail: every field
    /// is a string or an already-valid JSON value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("event serialises: {e}"))
    }

    /// The data decoded as a typed payload.
    pub fn payload<T: for<'de> Deserialize<'de>>(&self) -> Result<T, crate::ProtocolError> {
        T::deserialize(&self.data).map_err(|e| crate::ProtocolError::malformed(self.event_type.as_str(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, Offset};

    fn sample() -> Event {
        Event {
            event_type: EventType::well_known(EventType::ALERT_TRIGGERED),
            channel: Channel::well_known(Channel::ALERTS),
            id: Position::new("k3f9x2ab".parse().unwrap(), Offset::new(1_763_800_000_000, 0)),
            ts: "2026-11-22T10:00:00.123Z".parse().unwrap(),
            data: serde_json::json!({"agent_id": "web-1"}),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    #[test]
    fn envelope_matches_the_design() {
        let json = sample().to_json();
        assert_eq!(
            json,
            r#"{"type":"alert_triggered","channel":"alerts","id":"k3f9x2ab:1763800000000-0","ts":"2026-11-22T10:00:00.123Z","data":{"agent_id":"web-1"},"trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
        );
        assert_eq!(Event::from_json(&json).unwrap(), sample());
    }

    #[test]
    fn trace_is_optional() {
        let mut event = sample();
        event.trace = None;
        let json = event.to_json();
        assert!(!json.contains("trace"));
        assert_eq!(Event::from_json(&json).unwrap(), event);
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        let err =
            Event::from_json(r#"{"type":"x","channel":"alerts","ts":"2026-11-22T10:00:00Z","data":{}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err =
            Event::from_json(r#"{"type":"x","channel":"no good","id":"1-0","ts":"2026-11-22T10:00:00Z","data":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("channel name"), "{err}");
        let err =
            Event::from_json(r#"{"type":"welcome","channel":"a","id":"1-0","ts":"2026-11-22T10:00:00Z","data":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        let err = Event::from_json("{not json").unwrap_err();
        assert!(err.to_string().starts_with("malformed event"), "{err}");
    }

    #[test]
    fn event_types_are_validated() {
        assert!(EventType::parse("deploy.finished").is_ok());
        assert_eq!(EventType::parse(""), Err(EventTypeError::Empty));
        assert!(matches!(EventType::parse("Upper"), Err(EventTypeError::InvalidCharacter { .. })));
        assert!(matches!(EventType::parse("pong"), Err(EventTypeError::Reserved(_))));
        assert!(matches!(EventType::parse(&"a".repeat(65)), Err(EventTypeError::TooLong { len: 65 })));
    }

    #[test]
    fn draft_becomes_event_at_an_offset() {
        let draft = EventDraft::new(EventType::parse("custom").unwrap(), serde_json::json!([1, 2]));
        let json = serde_json::to_string(&draft).unwrap();
        assert_eq!(serde_json::from_str::<EventDraft>(&json).unwrap(), draft);
        let id = Position::new(Epoch::from_u64(2), Offset::new(3, 4));
        let event = draft.clone().into_event(Channel::parse("c").unwrap(), id);
        assert_eq!(event.id, id);
        assert_eq!(event.data, draft.data);
    }
}
