//! `GET /sse?channels=a,b`: the same server frames as `/ws`, as
//! Server-Sent Events, for networks that block WebSocket.
//!
//! Every frame is one `data:` line holding the same JSON as on `/ws`. Frames
//! that move a channel's position carry an `id:` listing the position of
//! every channel of the stream: `alerts@1763800000000-0,agents@1763800000123-4`.
//! `EventSource` sends the last one back as `Last-Event-ID` when it
//! reconnects, and the stream resumes each channel after its offset (a
//! `last_event_id` query parameter works too). A comment line (`: ping`) is
//! sent every heartbeat interval. When the instance drains, or the client
//! falls behind (one that stops reading included), the stream simply ends:
//! `EventSource` reconnects and resumes. When the token expires, an `error`
//! frame (`unauthorized`) comes first.
//!
//! This is a transport of the [client core](crate::core): every policy of
//! `/ws` applies here too.
//!
//! Auth as on `/ws` (Bearer header or `token` query parameter); failures are
//! HTTP errors here: 401 (`unauthorized`, `token_expired`), 403 (`forbidden`,
//! `origin_not_allowed`), 400 (`bad_request`, `invalid_channel`,
//! `too_many_subscriptions`), 429, 503.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use actix_http::ws::CloseReason;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use pulse_protocol::browser::close;
use pulse_protocol::{Channel, ControlMessage, ErrorCode, Position};
use tokio::sync::mpsc;

use crate::admission::{Rejected, admit};
use crate::auth;
use crate::client::Client;
use crate::core::{Heard, Transport, subscribe_checked};
use crate::gateway::Gateway;
use crate::queue::{Outbound, Tag};

/// Parses a `Last-Event-ID`: `channel@position` pairs joined by commas
/// (split at the first `@`; channel names cannot contain one).
pub fn parse_event_id(id: &str) -> Result<HashMap<Channel, Position>, String> {
    let mut positions = HashMap::new();
    for pair in id.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (channel, offset) = pair.split_once('@').ok_or_else(|| format!("{pair:?} is not channel@position"))?;
        let channel = Channel::parse(channel).map_err(|e| e.to_string())?;
        let offset = offset.parse::<Position>().map_err(|e| e.to_string())?;
        positions.insert(channel, offset);
    }
    Ok(positions)
}

/// Formats positions as an event id (see the module docs).
pub fn format_event_id<'a>(positions: impl IntoIterator<Item = (&'a Channel, Position)>) -> String {
    let mut id = String::new();
    for (channel, offset) in positions {
        if !id.is_empty() {
            id.push(',');
        }
        id.push_str(channel.as_str());
        id.push('@');
        id.push_str(&offset.to_string());
    }
    id
}

pub(crate) async fn sse(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, Rejected> {
    let gw = gw.get_ref().clone();
    let identity = auth::identify(req.head(), gw.verifier(), gw.settings().auth.anonymous)?;
    if !identity.is_authenticated() {
        return Err(Rejected::Unauthorized("a token is required (Authorization: Bearer, or ?token=)".into()));
    }
    let query = req.query_string();
    let list = auth::query_param(query, "channels")
        .ok_or_else(|| Rejected::BadRequest("name the channels: /sse?channels=a,b".into()))?;
    let mut channels: Vec<Channel> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let channel = Channel::parse(name).map_err(|e| Rejected::InvalidChannel(e.to_string()))?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    if channels.is_empty() {
        return Err(Rejected::BadRequest("name at least one channel: /sse?channels=a,b".into()));
    }
    let last_event_id = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| auth::query_param(query, "last_event_id"));
    let positions = match last_event_id {
        Some(id) => parse_event_id(&id).map_err(|e| Rejected::BadRequest(format!("bad Last-Event-ID: {e}")))?,
        None => HashMap::new(),
    };
    let permit = admit(req.head(), &gw)?;

    let mut client = Client::new(gw.clone(), "sse", permit, identity);
    // The checks of a `subscribe` on `/ws`, answered here as HTTP errors.
    for channel in channels {
        let since = positions.get(&channel).copied();
        if let Err(error) = subscribe_checked(&mut client, channel, since).await {
            return Err(refusal(error));
        }
    }
    let positions = client.subscriptions().map(|(tag, c)| (tag, c.clone(), positions.get(c).copied())).collect();
    let (sink, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let transport = EventStream { sink, unsent: Vec::new(), positions };
    actix_web::rt::spawn(crate::core::run(client, transport));
    // Reconnect quickly after the stream ends.
    let retry = futures_util::stream::once(async { Bytes::from_static(b"retry: 1000\n\n") });
    let events =
        futures_util::stream::unfold(
            chunks,
            |mut chunks| async move { chunks.recv().await.map(|chunk| (chunk, chunks)) },
        );
    let body = retry.chain(events).map(Ok::<_, std::convert::Infallible>);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        // When the stream ends the connection goes too, rather than waiting
        // for another request.
        .force_close()
        .streaming(body))
}

/// The HTTP answer to a subscription refused at the start of a stream.
fn refusal(error: ControlMessage) -> Rejected {
    let ControlMessage::Error { code, message, .. } = error else {
        return Rejected::Unavailable("cannot subscribe".into());
    };
    match code {
        ErrorCode::Forbidden => Rejected::Forbidden(message),
        ErrorCode::TooManySubscriptions => Rejected::TooManySubscriptions(message),
        _ => Rejected::Unavailable(message),
    }
}

/// Chunks handed to actix-web and not yet written to the socket, at most.
/// A client that stops reading leaves them there, so what follows piles up
/// in the client's queue until it overflows: the slow-client rule of every
/// transport.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Unsent bytes beyond which heartbeats are skipped.
const HEARTBEAT_BACKLOG: usize = 64 * 1024;

/// The SSE transport: formats frames as events into the response body.
struct EventStream {
    sink: mpsc::Sender<Bytes>,
    /// Formatted, not yet handed to the body.
    unsent: Vec<u8>,
    /// Per subscription: its channel and the last position sent.
    positions: Vec<(Tag, Channel, Option<Position>)>,
}

impl EventStream {
    /// Hands what is unsent to the body if it has room; returns whether
    /// everything is handed over.
    fn flush(&mut self) -> io::Result<bool> {
        if self.unsent.is_empty() {
            return Ok(true);
        }
        match self.sink.try_reserve() {
            Ok(permit) => {
                permit.send(Bytes::from(std::mem::take(&mut self.unsent)));
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(())) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(())) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn format(&mut self, frame: &Outbound) {
        let out = &mut self.unsent;
        if let Some(position) = self.positions.iter_mut().find(|(tag, _, _)| *tag == frame.tag) {
            // A subscription's frames come in its order (replayed, then
            // `subscribed`, then live): the newest is where it stands, also
            // when `subscribed` moved it to the head.
            position.2 = Some(frame.offset);
            out.extend_from_slice(b"id: ");
            let id =
                format_event_id(self.positions.iter().filter_map(|(_, channel, offset)| offset.map(|o| (channel, o))));
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(frame.text.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
}

impl Transport for EventStream {
    const SPEAKS: bool = false;

    fn send(&mut self, frames: &mut VecDeque<Outbound>) -> io::Result<()> {
        for frame in frames.drain(..) {
            self.format(&frame);
        }
        self.flush().map(drop)
    }

    fn unsent(&self) -> usize {
        self.unsent.len()
    }

    fn heartbeat(&mut self) -> io::Result<()> {
        if self.unsent.len() <= HEARTBEAT_BACKLOG {
            self.unsent.extend_from_slice(b": ping\n\n");
        }
        self.flush().map(drop)
    }

    async fn next(&mut self) -> Heard {
        if self.unsent.is_empty() {
            // Nothing to write: the only news is the client leaving.
            self.sink.closed().await;
            return Heard::Gone;
        }
        match self.sink.reserve().await {
            Ok(permit) => {
                permit.send(Bytes::from(std::mem::take(&mut self.unsent)));
                Heard::Flushed
            }
            Err(_) => Heard::Gone,
        }
    }

    async fn finish(mut self, ending: Option<CloseReason>, wait: Duration) {
        let Some(ending) = ending else { return };
        // The stream simply ends (`EventSource` reconnects and resumes),
        // except when reconnecting needs a new token: that is said first.
        let code = u16::from(ending.code);
        if code == close::TOKEN_EXPIRED || code == close::UNAUTHORIZED {
            let message = ending.description.unwrap_or_else(|| "token expired: reconnect with a fresh token".into());
            let error = ControlMessage::error(ErrorCode::Unauthorized, message);
            self.unsent.extend_from_slice(format!("data: {}\n\n", error.to_json()).as_bytes());
        }
        let _ = tokio::time::timeout(wait, async {
            while !self.unsent.is_empty() {
                if matches!(self.next().await, Heard::Gone) {
                    return;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> Position {
        Position::new(pulse_protocol::Epoch::from_u64(1), pulse_protocol::Offset::new(ms, seq))
    }

    #[test]
    fn event_ids_round_trip() {
        let a = Channel::parse("alerts").unwrap();
        let b = Channel::parse("agent:web-1").unwrap();
        let id = format_event_id([(&a, p(1, 0)), (&b, p(5, 2))]);
        assert_eq!(id, "alerts@1:1-0,agent:web-1@1:5-2");
        // Positions without epoch (from before epochs) are still read.
        let legacy = parse_event_id("alerts@1-0").unwrap();
        assert_eq!(legacy[&a], pulse_protocol::Offset::new(1, 0).into());
        let parsed = parse_event_id(&id).unwrap();
        assert_eq!(parsed[&a], p(1, 0));
        assert_eq!(parsed[&b], p(5, 2));
        assert!(parse_event_id("alerts").is_err());
        assert!(parse_event_id("alerts@x").is_err());
        assert!(parse_event_id("").unwrap().is_empty());
    }
}
