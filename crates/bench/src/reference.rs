//! The reference broadcaster: the floor of WebSocket fan-out on this
//! machine, with none of Pulse's features. It subscribes one Redis pub/sub
//! (sharded) channel and sends each message to every client that subscribed:
//!
//! - each message is encoded into a WebSocket frame once (`Bytes`, shared
//!   by every client's queue);
//! - Redis intake and fan-out run on a thread of their own; each client
//!   has a bounded queue of shared frames (a full queue drops the client),
//!   filled under one lock per batch of messages;
//! - a client's whole backlog goes out with one vectored write (`writev`);
//! - an idle connection holds no buffer: reads land on the stack, the
//!   queue is empty, and a partial frame from the client is the only thing
//!   ever kept between reads.
//!
//! Raw TCP with the least of RFC 6455 a benchmark client needs: the
//! handshake (accept key from `tungstenite`), unfragmented masked client
//! frames, text, ping and close. It speaks just enough of the browser
//! protocol for `pulse-bench run`: `welcome` on connect, `subscribed` for
//! any `subscribe`. Every subscribed client gets every message, verbatim as
//! published on Redis.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    pub listen: SocketAddr,
    pub redis_url: String,
    /// The Redis sharded pub/sub channel to broadcast (`pulse:{ch:bench}`
    /// carries what `RedisBus` publishes on channel `bench`).
    pub redis_channel: String,
    /// Frames queued per client before it is dropped as too slow.
    pub queue: usize,
}

const WELCOME: &str = r#"{"type":"welcome","connection_id":"ref","heartbeat_interval_ms":15000,"client_timeout_ms":45000,"authenticated":true}"#;
/// Largest handshake request and client frame accepted, bytes.
const MAX_REQUEST: usize = 8 * 1024;
const MAX_FRAME: usize = 16 * 1024;
/// Redis messages taken at once before fanning them out.
const BATCH: usize = 256;
/// Frames per `writev` (well below Linux's `IOV_MAX` of 1,024).
const IOV: usize = 256;
/// Frames a connection's spare queue may keep room for between batches.
const SPARE: usize = 64;

/// One client's queue of shared frames, and the wake-up of its task.
#[derive(Default)]
struct Client {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Dropped as too slow: the task ends the connection.
    dropped: bool,
}

impl Client {
    /// Queues `frames` under one lock and wakes the task if the queue was
    /// empty (a non-empty queue has a wake-up pending already). False when
    /// the client is dropped, now or before.
    fn push(&self, frames: &[Bytes], cap: usize) -> bool {
        let mut queue = self.queue.lock();
        if queue.dropped {
            return false;
        }
        let was_empty = queue.frames.is_empty();
        if queue.frames.len() + frames.len() > cap {
            queue.dropped = true;
            queue.frames = VecDeque::new();
        } else {
            queue.frames.extend(frames.iter().cloned());
        }
        let dropped = queue.dropped;
        drop(queue);
        if was_empty || dropped {
            self.wake.notify_one();
        }
        !dropped
    }
}

type Registry = Arc<RwLock<HashMap<u64, Arc<Client>>>>;

/// Binds and returns the bound address and a future serving until the
/// Redis subscription ends.
///
/// # Errors
/// When the address cannot be bound or Redis cannot be subscribed.
pub async fn serve(config: ReferenceConfig) -> anyhow::Result<(SocketAddr, impl Future<Output = anyhow::Result<()>>)> {
    // A deep accept queue, as thousands of clients connect at once.
    let socket = if config.listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    let registry: Registry = Arc::default();
    let cap = config.queue.max(1);
    // Redis intake and fan-out run on a thread of their own, so that new
    // events are not read only between the connections' writes.
    let (subscribed, ready) = oneshot::channel();
    let (ended, done) = oneshot::channel();
    let fan_out = registry.clone();
    std::thread::Builder::new().name("broadcast".into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(broadcast(config, fan_out, cap, subscribed)));
        let _ = ended.send(result);
    })?;
    ready.await??;
    let accept = async move {
        let next_id = AtomicU64::new(0);
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection(tcp, id, registry.clone(), cap));
        }
    };
    let run = async move {
        tokio::select! {
            () = accept => Ok(()),
            done = done => done?,
        }
    };
    Ok((addr, run))
}

/// Subscribes (telling `subscribed` how that went), then hands each batch
/// of messages, each encoded once, to every registered client.
async fn broadcast(
    config: ReferenceConfig,
    registry: Registry,
    cap: usize,
    subscribed: oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Pulse publishes live copies on sharded pub/sub (`SPUBLISH`), which
    // needs a RESP3 connection whose pushes carry the messages.
    let (pushes, mut received) = tokio::sync::mpsc::unbounded_channel::<redis::PushInfo>();
    let pubsub = async {
        let info = redis::IntoConnectionInfo::into_connection_info(config.redis_url.as_str())?;
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let connection_config = redis::AsyncConnectionConfig::new().set_push_sender(pushes);
        let mut conn = client.get_multiplexed_async_connection_with_config(&connection_config).await?;
        redis::cmd("SSUBSCRIBE").arg(&config.redis_channel).query_async::<()>(&mut conn).await?;
        anyhow::Ok(conn)
    };
    let (_conn, mut messages) = match pubsub.await {
        Ok(conn) => {
            let _ = subscribed.send(Ok(()));
            let payloads = futures_util::stream::poll_fn(move |cx| received.poll_recv(cx)).filter_map(|push| {
                std::future::ready(match (push.kind, push.data.get(1)) {
                    (redis::PushKind::SMessage, Some(redis::Value::BulkString(payload))) => Some(payload.clone()),
                    _ => None,
                })
            });
            (conn, Box::pin(payloads))
        }
        Err(err) => {
            let _ = subscribed.send(Err(anyhow::anyhow!("cannot subscribe: {err:#}")));
            return Err(err);
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut slow = Vec::new();
    while let Some(msg) = messages.next().await {
        batch.push(text_frame(&msg));
        // Whatever else has arrived goes out with it.
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(msg)) => batch.push(text_frame(&msg)),
                _ => break,
            }
        }
        for (id, client) in registry.read().iter() {
            if !client.push(&batch, cap) {
                slow.push(*id);
            }
        }
        if !slow.is_empty() {
            let mut clients = registry.write();
            for id in slow.drain(..) {
                clients.remove(&id);
            }
        }
        batch.clear();
    }
    Ok(())
}

/// A server text frame (FIN, unmasked) carrying `payload`.
fn text_frame(payload: &[u8]) -> Bytes {
    frame(0x1, payload)
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

async fn connection(tcp: TcpStream, id: u64, registry: Registry, cap: usize) {
    let _ = tcp.set_nodelay(true);
    let Ok(pending) = handshake(&tcp).await else { return };
    let client = Arc::new(Client::default());
    client.push(&[text_frame(WELCOME.as_bytes())], cap);
    let _ = session(&tcp, id, &client, &registry, cap, pending).await;
    registry.write().remove(&id);
}

/// Reads the upgrade request and answers `101`. Returns any bytes the
/// client sent after the request.
async fn handshake(tcp: &TcpStream) -> io::Result<Vec<u8>> {
    let mut request = Vec::with_capacity(1024);
    let end = loop {
        tcp.readable().await?;
        match tcp.try_read_buf(&mut request) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if request.len() > MAX_REQUEST {
            return Err(io::ErrorKind::InvalidData.into());
        }
    };
    let key = std::str::from_utf8(&request[..end])
        .ok()
        .and_then(|head| {
            head.split("\r\n").find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
            })
        })
        .ok_or(io::ErrorKind::InvalidData)?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    write_all(tcp, response.as_bytes()).await?;
    let rest = &request[end + 4..];
    Ok(if rest.is_empty() { Vec::new() } else { rest.to_vec() })
}

async fn write_all(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes what is queued, then waits for more frames or for the client.
async fn session(
    tcp: &TcpStream,
    id: u64,
    client: &Arc<Client>,
    registry: &Registry,
    cap: usize,
    mut pending: Vec<u8>,
) -> io::Result<()> {
    if !pending.is_empty() && !on_frames(id, client, registry, cap, &mut pending)? {
        return Ok(());
    }
    // The queue is swapped with this one, emptied by the write: no
    // allocation per batch. Small, so an idle connection holds next to nothing.
    let mut spare = VecDeque::new();
    loop {
        loop {
            let dropped = {
                let mut queue = client.queue.lock();
                std::mem::swap(&mut queue.frames, &mut spare);
                queue.dropped
            };
            if dropped {
                return Ok(());
            }
            if spare.is_empty() {
                break;
            }
            write_frames(tcp, &mut spare).await?;
            if spare.capacity() > SPARE {
                spare = VecDeque::new();
            }
        }
        tokio::select! {
            biased;
            () = client.wake.notified() => {}
            ready = tcp.readable() => {
                ready?;
                if !read(tcp, id, client, registry, cap, &mut pending)? {
                    // A close from the client: send the answer queued for it.
                    let mut frames = std::mem::take(&mut client.queue.lock().frames);
                    return write_frames(tcp, &mut frames).await;
                }
            }
        }
    }
}

/// Writes `frames` with as few `writev` calls as the socket takes.
async fn write_frames(tcp: &TcpStream, frames: &mut VecDeque<Bytes>) -> io::Result<()> {
    // Bytes of the first frame already written.
    let mut offset = 0;
    while !frames.is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); IOV];
            let mut n = 0;
            for (slice, frame) in slices.iter_mut().zip(frames.iter()) {
                *slice = IoSlice::new(if n == 0 { &frame[offset..] } else { frame });
                n += 1;
            }
            tcp.try_write_vectored(&slices[..n])
        };
        match written {
            Ok(mut written) => {
                while let Some(front) = frames.front() {
                    let left = front.len() - offset;
                    if written < left {
                        offset += written;
                        break;
                    }
                    written -= left;
                    offset = 0;
                    frames.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the client sent (into the stack) and handles its complete
/// frames. False when the connection should end.
fn read(
    tcp: &TcpStream,
    id: u64,
    client: &Arc<Client>,
    registry: &Registry,
    cap: usize,
    pending: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut buf = [0u8; 2048];
    let n = match tcp.try_read(&mut buf) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        Err(e) => return Err(e),
    };
    pending.extend_from_slice(&buf[..n]);
    on_frames(id, client, registry, cap, pending)
}

/// Handles the complete frames at the start of `pending` and keeps the rest
/// (its allocation is released once nothing is left). False when the
/// connection should end.
fn on_frames(
    id: u64,
    client: &Arc<Client>,
    registry: &Registry,
    cap: usize,
    pending: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut at = 0;
    let mut open = true;
    while open && let Some((opcode, payload, len)) = parse_frame(&pending[at..])? {
        at += len;
        open = match opcode {
            0x1 => on_text(id, client, registry, cap, &payload),
            0x9 => client.push(&[frame(0xA, &payload)], cap),
            0x8 => {
                client.push(&[frame(0x8, &payload[..payload.len().min(2)])], cap);
                false
            }
            _ => true,
        };
    }
    pending.drain(..at);
    if pending.is_empty() {
        *pending = Vec::new();
    }
    Ok(open)
}

/// Answers a `subscribe` with `subscribed` and registers the client for
/// every message (once). Other text is ignored.
fn on_text(id: u64, client: &Arc<Client>, registry: &Registry, cap: usize, text: &[u8]) -> bool {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(text) else { return true };
    if message.get("type").and_then(|t| t.as_str()) != Some("subscribe") {
        return true;
    }
    let channel = message.get("channel").and_then(|c| c.as_str()).unwrap_or_default();
    let reply = serde_json::json!({"type": "subscribed", "channel": channel, "offset": "0-0", "recovered": true});
    if !client.push(&[text_frame(reply.to_string().as_bytes())], cap) {
        return false;
    }
    registry.write().entry(id).or_insert_with(|| client.clone());
    true
}

/// One complete masked client frame at the start of `buf`: its opcode,
/// unmasked payload and length on the wire. `None` until all of it arrived.
///
/// # Errors
/// `InvalidData` for an unmasked or oversized frame.
fn parse_frame(buf: &[u8]) -> io::Result<Option<(u8, Vec<u8>, usize)>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 == 0 {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let (len, header) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX), 10),
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let Some(mask) = buf.get(header..header + 4) else { return Ok(None) };
    let Some(masked) = buf.get(header + 4..header + 4 + len) else { return Ok(None) };
    let payload = masked.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect();
    Ok(Some((b0 & 0x0f, payload, header + 4 + len)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    #[test]
    fn parses_masked_frames_whole_or_not_yet() {
        let wire = masked(0x1, br#"{"type":"subscribe","channel":"bench"}"#);
        assert_eq!(parse_frame(&wire[..wire.len() - 1]).unwrap(), None);
        let (opcode, payload, len) = parse_frame(&wire).unwrap().unwrap();
        assert_eq!(
            (opcode, payload.as_slice(), len),
            (0x1, &br#"{"type":"subscribe","channel":"bench"}"#[..], wire.len())
        );
        let long = vec![b'x'; 300];
        let wire = masked(0x9, &long);
        assert_eq!(parse_frame(&wire).unwrap().unwrap().1, long);
        assert!(parse_frame(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']).is_err(), "unmasked");
    }

    #[test]
    fn encodes_server_frames_with_their_length() {
        assert_eq!(&text_frame(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let long = text_frame(&[b'x'; 200]);
        assert_eq!(&long[..4], &[0x81, 126, 0, 200]);
        assert_eq!(long.len(), 204);
    }

    #[test]
    fn a_full_queue_drops_the_client() {
        let client = Client::default();
        let frame = text_frame(b"x");
        assert!(client.push(&[frame.clone(), frame.clone()], 3));
        assert!(!client.push(&[frame.clone(), frame.clone()], 3));
        assert!(!client.push(&[frame], 3));
        assert!(client.queue.lock().frames.is_empty());
    }
}
