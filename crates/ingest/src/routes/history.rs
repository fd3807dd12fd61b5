//! `GET /api/v1/channels/{channel}/history?after=&limit=`: the HTTP fallback
//! for clients that cannot hold a WebSocket.
//!
//! With `after`, the events after that offset, oldest first, and whether
//! history was trimmed past it (`truncated`: refetch state). Without, the
//! newest `limit` events. Poll again with `after` = `next`.

use actix_web::{HttpResponse, web};
use pulse_protocol::{Channel, Event, Offset};
use serde::{Deserialize, Serialize};

use crate::auth::Reader;
use crate::error::{ApiError, InputError, with_deadline};
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
    /// Events after `after` were trimmed from history: the page is not
    /// complete, and the client should refetch state.
    pub truncated: bool,
    /// The offset to pass as `after` next time: the last event's, or
    /// `after` (or the channel's head) when the page is empty.
    pub next: Offset,
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
        Some(after) => Some(after.parse::<Offset>().map_err(|e| InputError::invalid("after", e.to_string()))?),
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
    let deadline = settings.backend_timeout;
    let page = match after {
        Some(after) => {
            let history = with_deadline(deadline, "reading history", bus.history(&channel, after, limit)).await?;
            let next = history.events.last().map_or(after, |e| e.id);
            HistoryPage { channel, events: history.events, truncated: history.truncated, next }
        }
        None => {
            let events = with_deadline(deadline, "reading history", bus.latest(&channel, limit)).await?;
            let next = match events.last() {
                Some(event) => event.id,
                None => with_deadline(deadline, "reading the channel head", bus.head(&channel)).await?,
            };
            HistoryPage { channel, events, truncated: false, next }
        }
    };
    Ok(HttpResponse::Ok().json(page))
}
