//! Redis key names and the Lua that publishes atomically, for this crate
//! and for other crates whose scripts change state and publish in one step.

use pulse_protocol::{Channel, Epoch, EventDraft};

/// Key and channel names under the configured prefix (default `pulse:`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// `{prefix}hist:{channel}`: the channel's capped history stream.
    pub fn hist(&self, channel: &Channel) -> String {
        format!("{}hist:{}", self.prefix, channel)
    }

    /// `{prefix}epoch:{channel}`: the [`Epoch`] of the channel's history.
    pub fn epoch(&self, channel: &Channel) -> String {
        format!("{}epoch:{}", self.prefix, channel)
    }

    /// `{prefix}idem:{key}`: an idempotency key of a publish.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{}", self.prefix, key)
    }

    /// `{prefix}ch:{channel}`: the channel's live pub/sub channel.
    pub fn live(&self, channel: &Channel) -> String {
        format!("{}ch:{}", self.prefix, channel)
    }

    /// `{prefix}{suffix}`: any other key of Pulse.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    /// The channel a live pub/sub channel name belongs to.
    pub fn channel_of_live(&self, live: &str) -> Option<Channel> {
        live.strip_prefix(&self.prefix)?.strip_prefix("ch:").and_then(|name| Channel::parse(name).ok())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Lua source defining `local function pulse_publish(hist_key, live_key,
/// epoch_key, epoch_candidate, maxlen, draft_json)`, which appends to the
/// capped history stream and publishes live in one step, starting a new
/// epoch when the history does not exist, and returns the new position
/// (`<epoch>:<stream id>`). Prepend it to a script that changes state and
/// publishes, so both happen atomically. Pass the keys of
/// [`Keys::hist`], [`Keys::live`] and [`Keys::epoch`], and an
/// [`epoch_candidate`].
pub const PUBLISH_FUNCTION: &str = include_str!("lua/publish_function.lua");

pub(crate) fn publish_script() -> redis::Script {
    with_publish_function(include_str!("lua/publish.lua"))
}

pub(crate) fn publish_once_script() -> redis::Script {
    with_publish_function(include_str!("lua/publish_once.lua"))
}

pub(crate) fn history_script() -> redis::Script {
    redis::Script::new(include_str!("lua/history.lua"))
}

pub(crate) fn history_len_script() -> redis::Script {
    redis::Script::new(include_str!("lua/history_len.lua"))
}

pub(crate) fn head_script() -> redis::Script {
    redis::Script::new(include_str!("lua/head.lua"))
}

fn with_publish_function(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PUBLISH_FUNCTION}\n{body}"))
}

/// A random epoch, for `pulse_publish`'s `epoch_candidate`: used only if the
/// channel's history turns out to need a new one.
pub fn epoch_candidate() -> String {
    Epoch::from_u64(rand::random::<u64>().max(1)).to_string()
}

/// The `draft_json` argument of `pulse_publish`: what history stores and
/// the live message carries after the id.
pub fn encode_draft(draft: &EventDraft) -> String {
    serde_json::to_string(draft).unwrap_or_else(|e| unreachable!("event draft serialises: {e}"))
}
