//! The browser protocol: JSON text frames on `/ws` (and the same server
//! frames on `/sse`).

use serde::{Deserialize, Serialize};

use crate::{Channel, Event, Position, ProtocolError};
#[cfg(test)]
use crate::{Epoch, Offset};

/// A message from a browser to the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Present a JWT, first thing or later to replace one about to expire.
    Auth {
        token: String,
    },
    /// Receive a channel's events; with `since` (the `id` of the last event
    /// the client has), first replay what came after that position.
    Subscribe {
        channel: Channel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
    },
    Unsubscribe {
        channel: Channel,
    },
    /// Ask for a `snapshot` of the channel's current state.
    Refresh {
        channel: Channel,
    },
    /// Answered with `pong`, echoing `id` when given.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
}

const CLIENT_TYPES: &[&str] = &["auth", "subscribe", "unsubscribe", "refresh", "ping"];

impl ClientMessage {
    /// Parses a text frame. The bare text `ping` is a ping too.
    ///
    /// Errors distinguish a frame that is not JSON or misses fields
    /// ([`ProtocolError::Malformed`]) from one of a type the server does not
    /// know ([`ProtocolError::UnknownType`]), so the client is told which.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if text.trim() == "ping" {
            return Ok(Self::Ping { id: None });
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::malformed("message", &e))?;
        let kind = match value.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            _ => return Err(ProtocolError::MissingType),
        };
        if !CLIENT_TYPES.contains(&kind.as_str()) {
            return Err(ProtocolError::UnknownType(kind.chars().take(64).collect()));
        }
        // A bad channel name is its own error, not a malformed message.
        if let Some(serde_json::Value::String(name)) = value.get("channel")
            && let Err(err) = Channel::parse(name)
        {
            return Err(ProtocolError::InvalidChannel(err.to_string()));
        }
        serde_json::from_value(value).map_err(|e| ProtocolError::malformed(&format!("{kind} message"), &e))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("client message serialises: {e}"))
    }
}

/// What went wrong, in an `error` frame. Stable strings clients can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or a field missing or of the wrong type.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// A channel name that breaks the naming rules.
    InvalidChannel,
    /// No valid token where one is required, or a token that did not verify.
    Unauthorized,
    /// The token does not grant this channel.
    Forbidden,
    /// Too many messages per second; slow down.
    RateLimited,
    /// The per-connection subscription limit is reached.
    TooManySubscriptions,
    /// The channel is not subscribed (unsubscribe, refresh).
    NotSubscribed,
    /// The bus or store is unreachable; try again.
    Unavailable,
    /// A bug on the server side.
    Internal,
}

/// A control message from the gateway to a browser. Events are sent as
/// [`Event`] envelopes, whose types never collide with these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// First frame on every connection.
    Welcome {
        /// Unique per connection, for support and logs.
        connection_id: String,
        /// How often the server pings; a client that hears nothing for about
        /// twice this long should consider the server gone and reconnect.
        heartbeat_interval_ms: u64,
        /// Silence after which the server closes the client.
        client_timeout_ms: u64,
        /// Whether the connection is authenticated (or anonymous access is on).
        authenticated: bool,
    },
    /// A subscription is live. `offset` is the position of the last event
    /// the client has been sent (or the channel's head if nothing was
    /// replayed): the client continues from it. `recovered: true` promises
    /// that nothing after `since` is missing. `recovered: false` means the
    /// events after `since` cannot be replayed (history trimmed, replaced
    /// by a new epoch, or `since` never issued) and the client should
    /// refetch the state; `offset` is then the channel's head.
    Subscribed {
        channel: Channel,
        offset: Position,
        recovered: bool,
    },
    Unsubscribed {
        channel: Channel,
    },
    /// The current state of a channel, answering `refresh`.
    Snapshot {
        channel: Channel,
        /// Head position at the time of the snapshot: events after it follow.
        offset: Position,
        data: serde_json::Value,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
    },
}

impl ControlMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into(), channel: None }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("control message serialises: {e}"))
    }
}

/// Any frame a server sends: a control message or an event. This is what a
/// client (the benchmark, tests, a Rust consumer) parses.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Control(ControlMessage),
    Event(Event),
}

impl ServerFrame {
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ProtocolError::malformed("frame", &e))?;
        let kind = match value.get("type") {
            Some(serde_json::Value::String(kind)) => kind.as_str(),
            _ => return Err(ProtocolError::MissingType),
        };
        if crate::RESERVED_TYPES.contains(&kind) {
            serde_json::from_value(value)
                .map(Self::Control)
                .map_err(|e| ProtocolError::malformed("control message", &e))
        } else {
            serde_json::from_value(value).map(Self::Event).map_err(|e| ProtocolError::malformed("event", &e))
        }
    }
}

/// WebSocket close codes the gateway uses, and what a client should do.
///
/// 4000–4099 mean "reconnect and resume"; 4400–4499 mean "do not reconnect
/// until something changes" (such as a new token).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The client broke the WebSocket framing (1002, RFC 6455 §7.4.1).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8 (1007, RFC 6455 §7.4.1).
    pub const INVALID_DATA: u16 = 1007;
    /// The client kept sending garbage or broke the rules (1008, policy violation).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over the size limit (1009, message too big).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An unexpected server error (1011).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The instance is draining: reconnect (to another instance) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The instance is at its connection limit: reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client did not keep up with its events: reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 4000;
    /// The client was silent past the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The token expired and no fresh `auth` arrived in time: get a new
    /// token, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// Authentication is required and did not arrive or did not verify.
    pub const UNAUTHORIZED: u16 = 4403;

    /// Whether a client should reconnect (with backoff) after this code:
    /// the `reconnect` column of `proto-docs/close-codes.md` ("with a new
    /// token" is no: not without one). Codes the gateway does not send
    /// (1001, 1006, …) reconnect.
    pub fn should_reconnect(code: u16) -> bool {
        !matches!(code, PROTOCOL_ERROR | INVALID_DATA | POLICY_VIOLATION | MESSAGE_TOO_BIG)
            && !(4400..4500).contains(&code)
    }

    #[cfg(test)]
    mod tests {
        /// The table every client follows.
        const TABLE: &str = include_str!("../../../proto-docs/close-codes.md");

        /// `(code, reconnect column)` of each row of the close-code table.
        fn rows() -> Vec<(u16, String)> {
            TABLE
                .lines()
                .filter_map(|line| {
                    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                    let code = cells.get(1)?.parse::<u16>().ok()?;
                    Some((code, cells.get(5)?.to_string()))
                })
                .collect()
        }

        #[test]
        fn should_reconnect_answers_as_the_documented_table() {
            let rows = rows();
            assert!(rows.len() >= 12, "the table was not found: {rows:?}");
            for (code, reconnect) in rows {
                assert!(
                    ["yes", "no", "with a new token"].contains(&reconnect.as_str()),
                    "{code}: unknown answer {reconnect:?}"
                );
                assert_eq!(super::should_reconnect(code), reconnect == "yes", "close code {code}");
            }
            for code in [1001, 1006, 4002, 4099] {
                assert!(super::should_reconnect(code), "{code}");
            }
        }

        #[test]
        fn every_code_the_gateway_sends_is_in_the_table() {
            let documented: Vec<u16> = rows().into_iter().map(|(code, _)| code).collect();
            for code in [
                super::NORMAL,
                super::PROTOCOL_ERROR,
                super::INVALID_DATA,
                super::POLICY_VIOLATION,
                super::MESSAGE_TOO_BIG,
                super::INTERNAL_ERROR,
                super::SERVICE_RESTART,
                super::TRY_AGAIN_LATER,
                super::SLOW_CONSUMER,
                super::HEARTBEAT_TIMEOUT,
                super::TOKEN_EXPIRED,
                super::UNAUTHORIZED,
            ] {
                assert!(documented.contains(&code), "{code} is not in proto-docs/close-codes.md");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn client_messages_round_trip() {
        let messages = [
            ClientMessage::Auth { token: "t".into() },
            ClientMessage::Subscribe { channel: channel("alerts"), since: None },
            ClientMessage::Subscribe {
                channel: channel("agent:a"),
                since: Some(Position::new(Epoch::from_u64(9), Offset::new(5, 1))),
            },
            ClientMessage::Unsubscribe { channel: channel("alerts") },
            ClientMessage::Refresh { channel: channel("agents") },
            ClientMessage::Ping { id: None },
            ClientMessage::Ping { id: Some(json!(7)) },
        ];
        for message in messages {
            assert_eq!(ClientMessage::parse(&message.to_json()).unwrap(), message);
        }
    }

    #[test]
    fn client_wire_format_is_as_documented() {
        let parsed = ClientMessage::parse(r#"{"type":"subscribe","channel":"alerts","since":"17-0"}"#).unwrap();
        assert_eq!(
            parsed,
            ClientMessage::Subscribe { channel: channel("alerts"), since: Some(Offset::new(17, 0).into()) }
        );
        let parsed = ClientMessage::parse(r#"{"type":"subscribe","channel":"alerts","since":"a1:17-0"}"#).unwrap();
        let since = Position::new("a1".parse().unwrap(), Offset::new(17, 0));
        assert_eq!(parsed, ClientMessage::Subscribe { channel: channel("alerts"), since: Some(since) });
        assert_eq!(ClientMessage::parse("ping").unwrap(), ClientMessage::Ping { id: None });
        assert_eq!(ClientMessage::parse(" ping\n").unwrap(), ClientMessage::Ping { id: None });
    }

    #[test]
    fn bad_client_input_gets_a_specific_error() {
        assert!(matches!(ClientMessage::parse("{oops"), Err(ProtocolError::Malformed { .. })));
        assert_eq!(ClientMessage::parse(r#"{"channel":"a"}"#), Err(ProtocolError::MissingType));
        assert_eq!(ClientMessage::parse(r#"{"type":7}"#), Err(ProtocolError::MissingType));
        assert_eq!(ClientMessage::parse(r#"{"type":"dance"}"#), Err(ProtocolError::UnknownType("dance".into())));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","channel":"no spaces"}"#),
            Err(ProtocolError::InvalidChannel(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","channel":7}"#),
            Err(ProtocolError::Malformed { .. })
        ));
        let err = ClientMessage::parse(r#"{"type":"subscribe"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `channel`"), "{err}");
        let err = ClientMessage::parse(r#"{"type":"subscribe","channel":"a b"}"#).unwrap_err();
        assert!(err.to_string().contains("channel name"), "{err}");
        let err = ClientMessage::parse(r#"{"type":"subscribe","channel":"a","since":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid position"), "{err}");
        let err = ClientMessage::parse(r#"{"type":"subscribe","channel":"a","sinse":"1-0"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `sinse`"), "{err}");
    }

    #[test]
    fn server_frames_round_trip() {
        let controls = [
            ControlMessage::Welcome {
                connection_id: "c1".into(),
                heartbeat_interval_ms: 15_000,
                client_timeout_ms: 45_000,
                authenticated: true,
            },
            ControlMessage::Subscribed {
                channel: channel("alerts"),
                offset: Offset::new(1, 0).into(),
                recovered: true,
            },
            ControlMessage::Unsubscribed { channel: channel("alerts") },
            ControlMessage::Snapshot { channel: channel("agents"), offset: Position::ZERO, data: json!([]) },
            ControlMessage::Pong { id: Some(json!("x")) },
            ControlMessage::error(ErrorCode::Forbidden, "not allowed"),
            ControlMessage::Error {
                code: ErrorCode::InvalidChannel,
                message: "bad".into(),
                channel: Some(channel("a")),
            },
        ];
        for control in controls {
            let json = control.to_json();
            assert_eq!(ServerFrame::parse(&json).unwrap(), ServerFrame::Control(control), "{json}");
        }
        let event = crate::EventDraft::new(crate::EventType::parse("deploy").unwrap(), json!({"v": 2}))
            .into_event(channel("ops"), Offset::new(9, 9).into());
        assert_eq!(ServerFrame::parse(&event.to_json()).unwrap(), ServerFrame::Event(event));
    }

    #[test]
    fn error_codes_are_snake_case_strings() {
        let json = ControlMessage::error(ErrorCode::TooManySubscriptions, "max 100").to_json();
        assert_eq!(json, r#"{"type":"error","code":"too_many_subscriptions","message":"max 100"}"#);
    }

    #[test]
    fn close_codes_say_whether_to_reconnect() {
        assert!(close::should_reconnect(close::SERVICE_RESTART));
        assert!(close::should_reconnect(close::SLOW_CONSUMER));
        assert!(close::should_reconnect(close::TRY_AGAIN_LATER));
        assert!(!close::should_reconnect(close::TOKEN_EXPIRED));
        assert!(!close::should_reconnect(close::POLICY_VIOLATION));
    }
}
