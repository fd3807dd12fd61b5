//! The verdict: did every acknowledged event reach every client exactly
//! once and in order, or was the client told it must refetch?
//!
//! The publisher of a channel publishes its events one after another, each
//! numbered `n = 1, 2, …` (carried in the event's data with its idempotency
//! key), and records which were acknowledged with a 2xx and under which id.
//! Each client records, per channel and in arrival order, what it sent and
//! got ([`Seen`]). From both, for one client and one channel:
//!
//! - an acknowledged event delivered once is **delivered**;
//! - an acknowledged event never delivered is **told** when a notice
//!   (`subscribed {recovered: false}` or `gap`) covers it, that is, arrived
//!   after the last event delivered before it and before the first event
//!   delivered after it; otherwise it is a **silent loss**;
//! - an id delivered twice is a **duplicate delivery**;
//! - an acknowledged event arriving after a later one (by `n`), or an id not
//!   after the previous one of the same epoch, is **out of order**.
//!
//! A `subscribed {recovered: false}` answering a resume covers everything
//! that resume replayed: replayed events precede the `subscribed`, so the
//! notice is moved to where the resume began.
//!
//! Over all clients, one `n` seen (or acknowledged) under two different ids
//! is a **duplicate publish**: a retry with the same idempotency key
//! published the event again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use pulse_protocol::{Epoch, Position};

/// What a client sent or got on one channel, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The client sent `subscribe` (with `since` when resuming).
    Subscribe,
    /// `subscribed {recovered}`: the answer to a subscribe, or, when none is
    /// pending, a notice that events were lost.
    Subscribed { recovered: bool },
    /// A `gap` frame: events were lost.
    Gap,
    /// An event of the load: the publisher's number and the event's id.
    Event { n: u64, id: String },
    /// The connection ended.
    Closed,
}

/// What the publisher of one channel got acknowledged: `n` to the id the
/// 2xx answer carried (none for a `duplicate: true` answer without one).
pub type Acknowledged = BTreeMap<u64, Option<String>>;

/// The accounting of one client on one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged events the client was owed.
    pub acknowledged: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// Of those, not delivered but covered by a notice.
    pub told: u64,
    /// Of those, neither delivered nor covered by a notice: the `n`s.
    pub silent: Vec<u64>,
    /// Ids delivered more than once (each extra copy counts).
    pub duplicate_deliveries: u64,
    /// Events delivered out of order.
    pub out_of_order: u64,
    /// Events delivered whose publish was never acknowledged (allowed: the
    /// publisher gave up, but the publish may have happened).
    pub unacknowledged: u64,
    /// Notices received (`recovered: false` or `gap`).
    pub notices: u64,
}

impl Verdict {
    /// Nothing lost silently, duplicated or reordered.
    pub fn is_truthful(&self) -> bool {
        self.silent.is_empty() && self.duplicate_deliveries == 0 && self.out_of_order == 0
    }

    /// Adds `other`'s counts to these (silent `n`s are concatenated).
    pub fn add(&mut self, other: &Self) {
        self.acknowledged += other.acknowledged;
        self.delivered += other.delivered;
        self.told += other.told;
        self.silent.extend_from_slice(&other.silent);
        self.duplicate_deliveries += other.duplicate_deliveries;
        self.out_of_order += other.out_of_order;
        self.unacknowledged += other.unacknowledged;
        self.notices += other.notices;
    }
}

/// The stream reduced to events and notices, with each resume's notice
/// moved before what that resume replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step<'a> {
    Notice,
    Event { n: u64, id: &'a str },
}

fn steps(seen: &[Seen]) -> Vec<Step<'_>> {
    let mut out = Vec::with_capacity(seen.len());
    // Events of a resume whose answer has not arrived yet.
    let mut replay: Option<Vec<Step<'_>>> = None;
    for item in seen {
        match item {
            Seen::Subscribe => {
                if let Some(held) = replay.take() {
                    out.extend(held);
                }
                replay = Some(Vec::new());
            }
            Seen::Subscribed { recovered } => match replay.take() {
                Some(held) => {
                    if !recovered {
                        out.push(Step::Notice);
                    }
                    out.extend(held);
                }
                None if !recovered => out.push(Step::Notice),
                None => {}
            },
            Seen::Gap => {
                if let Some(held) = replay.take() {
                    out.extend(held);
                }
                out.push(Step::Notice);
            }
            Seen::Event { n, id } => {
                let step = Step::Event { n: *n, id };
                match replay.as_mut() {
                    Some(held) => held.push(step),
                    None => out.push(step),
                }
            }
            Seen::Closed => {
                if let Some(held) = replay.take() {
                    out.extend(held);
                }
            }
        }
    }
    if let Some(held) = replay {
        out.extend(held);
    }
    out
}

/// The verdict for one client on one channel.
pub fn verdict(acknowledged: &Acknowledged, seen: &[Seen]) -> Verdict {
    let mut v = Verdict { acknowledged: acknowledged.len() as u64, ..Verdict::default() };
    let mut ids = HashSet::new();
    let mut delivered = HashSet::new();
    // (last acknowledged n before, first after, whether a notice came between)
    let mut spans: Vec<(u64, u64, bool)> = Vec::new();
    let mut high = 0u64;
    let mut notice = false;
    let mut last_position: Option<Position> = None;
    for step in steps(seen) {
        let (n, id) = match step {
            Step::Notice => {
                v.notices += 1;
                notice = true;
                continue;
            }
            Step::Event { n, id } => (n, id),
        };
        if !ids.insert(id) {
            v.duplicate_deliveries += 1;
            continue;
        }
        let position = id.parse::<Position>().ok();
        // Within one epoch an id must be after the previous one; positions
        // of different epochs are not compared.
        let regressed = matches!((&last_position, &position), (Some(last), Some(now)) if !now.follows(last));
        if position.is_some() {
            last_position = position;
        }
        if !delivered.insert(n) {
            // The same publish under another id: a duplicate publish,
            // counted over all clients by [`duplicate_publishes`].
            continue;
        }
        if !acknowledged.contains_key(&n) {
            v.unacknowledged += 1;
            if regressed {
                v.out_of_order += 1;
            }
            continue;
        }
        v.delivered += 1;
        if n < high || regressed {
            v.out_of_order += 1;
            continue;
        }
        spans.push((high, n, notice));
        high = n;
        notice = false;
    }
    spans.push((high, u64::MAX, notice));
    for &n in acknowledged.keys().filter(|n| !delivered.contains(*n)) {
        // Spans are ordered and disjoint: the one around `n` decides.
        let at = spans.partition_point(|&(_, after, _)| after < n);
        match spans.get(at) {
            Some(&(before, _, true)) if before < n => v.told += 1,
            _ => v.silent.push(n),
        }
    }
    v
}

/// Publishes seen under more than one id, over the acknowledgements and
/// every witness of a channel (each client's events, the final history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Republished {
    /// Numbers seen under two ids of one epoch (or of no known epoch): a
    /// retry published the event again. A failure.
    pub twice: BTreeMap<u64, BTreeSet<String>>,
    /// Numbers seen under ids of different epochs only: the history, and
    /// the idempotency keys with it, were lost between the first publish
    /// and its retry (Redis restarted empty, standalone restarted), so the
    /// retry could not be recognised. Reported, not a failure.
    pub across_epochs: BTreeMap<u64, BTreeSet<String>>,
}

/// Finds the publishes seen under more than one id.
pub fn duplicate_publishes<'a>(
    acknowledged: &Acknowledged,
    witnesses: impl IntoIterator<Item = &'a [Seen]>,
) -> Republished {
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (n, id) in acknowledged {
        if let Some(id) = id {
            ids.entry(*n).or_default().insert(id.clone());
        }
    }
    for log in witnesses {
        for item in log {
            if let Seen::Event { n, id } = item {
                ids.entry(*n).or_default().insert(id.clone());
            }
        }
    }
    let mut out = Republished::default();
    for (n, ids) in ids.into_iter().filter(|(_, ids)| ids.len() > 1) {
        if one_epoch_twice(&ids) {
            out.twice.insert(n, ids);
        } else {
            out.across_epochs.insert(n, ids);
        }
    }
    out
}

/// Whether two of `ids` belong to the same epoch (unparseable and legacy
/// ids count as one unknown epoch: the strict reading).
fn one_epoch_twice(ids: &BTreeSet<String>) -> bool {
    let mut epochs = HashSet::new();
    ids.iter().any(|id| !epochs.insert(id.parse::<Position>().map_or(Epoch::NONE, |p| p.epoch)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(n: u64) -> Seen {
        Seen::Event { n, id: format!("e1:{n}-0") }
    }

    fn ev_id(n: u64, id: &str) -> Seen {
        Seen::Event { n, id: id.into() }
    }

    fn acked(ns: impl IntoIterator<Item = u64>) -> Acknowledged {
        ns.into_iter().map(|n| (n, Some(format!("e1:{n}-0")))).collect()
    }

    fn sub(recovered: bool) -> Seen {
        Seen::Subscribed { recovered }
    }

    #[test]
    fn everything_once_in_order_is_truthful() {
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(2), ev(3)];
        let v = verdict(&acked(1..=3), &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!((v.acknowledged, v.delivered, v.told, v.notices), (3, 3, 0, 0));
    }

    #[test]
    fn a_missing_event_without_notice_is_a_silent_loss() {
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(3)];
        let v = verdict(&acked(1..=3), &seen);
        assert_eq!(v.silent, vec![2]);
        assert!(!v.is_truthful());
    }

    #[test]
    fn missing_events_at_the_end_are_silent_losses_unless_told() {
        let seen = [Seen::Subscribe, sub(true), ev(1)];
        assert_eq!(verdict(&acked(1..=3), &seen).silent, vec![2, 3]);
        let seen = [Seen::Subscribe, sub(true), ev(1), Seen::Gap];
        let v = verdict(&acked(1..=3), &seen);
        assert_eq!((v.told, v.silent.len()), (2, 0));
    }

    #[test]
    fn a_resume_answered_recovered_true_after_a_loss_is_silent() {
        // The restart case: 2 and 3 acknowledged while the client was away,
        // then lost; the resume promises nothing is missing.
        let seen = [Seen::Subscribe, sub(true), ev(1), Seen::Closed, Seen::Subscribe, ev(4), sub(true), ev(5)];
        assert_eq!(verdict(&acked(1..=5), &seen).silent, vec![2, 3]);
    }

    #[test]
    fn a_resume_answered_recovered_false_covers_what_it_replayed_and_before() {
        // Replayed events precede `subscribed`: the notice covers the hole
        // in front of them.
        let seen = [Seen::Subscribe, sub(true), ev(1), Seen::Closed, Seen::Subscribe, ev(4), sub(false), ev(5)];
        let v = verdict(&acked(1..=5), &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!((v.delivered, v.told, v.notices), (3, 2, 1));
    }

    #[test]
    fn a_notice_covers_only_the_hole_it_stands_in() {
        // Told about the hole before 5, not about the one before 3.
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(3), ev(4), Seen::Gap, ev(6)];
        let v = verdict(&acked(1..=6), &seen);
        assert_eq!(v.silent, vec![2]);
        assert_eq!(v.told, 1);
        // A notice that comes after the events that followed the hole is late.
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(3), sub(false)];
        let v = verdict(&acked(1..=3), &seen);
        assert_eq!(v.silent, vec![2]);
    }

    #[test]
    fn a_mid_stream_recovered_false_is_a_notice() {
        let seen = [Seen::Subscribe, sub(true), ev(1), sub(false), ev(4)];
        let v = verdict(&acked(1..=4), &seen);
        assert_eq!((v.told, v.notices), (2, 1));
        assert!(v.is_truthful());
    }

    #[test]
    fn the_same_id_twice_is_a_duplicate_delivery() {
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(2), Seen::Closed, Seen::Subscribe, ev(2), sub(true), ev(3)];
        let v = verdict(&acked(1..=3), &seen);
        assert_eq!((v.duplicate_deliveries, v.delivered), (1, 3));
        assert!(!v.is_truthful());
    }

    #[test]
    fn reordering_is_detected_by_number_and_by_position() {
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(3), ev(2)];
        let v = verdict(&acked(1..=3), &seen);
        assert_eq!((v.out_of_order, v.delivered, v.silent.len()), (1, 3, 0));
        // Numbers in order but positions going back within one epoch.
        let seen = [Seen::Subscribe, sub(true), ev_id(1, "e1:9-0"), ev_id(2, "e1:8-0")];
        let mut ack = acked(1..=2);
        ack.insert(1, None);
        ack.insert(2, None);
        assert_eq!(verdict(&ack, &seen).out_of_order, 1);
    }

    #[test]
    fn a_new_epoch_may_start_anywhere() {
        // After a loss the history restarts; its positions are not comparable
        // with the old ones, and the notice says what was lost.
        let seen = [
            Seen::Subscribe,
            sub(true),
            ev_id(1, "e1:900-0"),
            Seen::Closed,
            Seen::Subscribe,
            sub(false),
            ev_id(3, "e2:5-0"),
            ev_id(4, "e2:6-0"),
        ];
        let ack: Acknowledged = (1..=4).map(|n| (n, None)).collect();
        let v = verdict(&ack, &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!((v.delivered, v.told), (3, 1));
        // Legacy positions are one epoch: going back is a reorder.
        let seen = [ev_id(1, "900-0"), ev_id(2, "5-0")];
        assert_eq!(verdict(&ack, &seen).out_of_order, 1);
    }

    #[test]
    fn unacknowledged_events_are_allowed_but_counted() {
        // 2 was given up on by the publisher yet published; 3 was not
        // published at all. Neither is owed.
        let mut ack = acked([1, 4]);
        ack.remove(&2);
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(2), ev(4)];
        let v = verdict(&ack, &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!((v.acknowledged, v.delivered, v.unacknowledged), (2, 2, 1));
    }

    #[test]
    fn an_unfinished_resume_still_counts_what_it_replayed() {
        let seen = [Seen::Subscribe, sub(true), ev(1), Seen::Closed, Seen::Subscribe, ev(2), Seen::Closed];
        let v = verdict(&acked(1..=2), &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!(v.delivered, 2);
    }

    #[test]
    fn one_number_under_two_ids_is_a_duplicate_publish() {
        let ack = acked(1..=3);
        let a: Vec<Seen> = vec![ev(1), ev(2), ev_id(2, "e1:7-0"), ev(3)];
        let b: Vec<Seen> = vec![ev(1), ev(2), ev(3)];
        let dups = duplicate_publishes(&ack, [a.as_slice(), b.as_slice()]).twice;
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[&2].len(), 2);
        // Acknowledged under one id, delivered under another.
        let mut ack = acked(1..=1);
        ack.insert(1, Some("e1:5-0".into()));
        let c = vec![ev(1)];
        assert_eq!(duplicate_publishes(&ack, [c.as_slice()]).twice.len(), 1);
        assert_eq!(duplicate_publishes(&acked(1..=3), [b.as_slice()]), Republished::default());
    }

    #[test]
    fn a_republish_into_a_new_epoch_is_told_apart() {
        // Published in e1, the answer lost with Redis, retried into e2.
        let ack: Acknowledged = [(1, Some("e2:9-0".to_string()))].into();
        let seen = vec![ev_id(1, "e1:5-0"), ev_id(1, "e2:9-0")];
        let found = duplicate_publishes(&ack, [seen.as_slice()]);
        assert!(found.twice.is_empty());
        assert_eq!(found.across_epochs.len(), 1);
        // Twice within e2 as well: a duplicate.
        let seen = vec![ev_id(1, "e1:5-0"), ev_id(1, "e2:9-0"), ev_id(1, "e2:10-0")];
        assert_eq!(duplicate_publishes(&ack, [seen.as_slice()]).twice.len(), 1);
        // Legacy ids are one unknown epoch.
        let seen = vec![ev_id(1, "5-0"), ev_id(1, "9-0")];
        assert_eq!(duplicate_publishes(&Acknowledged::new(), [seen.as_slice()]).twice.len(), 1);
    }

    #[test]
    fn the_second_copy_of_a_duplicate_publish_is_not_a_loss_or_a_reorder() {
        let seen = [Seen::Subscribe, sub(true), ev(1), ev(2), ev(3), ev_id(2, "e1:7-0")];
        let v = verdict(&acked(1..=3), &seen);
        assert!(v.is_truthful(), "{v:?}");
        assert_eq!(v.delivered, 3);
    }
}
