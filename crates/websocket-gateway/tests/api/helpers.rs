use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use pulse_auth::Claims;
use pulse_bus::{Bus, MemoryBus, MemoryBusConfig, RedisBus, RedisBusConfig};
use pulse_protocol::{
    Channel, ChannelPattern, ClientMessage, ControlMessage, Event, EventDraft, EventType, Position, ServerFrame,
};
use pulse_runtime::Shutdown;
use pulse_testkit::{RedisServer, WsClient};
use pulse_websocket_gateway::{Application, Gateway, NoState, Settings};

pub const SECRET: &str = "test-secret";
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Settings for tests: loopback, port 0, anonymous, generous limits, short
/// drain window.
pub fn settings() -> Settings {
    let mut s = Settings::defaults().expect("defaults load");
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.gateway.static_dir = None;
    s.gateway.drain_window = Duration::from_millis(500);
    s.auth.secret = SECRET.into();
    s.auth.anonymous = true;
    s.limits.connections_per_ip_per_sec = 100_000;
    s.limits.messages_per_sec = 10_000;
    s
}

pub struct TestGateway {
    pub port: u16,
    pub gateway: Gateway,
    pub shutdown: Shutdown,
    pub bus: Arc<dyn Bus>,
    pub stopped: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws{query}", self.port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Connects and reads `welcome`.
    pub async fn connect(&self) -> anyhow::Result<WsClient> {
        self.connect_with("", &[]).await
    }

    pub async fn connect_with(&self, query: &str, headers: &[(&str, &str)]) -> anyhow::Result<WsClient> {
        let mut client = WsClient::connect_with(&self.ws_url(query), headers).await?;
        match client.recv_control(DEADLINE).await? {
            ControlMessage::Welcome { .. } => Ok(client),
            other => bail!("expected welcome, got {other:?}"),
        }
    }
}

pub async fn spawn(settings: Settings, bus: Arc<dyn Bus>) -> anyhow::Result<TestGateway> {
    spawn_with(settings, bus, Arc::new(NoState)).await
}

pub async fn spawn_with(
    settings: Settings,
    bus: Arc<dyn Bus>,
    snapshots: pulse_websocket_gateway::Snapshots,
) -> anyhow::Result<TestGateway> {
    if std::env::var_os("TEST_LOG").is_some() {
        pulse_runtime::init_test_logging();
    }
    let metrics = pulse_runtime::install_metrics()?;
    let app = Application::build(settings, bus.clone(), snapshots, metrics).await?;
    let port = app.port();
    let gateway = app.gateway().clone();
    let shutdown = app.shutdown();
    let stopped = tokio::spawn(app.run_until_stopped());
    Ok(TestGateway { port, gateway, shutdown, bus, stopped })
}

pub async fn redis_bus(redis: &RedisServer) -> anyhow::Result<Arc<dyn Bus>> {
    redis_bus_with(redis, 10_000).await
}

pub async fn redis_bus_with(redis: &RedisServer, history_len: usize) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = RedisBus::connect(RedisBusConfig {
        url: redis.url(),
        prefix: "pulse:".into(),
        history_len,
        pool_size: 4,
        ..RedisBusConfig::default()
    })
    .await?;
    Ok(Arc::new(bus))
}

pub fn memory_bus() -> Arc<dyn Bus> {
    Arc::new(MemoryBus::new(MemoryBusConfig { history_len: 10_000 }))
}

pub fn channel(name: &str) -> Channel {
    Channel::parse(name).expect("valid channel")
}

pub fn token(sub: &str, channels: &[&str], ttl: Duration) -> String {
    let patterns = channels.iter().map(|p| ChannelPattern::parse(p).expect("pattern")).collect();
    Claims::new(sub, patterns, ttl).sign_hs256(SECRET.as_bytes()).expect("sign")
}

pub async fn publish(bus: &Arc<dyn Bus>, channel: &Channel, n: usize) -> anyhow::Result<Vec<Event>> {
    publish_sized(bus, channel, n, 0).await
}

/// Publishes `n` events whose data carries `pad` bytes of padding.
pub async fn publish_sized(bus: &Arc<dyn Bus>, channel: &Channel, n: usize, pad: usize) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::with_capacity(n);
    let padding = "x".repeat(pad);
    for i in 0..n {
        let draft = EventDraft::new(EventType::parse("test")?, serde_json::json!({"i": i, "pad": padding}));
        events.push(bus.publish(channel, draft).await?);
    }
    Ok(events)
}

/// Subscribes and reads until `subscribed` for the channel; returns the
/// events that came first (a replay) and the `subscribed` fields.
pub async fn subscribe(
    client: &mut WsClient,
    channel: &Channel,
    since: Option<Position>,
) -> anyhow::Result<(Vec<Event>, Position, bool)> {
    client.send(&ClientMessage::Subscribe { channel: channel.clone(), since }).await?;
    let mut events = Vec::new();
    loop {
        match client.recv(DEADLINE).await.context("waiting for subscribed")? {
            ServerFrame::Event(event) => events.push(event),
            ServerFrame::Control(ControlMessage::Subscribed { channel: c, offset, recovered }) if &c == channel => {
                return Ok((events, offset, recovered));
            }
            ServerFrame::Control(other) => bail!("expected subscribed, got {other:?}"),
        }
    }
}

/// Reads `n` events (failing on any control message).
pub async fn recv_events(client: &mut WsClient, n: usize) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        events
            .push(client.recv_event(DEADLINE).await.with_context(|| format!("after {} of {n} events", events.len()))?);
    }
    Ok(events)
}

pub fn ids(events: &[Event]) -> Vec<Position> {
    events.iter().map(|e| e.id).collect()
}

/// Sends a ping with `id` and reads up to its pong, returning what came before.
pub async fn ping_barrier(client: &mut WsClient, id: u64) -> anyhow::Result<Vec<ServerFrame>> {
    client.send(&ClientMessage::Ping { id: Some(serde_json::json!(id)) }).await?;
    let mut before = Vec::new();
    loop {
        match client.recv(DEADLINE).await? {
            ServerFrame::Control(ControlMessage::Pong { id: Some(got) }) if got == serde_json::json!(id) => {
                return Ok(before);
            }
            other => before.push(other),
        }
    }
}

/// Expects an `error` frame next; returns (code, message).
pub async fn recv_error(client: &mut WsClient) -> anyhow::Result<(pulse_protocol::ErrorCode, String)> {
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Error { code, message, .. } => Ok((code, message)),
        other => bail!("expected an error, got {other:?}"),
    }
}
