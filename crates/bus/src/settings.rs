//! The Redis settings block (`[redis]`), shared by every service that talks
//! to Redis, and the duration parser every settings block uses.
//!
//! [`RedisSettings`] is both what an operator writes and what
//! [`RedisBus::connect`](crate::RedisBus::connect) takes: one struct, one
//! set of defaults (its [`Default`]), whatever service reads it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::DEFAULT_HISTORY_LEN;

/// Serde helper for a [`Duration`](std::time::Duration) given as a number of milliseconds (`250`,
/// `"250"`) or a number with a unit (`"250ms"`, `"5s"`, `"1.5s"`, `"5m"`,
/// `"1h"`; also `us` and `d`). Use as
/// `#[serde(with = "pulse_runtime::duration")]` or
/// `#[serde(deserialize_with = "pulse_runtime::duration::deserialize")]`
/// (`pulse_runtime` re-exports this module).
///
/// The one duration parser of Pulse. It is not `humantime`'s: settings
/// files in use give bare milliseconds (`250`) and fractions (`1.5s`),
/// which `humantime` refuses.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    /// Why a duration string was refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("invalid duration {input:?}: {reason} (expected e.g. 250ms, 5s, 5m, 1h, or a number of milliseconds)")]
    pub struct DurationError {
        input: String,
        reason: &'static str,
    }

    /// Parses `"250ms"`, `"5s"`, `"1.5s"`, `"5m"`, `"1h"`, `"2d"`, `"100us"`,
    /// or bare milliseconds (`"250"`). Surrounding and inner spaces are allowed.
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let err = |reason| DurationError { input: input.to_owned(), reason };
        let s = input.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(err("no number"));
        }
        let value: f64 = number.parse().map_err(|_| err("bad number"))?;
        let seconds_per_unit = match unit.trim() {
            "" | "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(err("unknown unit")),
        };
        Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| err("out of range"))
    }

    /// Deserialises a duration, see the [module](self) docs.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 250ms, 5s or 5m, or a number of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &"a non-negative number of milliseconds"))
        }

        fn visit_f64<E: de::Error>(self, ms: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(ms / 1000.0)
                .map_err(|_| E::invalid_value(de::Unexpected::Float(ms), &"a non-negative number of milliseconds"))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse(s).map_err(E::custom)
        }
    }
}

/// The Redis bus and store (`[redis]`). Every field has a default, so a
/// local Redis needs no settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`; the credentials are never
    /// logged. For a Redis Cluster, the URL of any node, or a
    /// comma-separated list of several (seeds: the first that answers
    /// tells the cluster's topology). Whether it is a cluster is detected
    /// on connect (`INFO cluster`).
    pub url: String,
    /// Prefix of every key and channel name, so several installations can
    /// share one Redis.
    pub prefix: String,
    /// Connections in the command pool (publishing, history reads).
    pub pool_size: usize,
    /// Events kept per channel in its history stream: how far back a
    /// reconnecting client can resume. Every publisher keeps at least the
    /// largest value claimed by a live service (`{prefix}meta:history_len`),
    /// so one setting applies whoever publishes; a service that finds a
    /// larger value claimed warns.
    pub history_len: usize,
    /// How often the pub/sub connection is pinged to prove it still moves
    /// bytes: a partition or a failover can leave it open but silent.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ping_interval: Duration,
    /// How long a ping (or a subscribe) on the pub/sub connection may go
    /// unanswered before it is replaced and the gap filled from history.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ping_timeout: Duration,
    /// How long one Redis request (a command, a script, taking a pooled
    /// connection) may wait for its answer before it fails: the one deadline
    /// of every bus and store call. Services answer 503 then.
    #[serde(deserialize_with = "duration::deserialize")]
    pub request_timeout: Duration,
    /// Replicas that must have an event before its publish is answered
    /// (`WAIT <n> <request_timeout>` after the publish script). A publish
    /// that fewer replicas confirm in time fails with an unknown outcome
    /// (it is published, but a failover may lose it). Unset: 1 on a Redis
    /// Cluster, 0 (no wait) on a single server. 0 turns it off.
    pub replicas_to_ack: Option<usize>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "pulse:".to_owned(),
            pool_size: 16,
            history_len: DEFAULT_HISTORY_LEN,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            replicas_to_ack: None,
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("history_len", &self.history_len)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("replicas_to_ack", &self.replicas_to_ack)
            .finish()
    }
}

/// Replaces the credentials of `scheme://user:pass@host` with `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_keeps_host() {
        assert_eq!(redact_url("redis://user:pw@host:1/2"), "redis://[redacted]@host:1/2");
        assert_eq!(redact_url("redis://host:1/2"), "redis://host:1/2");
        assert_eq!(redact_url("redis://host/a@b"), "redis://host/a@b");
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = RedisSettings { url: "redis://:hunter2@redis:6379/0".into(), ..RedisSettings::default() };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2") && debug.contains("@redis:6379/0"), "{debug}");
    }

    #[test]
    fn durations_parse() {
        use duration::parse;
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse(" 30 s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("750").unwrap(), Duration::from_millis(750));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "5x", "-5s", "1.2.3s", "5 s s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
