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
//! falls behind, the stream simply ends: `EventSource` reconnects and resumes.
//!
//! Auth as on `/ws` (Bearer header or `token` query parameter); failures are
//! HTTP errors here: 401 (`unauthorized`, `token_expired`), 403 (`forbidden`,
//! `origin_not_allowed`), 400 (`bad_request`, `invalid_channel`,
//! `too_many_subscriptions`), 429, 503.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use pulse_protocol::{Channel, ControlMessage, Position};

use crate::auth::{self, Identity};
use crate::connection::Connection;
use crate::gateway::Gateway;
use crate::metrics::ClosedBy;
use crate::queue::{NO_TAG, Outbound, QueueStatus, Tag};
use crate::routes::{Rejected, admit};

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
    let inner = &gw.inner;
    let identity = auth::identify(req.head(), inner.verifier.as_ref(), inner.settings.auth.anonymous)?;
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
    let max = inner.settings.limits.max_subscriptions;
    if channels.len() > max {
        return Err(Rejected::TooManySubscriptions(format!("at most {max} channels per connection")));
    }
    if let Some(channel) = channels.iter().find(|c| !identity.may_read(c)) {
        return Err(Rejected::Forbidden(format!("your token does not grant channel {channel}")));
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

    let mut conn = Connection::new(gw.clone(), "sse", permit, identity);
    let settings = &gw.inner.settings.gateway;
    conn.send(&ControlMessage::Welcome {
        connection_id: conn.id.clone(),
        heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as u64,
        client_timeout_ms: settings.client_timeout.as_millis() as u64,
        authenticated: true,
    });
    for channel in channels {
        let since = positions.get(&channel).copied();
        conn.subscribe(channel, since).await.map_err(|e| match e {
            ControlMessage::Error { message, .. } => Rejected::Unavailable(message),
            _ => Rejected::Unavailable("cannot subscribe".into()),
        })?;
    }
    let positions: Vec<(Tag, Channel, Option<Position>)> = positions_by_tag(&conn, &positions);
    let heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat_interval,
        settings.heartbeat_interval,
    );
    let drain = gw.inner.drain.clone();
    let expiry = match &conn.identity {
        Identity::User { expires, .. } => tokio::time::Instant::from_std(*expires),
        _ => tokio::time::Instant::now() + NEVER,
    };
    let stream = Stream {
        expiry: Box::pin(tokio::time::sleep_until(expiry)),
        conn,
        batch: VecDeque::new(),
        positions,
        heartbeat,
        drain: Box::pin(async move { drain.cancelled().await }),
        drain_close: Box::pin(tokio::time::sleep(NEVER)),
        draining: false,
        started: false,
        done: false,
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), stream))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

fn positions_by_tag(conn: &Connection, known: &HashMap<Channel, Position>) -> Vec<(Tag, Channel, Option<Position>)> {
    conn.subscriptions().map(|(tag, c)| (tag, c.clone(), known.get(c).copied())).collect()
}

/// Far enough to mean "never" for a timer.
const NEVER: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

struct Stream {
    conn: Connection,
    /// The token's expiry: the stream ends with an error frame then.
    expiry: Pin<Box<tokio::time::Sleep>>,
    batch: VecDeque<Outbound>,
    /// Per subscription: its channel and the last position sent.
    positions: Vec<(Tag, Channel, Option<Position>)>,
    heartbeat: tokio::time::Interval,
    drain: Pin<Box<dyn Future<Output = ()>>>,
    /// Armed when draining starts: the stream ends then.
    drain_close: Pin<Box<tokio::time::Sleep>>,
    draining: bool,
    started: bool,
    done: bool,
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            // Reconnect quickly after the stream ends.
            return Some(Bytes::from_static(b"retry: 1000\n\n"));
        }
        loop {
            tokio::select! {
                biased;
                () = self.conn.queue.ready() => {
                    let status = self.conn.queue.take(&mut self.batch);
                    if status != QueueStatus::Open {
                        if status == QueueStatus::Overflowed {
                            self.conn.gw.count_slow_close();
                            self.conn.ended_by(ClosedBy::Server, "slow_consumer");
                        }
                        self.done = true;
                        return None;
                    }
                    if !self.batch.is_empty() {
                        return Some(self.format_batch());
                    }
                }
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": ping\n\n")),
                () = &mut self.drain, if !self.draining => {
                    self.draining = true;
                    let window = self.conn.gw.inner.settings.gateway.drain_window;
                    let at = tokio::time::Instant::now() + window.mul_f64(rand::random::<f64>());
                    self.drain_close.as_mut().reset(at);
                }
                () = &mut self.expiry => {
                    self.done = true;
                    self.conn.ended_by(ClosedBy::Server, "token_expired");
                    let error = ControlMessage::error(
                        pulse_protocol::ErrorCode::Unauthorized,
                        "token expired: reconnect with a fresh token",
                    );
                    return Some(Bytes::from(format!("data: {}\n\n", error.to_json())));
                }
                () = &mut self.drain_close, if self.draining => {
                    self.done = true;
                    self.conn.ended_by(ClosedBy::Server, "drain");
                    return None;
                }
            }
        }
    }

    fn format_batch(&mut self) -> Bytes {
        let mut out = String::new();
        for frame in self.batch.drain(..) {
            if frame.tag != NO_TAG
                && let Some(position) = self.positions.iter_mut().find(|(tag, _, _)| *tag == frame.tag)
            {
                // A subscription's frames come in its order (replayed, then
                // `subscribed`, then live): the newest is where it stands,
                // also when `subscribed` moved it to the head.
                position.2 = Some(frame.offset);
                out.push_str("id: ");
                out.push_str(&format_event_id(
                    self.positions.iter().filter_map(|(_, channel, offset)| offset.map(|o| (channel, o))),
                ));
                out.push('\n');
            }
            out.push_str("data: ");
            out.push_str(&frame.text);
            out.push_str("\n\n");
        }
        Bytes::from(out)
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
