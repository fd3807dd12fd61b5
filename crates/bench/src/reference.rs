//! The reference broadcaster: the least a WebSocket fan-out server must do,
//! with none of Pulse's features. It subscribes one Redis pub/sub channel
//! and sends each message, encoded once, to every client that subscribed;
//! each client has a bounded queue (a full queue closes the client) and a
//! writer that sends everything queued with one flush.
//!
//! It speaks just enough of the browser protocol for the benchmark client:
//! `welcome` on connect, `subscribed` for any `subscribe`. Every subscribed
//! client gets every message, verbatim as published on Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    pub listen: SocketAddr,
    pub redis_url: String,
    /// The Redis pub/sub channel to broadcast (`pulse:ch:bench` carries
    /// what `RedisBus` publishes on channel `bench`).
    pub redis_channel: String,
    /// Frames queued per client before it is closed as too slow.
    pub queue: usize,
}

type Clients = Arc<RwLock<std::collections::HashMap<u64, mpsc::Sender<Message>>>>;

const WELCOME: &str = r#"{"type":"welcome","connection_id":"ref","heartbeat_interval_ms":15000,"client_timeout_ms":45000,"authenticated":true}"#;

/// Small buffers, as a tuned server would use: clients send little (1 KiB read
/// buffer, grown on demand for larger frames). Frames are written to the
/// socket when 16 KiB are buffered or on flush, so the frames a writer finds
/// queued go out in one write; the write buffer grows only as far as a
/// client's traffic needs.
fn server_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(16 * 1024)
}

/// Binds and returns the bound address and a future serving until the
/// Redis subscription ends.
pub async fn serve(config: ReferenceConfig) -> anyhow::Result<(SocketAddr, impl Future<Output = anyhow::Result<()>>)> {
    // A deep accept queue, as thousands of clients connect at once.
    let socket = if config.listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    let clients: Clients = Arc::default();
    let redis = redis::Client::open(config.redis_url.as_str())?;
    let mut pubsub = redis.get_async_pubsub().await?;
    pubsub.subscribe(&config.redis_channel).await?;
    let queue = config.queue.max(1);
    let accept_clients = clients.clone();
    let accept = async move {
        let next_id = AtomicU64::new(0);
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(handle(tcp, id, accept_clients.clone(), queue));
        }
    };
    let broadcast = async move {
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else { continue };
            let frame = Message::Text(Utf8Bytes::from(payload));
            let mut slow = Vec::new();
            {
                let clients = clients.read();
                for (id, tx) in clients.iter() {
                    if tx.try_send(frame.clone()).is_err() {
                        slow.push(*id);
                    }
                }
            }
            if !slow.is_empty() {
                let mut clients = clients.write();
                for id in slow {
                    clients.remove(&id);
                }
            }
        }
        anyhow::Ok(())
    };
    let run = async move {
        tokio::select! {
            () = accept => Ok(()),
            done = broadcast => done,
        }
    };
    Ok((addr, run))
}

async fn handle(tcp: TcpStream, id: u64, clients: Clients, queue: usize) {
    let _ = tcp.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(server_config())).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(queue);
    let _ = tx.try_send(Message::text(WELCOME));
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            for msg in batch.drain(..) {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut subscribed = false;
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Text(text) = msg
            && text.contains("\"subscribe\"")
        {
            let channel = serde_json::from_str::<serde_json::Value>(text.as_str())
                .ok()
                .and_then(|v| v.get("channel").and_then(|c| c.as_str()).map(str::to_string))
                .unwrap_or_default();
            let reply =
                serde_json::json!({"type": "subscribed", "channel": channel, "offset": "0-0", "recovered": true});
            if tx.try_send(Message::text(reply.to_string())).is_err() {
                break;
            }
            if !subscribed {
                subscribed = true;
                clients.write().insert(id, tx.clone());
            }
        }
    }
    clients.write().remove(&id);
    drop(tx);
    let _ = writer.await;
}
