//! [`HistoryPages`]: the one way to read a channel's history after a
//! position, page by page, used by a subscription's gap fill and by the
//! gateway's resume.

use pulse_protocol::{Event, Position};

use crate::History;

/// Reads a channel's history after a position, page by page, up to an
/// optional bound, delivering each event once and in order.
///
/// It holds no connection and does no I/O: the caller reads each page with
/// [`Bus::history`](crate::Bus::history) (or any equivalent) after the
/// position [`next_request`](Self::next_request) names and hands the answer
/// to [`accept`](Self::accept). So the same steps serve callers that wait
/// between pages (a resume waits for its client to drain) and callers that
/// do not.
///
/// ```text
/// while let Some(after) = pages.next_request() {
///     let page = pages.accept(bus.history(&channel, after, pages.limit()).await?);
///     // page.truncated: history cannot continue from `after` …
///     // page.events: the next events, in order …
/// }
/// ```
#[derive(Debug, Clone)]
pub struct HistoryPages {
    last: Position,
    until: Option<Position>,
    limit: usize,
    finished: bool,
}

/// One page read by [`HistoryPages`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The history cannot continue from the position this page was read
    /// after (see [`History::truncated`]): events were lost. `events` then
    /// holds the oldest events of the current history, and when there are
    /// none the reader continues from the head.
    pub truncated: bool,
    /// The next events, oldest first: each follows the previous one and none
    /// follows the bound.
    pub events: Vec<Event>,
}

impl HistoryPages {
    /// Reads after `after`, `limit` events a page (at least 1). With
    /// `until`, events after it are left out and reading stops there (a
    /// resume reads up to the head it will receive live from).
    pub fn new(after: Position, until: Option<Position>, limit: usize) -> Self {
        let finished = until == Some(after);
        Self { last: after, until, limit: limit.max(1), finished }
    }

    /// The page size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The position of the last event delivered (or skipped to).
    pub fn last(&self) -> Position {
        self.last
    }

    /// The position to read the next page after, or `None` when done.
    pub fn next_request(&self) -> Option<Position> {
        (!self.finished).then_some(self.last)
    }

    /// Takes the answer to the request [`next_request`](Self::next_request)
    /// named and returns its page.
    pub fn accept(&mut self, history: History) -> Page {
        let truncated = history.truncated;
        let full = history.events.len() >= self.limit;
        let mut events = Vec::with_capacity(history.events.len());
        for event in history.events {
            if self.until.is_some_and(|until| event.id.follows(&until)) {
                self.finished = true;
                break;
            }
            if event.id.follows(&self.last) {
                self.last = event.id;
                events.push(event);
            }
        }
        if truncated && events.is_empty() {
            // Nothing of the current history reached this reader: it goes
            // on from the head (events beyond it arrive live).
            self.last = history.head;
        }
        if !full || self.until == Some(self.last) {
            self.finished = true;
        }
        Page { truncated, events }
    }
}

#[cfg(test)]
mod tests {
    use pulse_protocol::{Channel, Epoch, EventDraft, EventType, Offset};

    use super::*;

    fn at(epoch: u64, ms: u64) -> Position {
        Position::new(Epoch::from_u64(epoch), Offset::new(ms, 0))
    }

    fn event(id: Position) -> Event {
        EventDraft::new(EventType::parse("t.e").unwrap(), serde_json::json!({}))
            .into_event(Channel::parse("c").unwrap(), id)
    }

    fn history(ids: &[Position], truncated: bool, head: Position) -> History {
        History { events: ids.iter().copied().map(event).collect(), truncated, head }
    }

    fn ids(page: &Page) -> Vec<Position> {
        page.events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn reads_pages_until_a_short_one() {
        let mut pages = HistoryPages::new(at(1, 1), None, 2);
        assert_eq!(pages.next_request(), Some(at(1, 1)));
        let page = pages.accept(history(&[at(1, 2), at(1, 3)], false, at(1, 4)));
        assert_eq!(ids(&page), [at(1, 2), at(1, 3)]);
        assert_eq!(pages.next_request(), Some(at(1, 3)));
        let page = pages.accept(history(&[at(1, 4)], false, at(1, 4)));
        assert_eq!(ids(&page), [at(1, 4)]);
        assert_eq!(pages.next_request(), None);
    }

    #[test]
    fn stops_at_the_bound_and_leaves_later_events_out() {
        let mut pages = HistoryPages::new(at(1, 1), Some(at(1, 3)), 10);
        let page = pages.accept(history(&[at(1, 2), at(1, 3), at(1, 4)], false, at(1, 4)));
        assert_eq!(ids(&page), [at(1, 2), at(1, 3)]);
        assert_eq!(pages.next_request(), None);
        assert!(HistoryPages::new(at(1, 3), Some(at(1, 3)), 10).next_request().is_none(), "at the bound already");
    }

    #[test]
    fn a_full_page_ending_at_the_bound_finishes() {
        let mut pages = HistoryPages::new(at(1, 1), Some(at(1, 3)), 2);
        pages.accept(history(&[at(1, 2), at(1, 3)], false, at(1, 9)));
        assert_eq!(pages.next_request(), None);
    }

    #[test]
    fn events_already_delivered_are_skipped() {
        let mut pages = HistoryPages::new(at(1, 3), None, 10);
        let page = pages.accept(history(&[at(1, 2), at(1, 3), at(1, 4)], false, at(1, 4)));
        assert_eq!(ids(&page), [at(1, 4)]);
    }

    #[test]
    fn a_truncation_is_reported_and_reading_goes_on_in_the_current_history() {
        // Another epoch: its oldest events follow.
        let mut pages = HistoryPages::new(at(1, 9), None, 10);
        let page = pages.accept(history(&[at(2, 1), at(2, 2)], true, at(2, 2)));
        assert!(page.truncated);
        assert_eq!(ids(&page), [at(2, 1), at(2, 2)]);
        assert_eq!(pages.last(), at(2, 2));
        // Ahead of the head: nothing follows; the reader jumps to the head.
        let mut pages = HistoryPages::new(at(1, 99), None, 10);
        let page = pages.accept(history(&[], true, at(1, 5)));
        assert!(page.truncated && page.events.is_empty());
        assert_eq!(pages.last(), at(1, 5));
        assert_eq!(pages.next_request(), None);
    }
}
