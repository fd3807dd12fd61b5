//! One benchmark client: a real WebSocket connection speaking the browser
//! protocol, recording which sequence numbers it received and how late.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use pulse_protocol::{Channel, ClientMessage};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::accounting::{SeqSet, scan_stamp};

/// How long a client waits for `welcome` and each `subscribed`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Latency samples a client collects before adding them to the shared histogram.
const BATCH: usize = 256;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|e| unreachable!("valid bounds: {e}"))
}

/// State every client shares with the run.
pub struct Shared {
    pub latency: Mutex<Histogram<u64>>,
    /// Distinct events received, per client, each counter on its own
    /// cache line (a shared counter would bounce between the cores at a
    /// million increments a second).
    received: Box<[AtomicU64]>,
}

/// `AtomicU64`s per cache line.
const STRIDE: usize = 8;

impl Shared {
    pub fn new(clients: usize) -> Arc<Self> {
        let received = (0..clients.max(1) * STRIDE).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Self { latency: Mutex::new(histogram()), received })
    }

    /// Counts one more distinct event received by `client`.
    pub fn count(&self, client: usize) {
        if let Some(c) = self.received.get(client * STRIDE) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct events received by all clients together.
    pub fn received(&self) -> u64 {
        self.received.iter().step_by(STRIDE).map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Where a client connects: the gateway's address and the request URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let request = url.into_client_request().with_context(|| format!("bad URL {url}"))?;
        let uri = request.uri();
        let host = uri.host().context("URL without host")?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("cannot resolve {host}"))?;
        Ok(Self { url: url.to_string(), addr })
    }
}

/// The source address of client `i` when spreading over 127.0.0.0/8:
/// 127.0.x.y with y in 2..=254, so each address has its own ephemeral ports.
pub fn source_ip(i: usize) -> Ipv4Addr {
    let n = i % (253 * 250);
    Ipv4Addr::new(127, 0, (n / 253) as u8, (n % 253 + 2) as u8)
}

/// Small buffers: the load generator holds up to 100,000 of these.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0)
}

pub type Ws = WebSocketStream<TcpStream>;

/// Opens the TCP connection (from `source` when given) and the WebSocket.
pub async fn connect(target: &Target, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source.filter(|_| target.addr.is_ipv4()) {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).with_context(|| format!("binding {ip}"))?;
    }
    socket.set_nodelay(true)?;
    let tcp = socket.connect(target.addr).await.with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(target.url.as_str(), tcp, Some(client_config()))
        .await
        .with_context(|| format!("WebSocket handshake with {}", target.url))?;
    Ok(ws)
}

/// Reads `welcome`, subscribes to `channels` and waits for each
/// `subscribed`. Events arriving meanwhile are recorded.
pub async fn handshake(ws: &mut Ws, channels: &[Channel], set: &mut SeqSet) -> anyhow::Result<()> {
    let first = next_text(ws).await?.context("closed before welcome")?;
    if !first.contains("\"welcome\"") {
        bail!("expected welcome, got {}", truncate(&first));
    }
    for channel in channels {
        let msg = ClientMessage::Subscribe { channel: channel.clone(), since: None };
        ws.send(Message::text(msg.to_json())).await?;
    }
    let mut pending = channels.len();
    while pending > 0 {
        let text = next_text(ws).await?.context("closed before subscribed")?;
        if let Some(stamp) = scan_stamp(&text) {
            set.insert(stamp.seq);
        } else if text.contains("\"subscribed\"") {
            pending -= 1;
        } else if text.contains("\"error\"") {
            bail!("subscribe refused: {}", truncate(&text));
        }
    }
    Ok(())
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.context("handshake timed out")?;
        match msg {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => return Ok(Some(text.as_str().to_string())),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => {}
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientOutcome {
    pub set: SeqSet,
    /// Close code sent by the server, if it closed the connection.
    pub closed_by_server: Option<u16>,
    /// A transport error that ended the connection.
    pub error: Option<String>,
}

/// Reads events until `stop` turns true or the connection ends.
pub async fn receive(
    client: usize,
    mut ws: Ws,
    mut set: SeqSet,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ClientOutcome {
    let mut batch: Vec<u64> = Vec::with_capacity(BATCH);
    let mut outcome = ClientOutcome::default();
    let flush = |batch: &mut Vec<u64>| {
        if !batch.is_empty() {
            let mut hist = shared.latency.lock();
            for &v in batch.iter() {
                hist.saturating_record(v.max(1));
            }
            batch.clear();
        }
    };
    let mut stopped = std::pin::pin!(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            () = &mut stopped => break,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                if let Some(stamp) = scan_stamp(text.as_str())
                    && set.insert(stamp.seq)
                {
                    batch.push(now_us().saturating_sub(stamp.sent_us));
                    shared.count(client);
                    if batch.len() >= BATCH {
                        flush(&mut batch);
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                outcome.closed_by_server = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                outcome.error = Some(e.to_string());
                break;
            }
            None => {
                outcome.error = Some("connection ended".into());
                break;
            }
        }
    }
    flush(&mut batch);
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    outcome.set = set;
    outcome
}

/// Connects, subscribes, and reports how long that took.
pub async fn open(
    target: &Target,
    source: Option<Ipv4Addr>,
    channels: &[Channel],
) -> anyhow::Result<(Ws, SeqSet, Duration)> {
    let started = Instant::now();
    let mut ws = connect(target, source).await?;
    let mut set = SeqSet::new();
    handshake(&mut ws, channels, &mut set).await?;
    Ok((ws, set, started.elapsed()))
}
