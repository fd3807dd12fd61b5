use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use pulse::{Settings, Standalone};
use pulse_ingest::settings::{ApiKeySettings, Role};
use pulse_protocol::{Channel, ClientMessage, ControlMessage, Event, ServerFrame};
use pulse_runtime::{Secret, Shutdown};
use pulse_testkit::WsClient;
use serde_json::{Value, json};

pub const AGENT_KEY: &str = "test-agent-key";
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Defaults with port 0, no demo, no dashboard, an agent key and generous
/// connection limits.
pub fn settings() -> Settings {
    let mut s = Settings::defaults().unwrap();
    s.http.port = 0;
    s.demo.enabled = false;
    s.gateway.static_dir = None;
    s.gateway.drain_window = Duration::from_millis(300);
    s.limits.connections_per_ip_per_sec = 100_000;
    s.ingest.api_keys.push(ApiKeySettings {
        name: "test-agent".into(),
        key: Secret::new(AGENT_KEY),
        role: Role::Agent,
        channels: None,
    });
    s
}

pub struct TestPulse {
    pub port: u16,
    pub shutdown: Shutdown,
    pub stopped: tokio::task::JoinHandle<std::io::Result<()>>,
    pub http: reqwest::Client,
    pub app_fleet: Option<std::sync::Arc<pulse_probe::FleetStats>>,
}

pub async fn spawn(settings: Settings) -> anyhow::Result<TestPulse> {
    if std::env::var_os("TEST_LOG").is_some() {
        pulse_runtime::init_test_logging();
    }
    let app = Standalone::build(settings).await?;
    let port = app.port();
    let app_fleet = app.fleet_stats();
    let shutdown = Shutdown::new();
    let stopped = tokio::spawn(app.run_until(shutdown.clone()));
    Ok(TestPulse { port, shutdown, stopped, http: reqwest::Client::new(), app_fleet })
}

impl TestPulse {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.get(self.url(path)).send().await?)
    }

    pub async fn post_report(&self, report: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.post(self.url("/api/v1/reports")).bearer_auth(AGENT_KEY).json(report).send().await?)
    }

    /// A WebSocket client that has read `welcome` and subscribed to `channels`.
    pub async fn subscriber(&self, channels: &[&str]) -> anyhow::Result<WsClient> {
        let mut client = WsClient::connect(&format!("ws://127.0.0.1:{}/ws", self.port)).await?;
        match client.recv_control(DEADLINE).await? {
            ControlMessage::Welcome { .. } => {}
            other => bail!("expected welcome, got {other:?}"),
        }
        for channel in channels {
            client.send(&ClientMessage::Subscribe { channel: Channel::parse(channel)?, since: None }).await?;
            // Events of the channels subscribed before may come first (the
            // demo fleet is busy); they are skipped.
            loop {
                match client.recv(DEADLINE).await? {
                    ServerFrame::Control(ControlMessage::Subscribed { .. }) => break,
                    ServerFrame::Event(_) => {}
                    ServerFrame::Control(other) => bail!("expected subscribed to {channel}, got {other:?}"),
                }
            }
        }
        Ok(client)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        pulse_testkit::within("standalone to stop", DEADLINE, self.stopped).await???;
        Ok(())
    }
}

/// Reads events until `matches` accepts one; control frames are skipped.
pub async fn next_event_where(client: &mut WsClient, mut matches: impl FnMut(&Event) -> bool) -> anyhow::Result<Event> {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        if let ServerFrame::Event(event) = client.recv(left).await.context("waiting for an event")?
            && matches(&event)
        {
            return Ok(event);
        }
    }
}

/// Reads events until one of each `(type, channel)` pair has arrived.
pub async fn expect_events(client: &mut WsClient, wanted: &[(&str, &str)]) -> anyhow::Result<Vec<Event>> {
    let mut missing: BTreeSet<(String, String)> =
        wanted.iter().map(|(t, c)| ((*t).to_owned(), (*c).to_owned())).collect();
    let mut got = Vec::new();
    while !missing.is_empty() {
        let event = next_event_where(client, |_| true).await.with_context(|| format!("still missing {missing:?}"))?;
        missing.remove(&(event.event_type.as_str().to_owned(), event.channel.as_str().to_owned()));
        got.push(event);
    }
    Ok(got)
}

/// A report of `agent` whose `disk:/` (L3) check has `status`.
pub fn report(agent: &str, id: &str, disk_status: &str) -> Value {
    json!({
        "report_id": id,
        "agent_id": agent,
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "checks": [
            {"name": "disk:/", "level": "L3", "status": disk_status, "metrics": {"used_pct": 97.5}},
            {"name": "cpu", "level": "L2", "status": "ok", "metrics": {"usage_pct": 12.0}}
        ]
    })
}
