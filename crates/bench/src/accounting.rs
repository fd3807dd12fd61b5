//! Loss and duplicate accounting by sequence number, and the fast scan of an
//! event frame for the fields the publisher put in `data`.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The set of sequence numbers one client received, as a growable bitset.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
    unique: u64,
    duplicates: u64,
}

impl SeqSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `seq`; returns `false` when it was already there (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            self.duplicates += 1;
            return false;
        };
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (seq % 64);
        if self.bits[word] & mask != 0 {
            self.duplicates += 1;
            return false;
        }
        self.bits[word] |= mask;
        self.unique += 1;
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        usize::try_from(seq / 64)
            .ok()
            .and_then(|word| self.bits.get(word))
            .is_some_and(|bits| bits & (1u64 << (seq % 64)) != 0)
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Receipts of a sequence number already received.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// How many of `expected` were never received.
    pub fn missing<I: IntoIterator<Item = u64>>(&self, expected: I) -> u64 {
        expected.into_iter().filter(|&seq| !self.contains(seq)).count() as u64
    }

    /// How many received sequence numbers are not among `expected`
    /// (delivered to a client that did not subscribe to their channel).
    pub fn unexpected(&self, expected: impl Fn(u64) -> bool) -> u64 {
        let mut n = 0;
        for (word, &bits) in self.bits.iter().enumerate() {
            let mut rest = bits;
            while rest != 0 {
                let bit = u64::from(rest.trailing_zeros());
                rest &= rest - 1;
                if !expected(word as u64 * 64 + bit) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Fields the publisher puts in an event's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Global sequence number of the publish.
    pub seq: u64,
    /// Wall-clock microseconds since the Unix epoch when publishing started.
    pub sent_us: u64,
}

/// Markers the payload carries: `"bseq":N` and `"bts":MICROS`.
pub const SEQ_KEY: &str = "\"bseq\":";
pub const TS_KEY: &str = "\"bts\":";

/// Reads the stamp out of a frame's text without parsing the JSON: the
/// benchmark client has to keep up with a million frames a second on the
/// same cores as the server. `None` for frames that carry no stamp
/// (control messages).
pub fn scan_stamp(text: &str) -> Option<Stamp> {
    // The load generator scans a million frames a second on the cores the
    // server uses too: precompiled SIMD searches, and `bts` looked for
    // after `bseq`, where it is (keys are sorted), before the whole text.
    static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SEQ_KEY));
    static TS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(TS_KEY));
    let bytes = text.as_bytes();
    let (seq, end) = number_after(bytes, &SEQ, 0)?;
    let (sent_us, _) = number_after(bytes, &TS, end).or_else(|| number_after(bytes, &TS, 0))?;
    Some(Stamp { seq, sent_us })
}

/// The number right after the first `key` at or after `from`, and where it ends.
fn number_after(text: &[u8], key: &Finder<'_>, from: usize) -> Option<(u64, usize)> {
    let start = from + key.find(text.get(from..)?)? + key.needle().len();
    let digits = text[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = text[start..start + digits].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((value, start + digits))
}

/// The `data` of a benchmark event: stamp plus padding up to about `size`
/// bytes of envelope.
pub fn payload(seq: u64, sent_us: u64, pad: usize) -> serde_json::Value {
    serde_json::json!({ "bseq": seq, "bts": sent_us, "pad": "x".repeat(pad) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_unique_duplicates_and_missing() {
        let mut set = SeqSet::new();
        for seq in [0, 1, 2, 2, 5, 130, 1, 130] {
            set.insert(seq);
        }
        assert_eq!(set.unique(), 5);
        assert_eq!(set.duplicates(), 3);
        assert_eq!(set.missing(0..6), 2); // 3 and 4
        assert_eq!(set.unexpected(|s| s < 6), 1); // 130
        assert!(set.contains(130));
        assert!(!set.contains(129));
        assert!(!set.contains(10_000));
    }

    #[test]
    fn out_of_order_is_not_loss() {
        let mut set = SeqSet::new();
        for seq in (0..1000).rev() {
            assert!(set.insert(seq));
        }
        assert_eq!(set.missing(0..1000), 0);
        assert_eq!(set.duplicates(), 0);
    }

    #[test]
    fn scans_stamp_from_gateway_and_raw_frames() {
        let data = payload(42, 1_763_800_000_000_123, 3);
        let event = format!(r#"{{"type":"bench","channel":"b","id":"1-0","ts":"x","data":{data}}}"#);
        assert_eq!(scan_stamp(&event), Some(Stamp { seq: 42, sent_us: 1_763_800_000_000_123 }));
        let raw = format!("1-0 {{\"type\":\"bench\",\"data\":{data}}}");
        assert_eq!(scan_stamp(&raw).unwrap().seq, 42);
        assert_eq!(scan_stamp(r#"{"type":"subscribed","channel":"b"}"#), None);
        assert_eq!(scan_stamp(r#"{"bseq":,"bts":1}"#), None);
        // `bts` before `bseq` is found too.
        assert_eq!(scan_stamp(r#"{"bts":5,"bseq":6}"#), Some(Stamp { seq: 6, sent_us: 5 }));
    }
}
