//! Where an event sits in a channel's history: the history's epoch and the
//! event's offset in it.

use std::fmt;
use std::str::FromStr;

use crate::Offset;

/// The identity of one channel history. It changes whenever the history is
/// lost or replaced (the memory bus restarted, Redis restarted empty or
/// failed over to an empty replica, the stream deleted), so that offsets of
/// the old history are never taken for offsets of the new one.
///
/// Printed as 1 to 13 lowercase base-36 digits (a non-zero `u64`).
/// [`Epoch::NONE`] stands for "no epoch known": an offset issued before
/// epochs existed, or a channel that has no history yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Epoch(u64);

impl Epoch {
    /// No epoch known.
    pub const NONE: Epoch = Epoch(0);

    /// The epoch whose number is `n` (`0` is [`Epoch::NONE`]).
    pub const fn from_u64(n: u64) -> Self {
        Self(n)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// Why a string is not an epoch or a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid position {input:?}: expected `<epoch>:<ms>-<seq>` (epoch: 1 to 13 lowercase base-36 digits) or `<ms>-<seq>`"
)]
pub struct PositionError {
    input: String,
}

impl PositionError {
    fn new(input: &str) -> Self {
        Self { input: input.chars().take(64).collect() }
    }
}

impl FromStr for Epoch {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=13).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !valid {
            return Err(PositionError::new(s));
        }
        match u64::from_str_radix(s, 36) {
            Ok(n) if n != 0 => Ok(Self(n)),
            _ => Err(PositionError::new(s)),
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut buf = [0u8; 13];
        let mut n = self.0;
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = DIGITS[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        f.write_str(std::str::from_utf8(&buf[start..]).unwrap_or_default())
    }
}

/// An event's position: the [`Epoch`] of its channel's history and its
/// [`Offset`] in it. This is the event `id` browsers remember and resume
/// from (`since`, SSE `Last-Event-ID`, the history API's `after`).
///
/// Printed `<epoch>:<ms>-<seq>` (`k3f9x2ab:1763800000000-0`); without an
/// epoch ([`Epoch::NONE`]) just `<ms>-<seq>`, the form offsets had before
/// epochs, which is still accepted and means "epoch unknown".
///
/// Positions of one epoch are ordered by offset. Positions of different
/// epochs are not comparable: use [`Position::follows`], not `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    pub epoch: Epoch,
    pub offset: Offset,
}

impl Position {
    /// "From the beginning", in any epoch.
    pub const ZERO: Position = Position { epoch: Epoch::NONE, offset: Offset::ZERO };

    pub const fn new(epoch: Epoch, offset: Offset) -> Self {
        Self { epoch, offset }
    }

    /// Whether this position starts before every event of any history.
    pub fn is_start(&self) -> bool {
        self.offset == Offset::ZERO
    }

    /// Whether an event at `self` is news to a reader that has seen
    /// everything up to `seen`: it is later in the same history, or it
    /// belongs to another history (which replaced the one `seen` is from).
    pub fn follows(&self, seen: &Position) -> bool {
        self.epoch != seen.epoch || self.offset > seen.offset
    }
}

impl From<Offset> for Position {
    /// The offset with no epoch known.
    fn from(offset: Offset) -> Self {
        Self { epoch: Epoch::NONE, offset }
    }
}

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, offset) = match s.split_once(':') {
            Some((epoch, offset)) => (epoch.parse()?, offset),
            None => (Epoch::NONE, s),
        };
        let offset = offset.parse::<Offset>().map_err(|_| PositionError::new(s))?;
        Ok(Self { epoch, offset })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch.is_none() { write!(f, "{}", self.offset) } else { write!(f, "{}:{}", self.epoch, self.offset) }
    }
}

serde_via_str!(Position);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_print_as_base36_and_parse_back() {
        for n in [1, 35, 36, 1_000_000, u64::MAX] {
            let epoch = Epoch::from_u64(n);
            assert_eq!(epoch.to_string().parse::<Epoch>().unwrap(), epoch);
        }
        assert_eq!(Epoch::from_u64(36).to_string(), "10");
        assert_eq!(Epoch::from_u64(u64::MAX).to_string(), "3w5e11264sgsf");
        for bad in ["", "0", "A1", "a-b", "3w5e11264sgsg", "12345678901234"] {
            assert!(bad.parse::<Epoch>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn positions_carry_their_epoch_and_accept_legacy_offsets() {
        let position: Position = "k3f9:1763800000000-7".parse().unwrap();
        assert_eq!(position.offset, Offset::new(1_763_800_000_000, 7));
        assert_eq!(position.epoch.to_string(), "k3f9");
        assert_eq!(position.to_string(), "k3f9:1763800000000-7");

        let legacy: Position = "1763800000000-7".parse().unwrap();
        assert_eq!(legacy, Position::new(Epoch::NONE, Offset::new(1_763_800_000_000, 7)));
        assert_eq!(legacy.to_string(), "1763800000000-7");

        for bad in ["", ":1-2", "k:1", "K3:1-2", "k3:1-2-3", "k3:", "a:b:1-2"] {
            let err = bad.parse::<Position>().unwrap_err();
            assert!(err.to_string().contains("expected `<epoch>:<ms>-<seq>`"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_event_of_another_epoch_always_follows() {
        let old = Position::new(Epoch::from_u64(1), Offset::new(1_000, 5));
        assert!(Position::new(Epoch::from_u64(1), Offset::new(1_000, 6)).follows(&old));
        assert!(!Position::new(Epoch::from_u64(1), Offset::new(1_000, 5)).follows(&old));
        assert!(!Position::new(Epoch::from_u64(1), Offset::new(999, 9)).follows(&old));
        // A new history whose clock is behind the old one's.
        assert!(Position::new(Epoch::from_u64(2), Offset::new(10, 0)).follows(&old));
    }

    #[test]
    fn serde_round_trip_as_string() {
        let position = Position::new(Epoch::from_u64(7), Offset::new(1, 2));
        let json = serde_json::to_string(&position).unwrap();
        assert_eq!(json, "\"7:1-2\"");
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), position);
        assert!(serde_json::from_str::<Position>("\"nope\"").is_err());
    }
}
