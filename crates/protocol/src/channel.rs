//! Channel names and the patterns that grant access to them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 128;

/// A validated channel name: 1 to 128 characters from `[A-Za-z0-9_.:-]`.
///
/// Cheap to clone (shared string), because the gateway hands the same
/// channel to many subscribers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(Arc<str>);

/// Why a string is not a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is {len} characters long; at most {MAX_CHANNEL_LEN} are allowed")]
    TooLong { len: usize },
    #[error(
        "channel name {name:?} has {found:?} at position {position}; only letters, digits and `_ . : -` are allowed"
    )]
    InvalidCharacter { name: String, found: char, position: usize },
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

impl Channel {
    /// Channel of agent status changes for the whole fleet.
    pub const AGENTS: &'static str = "agents";
    /// Channel of alerts raised and resolved.
    pub const ALERTS: &'static str = "alerts";
    /// Channel of decisions.
    pub const DECISIONS: &'static str = "decisions";
    /// Channel of every report received.
    pub const REPORTS: &'static str = "reports";

    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        let len = name.chars().count();
        if len > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong { len });
        }
        if let Some((position, found)) = name.chars().enumerate().find(|(_, c)| !allowed(*c)) {
            return Err(ChannelError::InvalidCharacter { name: name.to_owned(), found, position });
        }
        Ok(Self(Arc::from(name)))
    }

    /// `agents`, `alerts`, `decisions`, `reports`: names that are always valid.
    pub fn well_known(name: &'static str) -> Self {
        debug_assert!(Self::parse(name).is_ok(), "{name} is not a valid channel name");
        Self(Arc::from(name))
    }

    /// The per-agent channel `agent:{agent_id}`.
    pub fn for_agent(agent_id: &AgentId) -> Self {
        // An agent id is at most 64 characters of the channel alphabet, so the
        // result is always valid.
        Self(Arc::from(format!("agent:{}", agent_id.as_str())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Channel::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The longest agent id accepted.
pub const MAX_AGENT_ID_LEN: usize = 64;

/// A validated agent id: 1 to 64 characters from `[A-Za-z0-9_.:-]`, so that
/// `agent:{id}` is always a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(Arc<str>);

/// Why a string is not a valid agent id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdError {
    #[error("agent id is empty")]
    Empty,
    #[error("agent id is {len} characters long; at most {MAX_AGENT_ID_LEN} are allowed")]
    TooLong { len: usize },
    #[error("agent id {id:?} has {found:?} at position {position}; only letters, digits and `_ . : -` are allowed")]
    InvalidCharacter { id: String, found: char, position: usize },
}

impl AgentId {
    pub fn parse(id: &str) -> Result<Self, AgentIdError> {
        if id.is_empty() {
            return Err(AgentIdError::Empty);
        }
        let len = id.chars().count();
        if len > MAX_AGENT_ID_LEN {
            return Err(AgentIdError::TooLong { len });
        }
        if let Some((position, found)) = id.chars().enumerate().find(|(_, c)| !allowed(*c)) {
            return Err(AgentIdError::InvalidCharacter { id: id.to_owned(), found, position });
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentId {
    type Err = AgentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for AgentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AgentId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A pattern that grants access to channels: an exact name (`alerts`), a
/// prefix ending in `*` (`agent:*`), or `*` for every channel.
///
/// Used for the channel claims of browser tokens and the channel limits of
/// publisher keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelPattern(String);

/// Why a string is not a valid channel pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel pattern {pattern:?}: expected a channel name, optionally ending in `*` (`agent:*`), or `*`")]
pub struct ChannelPatternError {
    pattern: String,
}

impl ChannelPattern {
    pub fn parse(pattern: &str) -> Result<Self, ChannelPatternError> {
        let err = || ChannelPatternError { pattern: pattern.chars().take(160).collect() };
        let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
        let prefix_ok = (prefix.is_empty() && pattern == "*") || Channel::parse(prefix).is_ok();
        if !prefix_ok {
            return Err(err());
        }
        Ok(Self(pattern.to_owned()))
    }

    pub fn matches(&self, channel: &Channel) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.as_str().starts_with(prefix),
            None => channel.as_str() == self.0,
        }
    }

    /// Whether any of `patterns` matches `channel`.
    pub fn any_matches(patterns: &[ChannelPattern], channel: &Channel) -> bool {
        patterns.iter().any(|p| p.matches(channel))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ChannelPattern {
    type Err = ChannelPatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ChannelPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for name in ["agents", "agent:web-01", "a", "x.y_z:1-2", &"c".repeat(128)] {
            assert_eq!(Channel::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_bad_names_saying_why() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        assert_eq!(Channel::parse(&"c".repeat(129)), Err(ChannelError::TooLong { len: 129 }));
        let err = Channel::parse("agent 1").unwrap_err();
        assert_eq!(err, ChannelError::InvalidCharacter { name: "agent 1".into(), found: ' ', position: 5 });
        assert!(err.to_string().contains("position 5"));
        assert!(Channel::parse("alerts*").is_err());
        assert!(Channel::parse("ünïcode").is_err());
    }

    #[test]
    fn deserialising_validates() {
        let ch: Channel = serde_json::from_str("\"agent:db-1\"").unwrap();
        assert_eq!(ch.as_str(), "agent:db-1");
        let err = serde_json::from_str::<Channel>("\"bad/name\"").unwrap_err();
        assert!(err.to_string().contains("only letters, digits"), "{err}");
    }

    #[test]
    fn agent_channel_is_always_valid() {
        let id = AgentId::parse(&"a".repeat(MAX_AGENT_ID_LEN)).unwrap();
        let ch = Channel::for_agent(&id);
        assert_eq!(Channel::parse(ch.as_str()).unwrap(), ch);
        assert!(AgentId::parse("").is_err());
        assert!(AgentId::parse(&"a".repeat(65)).is_err());
        assert!(AgentId::parse("web 1").is_err());
    }

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        let alerts = Channel::parse("alerts").unwrap();
        let agent = Channel::parse("agent:web-1").unwrap();
        let exact = ChannelPattern::parse("alerts").unwrap();
        let prefix = ChannelPattern::parse("agent:*").unwrap();
        let all = ChannelPattern::parse("*").unwrap();
        assert!(exact.matches(&alerts) && !exact.matches(&agent));
        assert!(prefix.matches(&agent) && !prefix.matches(&alerts));
        assert!(all.matches(&agent) && all.matches(&alerts));
        assert!(ChannelPattern::any_matches(&[exact, prefix], &agent));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["", "**", "a*b", "bad name*", "a/*"] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
