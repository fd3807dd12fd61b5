//! Stream positions as a client sees them: `"<epoch>:<ms>-<seq>"`, or the
//! legacy `"<ms>-<seq>"` (unknown epoch). Positions are only comparable
//! within one epoch.

use std::cmp::Ordering;
use std::fmt;

/// A position that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position: {0:?}")]
pub struct BadPosition(pub String);

/// An event's position in its channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history's epoch; `None` for the legacy form.
    pub epoch: Option<String>,
    pub ms: u64,
    pub seq: u64,
}

impl Position {
    /// Parses `epoch:ms-seq` or `ms-seq`.
    ///
    /// # Errors
    /// When the text is neither form.
    pub fn parse(text: &str) -> Result<Self, BadPosition> {
        let bad = || BadPosition(text.chars().take(64).collect());
        let (epoch, offset) = match text.split_once(':') {
            Some((epoch, offset)) => {
                let valid = (1..=16).contains(&epoch.len())
                    && epoch.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
                if !valid {
                    return Err(bad());
                }
                (Some(epoch.to_string()), offset)
            }
            None => (None, text),
        };
        let (ms, seq) = offset.split_once('-').ok_or_else(bad)?;
        Ok(Self { epoch, ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }

    /// Whether both positions belong to the same history (legacy positions
    /// share the one unknown epoch).
    pub fn same_epoch(&self, other: &Self) -> bool {
        self.epoch == other.epoch
    }

    /// Order within one epoch; `None` across epochs, where positions say
    /// nothing about which came first.
    pub fn compare(&self, other: &Self) -> Option<Ordering> {
        self.same_epoch(other).then(|| (self.ms, self.seq).cmp(&(other.ms, other.seq)))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(epoch) = &self.epoch {
            write!(f, "{epoch}:")?;
        }
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        for text in ["k3f9x2ab:1763800000000-0", "1763800000000-12", "0-0", "a:0-0"] {
            assert_eq!(Position::parse(text).unwrap().to_string(), text);
        }
        let p = Position::parse("k3f9x2ab:17-3").unwrap();
        assert_eq!((p.epoch.as_deref(), p.ms, p.seq), (Some("k3f9x2ab"), 17, 3));
        assert_eq!(Position::parse("17-3").unwrap().epoch, None);
    }

    #[test]
    fn rejects_what_is_not_a_position() {
        for text in ["", "17", "17-", "-3", "x-1", "UPPER:1-0", ":1-0", "12345678901234567:1-0", "a:b:1-0"] {
            assert!(Position::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn compares_only_within_an_epoch() {
        let p = |t| Position::parse(t).unwrap();
        assert_eq!(p("e1:5-0").compare(&p("e1:4-9")), Some(Ordering::Greater));
        assert_eq!(p("e1:5-0").compare(&p("e1:5-1")), Some(Ordering::Less));
        assert_eq!(p("5-0").compare(&p("4-0")), Some(Ordering::Greater));
        assert_eq!(p("e1:5-0").compare(&p("e2:4-0")), None);
        assert_eq!(p("e1:5-0").compare(&p("4-0")), None);
    }
}
