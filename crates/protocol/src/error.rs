//! Errors of parsing protocol input.

/// Input that is not a valid protocol message or envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, a missing or mistyped field, a bad value: `message` is
    /// serde's description, which names the field and position.
    #[error("malformed {what}: {message}")]
    Malformed { what: String, message: String },
    /// A message whose `type` the server does not know.
    #[error("unknown message type {0:?}; expected one of auth, subscribe, unsubscribe, refresh, ping")]
    UnknownType(String),
    /// A JSON object without a string `type` field.
    #[error("message has no \"type\" field")]
    MissingType,
    /// A `channel` field that is not a valid channel name (see
    /// [`Channel::parse`](crate::Channel::parse)).
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
}

impl ProtocolError {
    pub(crate) fn malformed(what: &str, err: &serde_json::Error) -> Self {
        Self::Malformed { what: what.to_owned(), message: err.to_string() }
    }
}
