//! `GET /api/v1/channels/{channel}/history?after=&limit=`: the HTTP fallback
//! for clients that cannot hold a WebSocket.
//!
//! With `after` (a position), the events after it, oldest first, or, when
//! they cannot all be given, none and `truncated` (refetch state, poll on
//! from `next`, the head). Without, the
//! newest `limit` events. Poll again with `after` = `next`.

use actix_web::{HttpResponse, web};
use pulse_protocol::{Channel, Event, Position};
use serde::{Deserialize, Serialize};

use crate::auth::Reader;
use crate::error::{ApiError, InputError, backend};
use crate::state::IngestState;

/// The query string, read as text so that a bad value is reported with
/// its parameter's name.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// A page of a channel's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub channel: Channel,
    /// Oldest first.
    pub events: Vec<Event>,
    /// The events after `after` cannot all be given (trimmed from history,
    /// the history replaced by a new epoch, or `after` never issued): the
    /// page has no events; the client should refetch state, then poll on
    /// from `next`, the channel's head.
    pub truncated: bool,
    /// The position to pass as `after` next time: the last event's, or,
    /// when the page is empty, `after` (the channel's head when `after`
    /// cannot be continued, or none was given).
    pub next: Position,
}

pub(crate) async fn get_history(
    reader: Reader,
    state: web::Data<IngestState>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let channel = Channel::parse(&path).map_err(|e| InputError::invalid("channel", e.to_string()))?;
    reader.check_read(&channel, "channel")?;
    let settings = state.settings();
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(after) => Some(after.parse::<Position>().map_err(|e| InputError::invalid("after", e.to_string()))?),
    };
    let max = settings.history_max_limit;
    let limit = match query.limit.as_deref() {
        None | Some("") => settings.history_default_limit.min(max),
        Some(limit) => match limit.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(InputError::invalid(
                    "limit",
                    format!("limit must be a whole number from 1 to {max}; got {limit:?}"),
                )
                .into());
            }
        },
    };
    let bus = state.bus();
    let page = match after {
        Some(after) => {
            let history = backend("reading history", bus.history(&channel, after, limit)).await?;
            if history.truncated {
                // The events after `after` cannot all be given: what is left
                // would be applied on top of the state the client refetches.
                // It refetches, then polls on from the head.
                HistoryPage { channel, events: Vec::new(), truncated: true, next: history.head }
            } else {
                let next = history.events.last().map_or(after, |e| e.id);
                HistoryPage { channel, events: history.events, truncated: false, next }
            }
        }
        None => {
            let events = backend("reading history", bus.latest(&channel, limit)).await?;
            let next = match events.last() {
                Some(event) => event.id,
                None => backend("reading the channel head", bus.head(&channel)).await?,
            };
            HistoryPage { channel, events, truncated: false, next }
        }
    };
    Ok(HttpResponse::Ok().json(page))
}
