//! `spawn_app()` and typed helpers for each endpoint.

use std::time::Duration;

use pulse_auth::Claims;
use pulse_bus::BusMessage;
use pulse_ingest::error::ErrorDetail;
use pulse_ingest::settings::{ApiKeySettings, BusKind, Role};
use pulse_ingest::{Application, IngestState, Settings};
use pulse_protocol::{Channel, ChannelPattern, Event, Position};
use pulse_runtime::{Secret, Shutdown};
use pulse_testkit::RedisServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An agent key that may report for any agent.
pub const AGENT_KEY: &str = "agent-key-0123456789";
/// An agent key limited to the `web-*` agents.
pub const WEB_AGENT_KEY: &str = "web-agent-key-0123456789";
/// A publisher key for every channel.
pub const PUBLISHER_KEY: &str = "publisher-key-0123456789";
/// A publisher key limited to `deploys` and `agent:web-*`.
pub const DEPLOY_PUBLISHER_KEY: &str = "deploy-publisher-key-0123456789";
/// The HS256 secret of browser tokens.
pub const JWT_SECRET: &str = "test-jwt-secret";

/// Generous: tests run on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: IngestState,
    /// The private Redis, absent in memory mode.
    pub redis: Option<RedisServer>,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn key(name: &str, key: &str, role: Role, channels: Option<&[&str]>) -> ApiKeySettings {
    ApiKeySettings {
        name: name.into(),
        key: Secret::new(key),
        role,
        channels: channels.map(|c| c.iter().map(|p| ChannelPattern::parse(p).expect("test pattern")).collect()),
    }
}

/// The settings tests run with: port 0, the test keys, HS256 tokens.
pub fn test_settings(bus: BusKind) -> Settings {
    let mut settings = Settings::defaults().expect("default settings");
    settings.bus = bus;
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.ingest.api_keys = vec![
        key("fleet", AGENT_KEY, Role::Agent, None),
        key("web-fleet", WEB_AGENT_KEY, Role::Agent, Some(&["agent:web-*"])),
        key("runner", PUBLISHER_KEY, Role::Publisher, None),
        key("deployer", DEPLOY_PUBLISHER_KEY, Role::Publisher, Some(&["deploys", "agent:web-*"])),
    ];
    settings.auth.secret = JWT_SECRET.into();
    settings
}

/// The app on its own Redis.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(BusKind::Redis, |_| {}).await
}

/// The app on the in-memory bus and store.
pub async fn spawn_memory_app() -> TestApp {
    spawn_app_with(BusKind::Memory, |_| {}).await
}

/// The app with settings adjusted by `tweak`.
pub async fn spawn_app_with(bus: BusKind, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    pulse_runtime::init_test_logging();
    let mut settings = test_settings(bus);
    let redis = match bus {
        BusKind::Redis => {
            let redis = RedisServer::start().await.expect("redis-server starts");
            settings.redis.url = redis.url();
            Some(redis)
        }
        BusKind::Memory => None,
    };
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("the app builds");
    start(app, redis)
}

/// Runs `app` until the test ends.
fn start(app: Application, redis: Option<RedisServer>) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::builder().timeout(DEADLINE).build().expect("client"),
        state,
        redis,
        shutdown,
    }
}

/// The app in memory mode, on `bus` and `store` (a store that misbehaves
/// on purpose, for instance).
pub async fn spawn_app_on(
    bus: std::sync::Arc<dyn pulse_bus::Bus>,
    store: std::sync::Arc<dyn pulse_store::Store>,
) -> TestApp {
    pulse_runtime::init_test_logging();
    let settings = test_settings(BusKind::Memory);
    let app = Application::build_with(settings, bus, store).expect("the app builds");
    start(app, None)
}

/// A report of `agent_id` with the given checks.
pub fn report(agent_id: &str, report_id: &str, checks: Value) -> Value {
    json!({"report_id": report_id, "agent_id": agent_id, "ts": "2026-11-22T10:00:00.000Z", "checks": checks})
}

/// A failing L3 disk check, and the same check passing.
pub fn disk_failing() -> Value {
    json!([{"name": "disk:/", "level": "L3", "status": "fail", "message": "97% used", "metrics": {"used_pct": 97.0}}])
}
pub fn disk_ok() -> Value {
    json!([{"name": "disk:/", "level": "L3", "status": "ok"}])
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs JSON with an optional bearer key.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, key: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_report(&self, body: &Value) -> reqwest::Response {
        self.post("/api/v1/reports", Some(AGENT_KEY), body).await
    }

    pub async fn post_heartbeat(&self, body: &Value) -> reqwest::Response {
        self.post("/api/v1/heartbeats", Some(AGENT_KEY), body).await
    }

    pub async fn post_decision(&self, body: &Value) -> reqwest::Response {
        self.post("/api/v1/decisions", Some(PUBLISHER_KEY), body).await
    }

    pub async fn publish(&self, body: &Value) -> reqwest::Response {
        self.post("/api/v1/publish", Some(PUBLISHER_KEY), body).await
    }

    /// GETs with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// A browser token reading `channels`.
    pub fn token(&self, channels: &[&str]) -> String {
        let patterns = channels.iter().map(|p| ChannelPattern::parse(p).expect("test pattern")).collect();
        Claims::new("tester", patterns, Duration::from_secs(300))
            .sign_hs256(JWT_SECRET.as_bytes())
            .expect("token signed")
    }

    /// A token for every channel.
    pub fn admin_token(&self) -> String {
        self.token(&["*"])
    }

    /// Every event in a channel's history, read from the bus directly.
    pub async fn events(&self, channel: &str) -> Vec<Event> {
        let channel = Channel::parse(channel).expect("test channel");
        self.state.bus().history(&channel, Position::ZERO, 10_000).await.expect("history readable").events
    }

    /// The event types in a channel's history.
    pub async fn types(&self, channel: &str) -> Vec<String> {
        self.events(channel).await.into_iter().map(|e| e.event_type.to_string()).collect()
    }

    /// Every event in every channel the tests look at.
    pub async fn all_events(&self) -> Vec<Event> {
        let mut all = Vec::new();
        for channel in ["agents", "alerts", "reports", "decisions", "deploys", "agent:web-1", "agent:db-1"] {
            all.extend(self.events(channel).await);
        }
        all
    }

    /// GETs `/readyz` and returns its status.
    pub async fn readyz(&self) -> StatusCode {
        self.get("/readyz", None).await.status()
    }
}

/// A subscription's next event, failing after the deadline.
pub async fn next_event(subscription: &mut pulse_bus::Subscription) -> Event {
    let message = tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("an event arrives in time")
        .expect("the subscription is open");
    match message {
        BusMessage::Event(event) => (*event).clone(),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Reads an error answer: its status and detail.
pub async fn error_of(response: reqwest::Response) -> (StatusCode, ErrorDetail) {
    let status = response.status();
    let text = response.text().await.expect("body read");
    let body: pulse_ingest::error::ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    (status, body.error)
}

/// Reads a JSON answer, asserting its status.
pub async fn json_of(response: reqwest::Response, expected: StatusCode) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body read");
    assert_eq!(status, expected, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
