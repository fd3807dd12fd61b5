//! The position of an event in its channel.

use std::fmt;
use std::str::FromStr;

/// An event's offset in its channel, printed and parsed as `<ms>-<seq>`.
///
/// This is the format of Redis stream ids, so the Redis bus uses stream ids
/// unchanged and the memory bus produces the same shape. Offsets are strictly
/// increasing within a channel; comparing two offsets compares their
/// positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    /// Milliseconds since the Unix epoch at which the event was appended.
    pub ms: u64,
    /// Position among the events appended in the same millisecond.
    pub seq: u64,
}

impl Offset {
    /// The offset before every event: "from the beginning".
    pub const ZERO: Offset = Offset { ms: 0, seq: 0 };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The smallest offset strictly greater than `self`.
    pub const fn successor(self) -> Self {
        if self.seq == u64::MAX { Self { ms: self.ms + 1, seq: 0 } } else { Self { ms: self.ms, seq: self.seq + 1 } }
    }
}

/// Why a string is not an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid offset {input:?}: expected `<ms>-<seq>`, two whole numbers joined by `-`")]
pub struct OffsetError {
    input: String,
}

impl FromStr for Offset {
    type Err = OffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || OffsetError { input: s.chars().take(64).collect() };
        let (ms, seq) = s.split_once('-').ok_or_else(err)?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(err());
        }
        Ok(Self { ms: ms.parse().map_err(|_| err())?, seq: seq.parse().map_err(|_| err())? })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

serde_via_str!(Offset);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_redis_stream_ids() {
        let offset: Offset = "1763800000000-7".parse().unwrap();
        assert_eq!(offset, Offset::new(1_763_800_000_000, 7));
        assert_eq!(offset.to_string(), "1763800000000-7");
    }

    #[test]
    fn orders_by_millisecond_then_sequence() {
        let a = Offset::new(5, 9);
        let b = Offset::new(6, 0);
        let c = Offset::new(6, 1);
        assert!(a < b && b < c);
        assert_eq!(a.successor(), Offset::new(5, 10));
        assert_eq!(Offset::new(5, u64::MAX).successor(), Offset::new(6, 0));
    }

    #[test]
    fn rejects_malformed_offsets_with_a_clear_message() {
        for bad in ["", "12", "12-", "-3", "a-1", "1-b", "1-2-3", "+1-2", "99999999999999999999-0"] {
            let err = bad.parse::<Offset>().unwrap_err();
            assert!(err.to_string().contains("expected `<ms>-<seq>`"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_round_trip_as_string() {
        let offset = Offset::new(1, 2);
        let json = serde_json::to_string(&offset).unwrap();
        assert_eq!(json, "\"1-2\"");
        assert_eq!(serde_json::from_str::<Offset>(&json).unwrap(), offset);
        assert!(serde_json::from_str::<Offset>("\"nope\"").is_err());
        assert!(serde_json::from_str::<Offset>("12").is_err());
    }
}
