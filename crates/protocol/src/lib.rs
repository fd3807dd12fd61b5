//! Wire types of Pulse, and nothing else: no I/O.
//!
//! - [`Event`]: the one envelope used on the bus, in history and to browsers,
//!   with its [`EventType`], [`Channel`] and [`Position`] (an [`Epoch`] and
//!   an [`Offset`]).
//! - [`probe`]: typed payloads of the Probe domain (reports, check results,
//!   alerts, decisions, agent status).
//! - [`browser`]: the browser protocol, both directions, its error codes and
//!   close codes.
//!
//! Every parser returns a typed error that says what is wrong with the input.

/// Serialises a type as its `Display` string and deserialises it with its
/// `FromStr`, reporting the parse error.
macro_rules! serde_via_str {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod browser;
mod channel;
mod error;
mod event;
mod offset;
mod position;
pub mod probe;
pub mod timestamp;

pub use browser::{ClientMessage, ControlMessage, ErrorCode, ServerFrame};
pub use channel::{
    AgentId, AgentIdError, Channel, ChannelError, ChannelPattern, ChannelPatternError, MAX_AGENT_ID_LEN,
    MAX_CHANNEL_LEN,
};
pub use error::ProtocolError;
pub use event::{Event, EventDraft, EventType, EventTypeError, MAX_EVENT_TYPE_LEN, RESERVED_TYPES};
pub use offset::{Offset, OffsetError};
pub use position::{Epoch, Position, PositionError};
