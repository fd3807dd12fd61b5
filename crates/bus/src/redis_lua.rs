//! Redis key names and the Lua that publishes atomically, for this crate
//! and for other crates whose scripts change state and publish in one step.

use pulse_protocol::{Channel, Epoch, EventDraft};

/// Key and channel names under the configured prefix (default `pulse:`).
///
/// Every key of a channel carries the channel's hash tag `{ch:<channel>}`,
/// so that on a Redis Cluster they all live in one hash slot (a script may
/// only touch keys of one slot) and the channel's live messages are
/// published on the master that holds its history. One layout serves both
/// deployments: on a single server the braces are just characters.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// `{prefix}{ch:<channel>}`: the channel's live (sharded) pub/sub
    /// channel, and the start of every key of the channel.
    pub fn live(&self, channel: &Channel) -> String {
        concat(&[&self.prefix, "{ch:", channel.as_str(), "}"])
    }

    /// `{prefix}{ch:<channel>}:{suffix}`: a key in the channel's hash slot,
    /// for state that a script changes together with the channel's history.
    pub fn channel_key(&self, channel: &Channel, suffix: &str) -> String {
        concat(&[&self.prefix, "{ch:", channel.as_str(), "}:", suffix])
    }

    /// `{prefix}{ch:<channel>}:hist`: the channel's capped history stream.
    pub fn hist(&self, channel: &Channel) -> String {
        self.channel_key(channel, "hist")
    }

    /// `{prefix}{ch:<channel>}:epoch`: the [`Epoch`] of the channel's history.
    pub fn epoch(&self, channel: &Channel) -> String {
        self.channel_key(channel, "epoch")
    }

    /// `{prefix}{ch:<channel>}:idem:{key}`: an idempotency key of a publish
    /// on `channel`, in the channel's slot so the publish script can check
    /// and record it.
    pub fn idempotency(&self, channel: &Channel, key: &str) -> String {
        self.channel_key(channel, &format!("idem:{key}"))
    }

    /// `{prefix}{suffix}`: any other key of Pulse.
    pub fn key(&self, suffix: &str) -> String {
        concat(&[&self.prefix, suffix])
    }

    /// The channel a live pub/sub channel name belongs to.
    pub fn channel_of_live(&self, live: &str) -> Option<Channel> {
        live.strip_prefix(&self.prefix)?
            .strip_prefix("{ch:")?
            .strip_suffix('}')
            .and_then(|name| Channel::parse(name).ok())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Lua source defining `local function pulse_publish(hist_key, live_key,
/// epoch_key, epoch_candidate, maxlen, draft_json)`, which appends to the
/// capped history stream and publishes live in one step, starting a new
/// epoch when the history does not exist, and returns the new position
/// (`<epoch>:<stream id>`). The live copy goes out with `SPUBLISH`
/// (sharded pub/sub: on a cluster, from the master of the channel's slot).
/// Prepend it to a script that changes state and
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

pub(crate) fn latest_script() -> redis::Script {
    redis::Script::new(include_str!("lua/latest.lua"))
}

pub(crate) fn head_script() -> redis::Script {
    redis::Script::new(include_str!("lua/head.lua"))
}

fn with_publish_function(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PUBLISH_FUNCTION}\n{body}"))
}

/// `parts` joined, in one allocation: key names are built for every
/// publish, and `format!` costs several times as much.
fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    joined
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_channel_is_in_its_slot() {
        let keys = Keys::new("pulse:");
        let ch = Channel::parse("agent:web-1").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(keys.live(&ch), "pulse:{ch:agent:web-1}");
        assert_eq!(keys.hist(&ch), "pulse:{ch:agent:web-1}:hist");
        assert_eq!(keys.epoch(&ch), "pulse:{ch:agent:web-1}:epoch");
        assert_eq!(keys.idempotency(&ch, "publish:k"), "pulse:{ch:agent:web-1}:idem:publish:k");
        let slot = crate::connection::slot(&keys.live(&ch));
        for key in [keys.hist(&ch), keys.epoch(&ch), keys.idempotency(&ch, "x")] {
            assert_eq!(crate::connection::slot(&key), slot, "{key}");
        }
        assert_eq!(keys.channel_of_live(&keys.live(&ch)), Some(ch));
        assert_eq!(keys.channel_of_live("other:{ch:a}"), None);
    }
}
