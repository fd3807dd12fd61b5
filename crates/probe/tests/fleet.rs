#![allow(clippy::unwrap_used)]
//! The fleet against a real pulse-ingest (memory bus), and its retry rule
//! against a server that fails on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use pulse_ingest::settings::{ApiKeySettings, BusKind, Role};
use pulse_ingest::{Application, Settings};
use pulse_probe::{Fleet, FleetConfig, PostOutcome, SimAgent};
use pulse_runtime::{Secret, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "probe-test-key";
const PUBLISHER_KEY: &str = "probe-test-publisher";

async fn ingest() -> (u16, Shutdown, tokio::task::JoinHandle<std::io::Result<()>>) {
    if std::env::var_os("TEST_LOG").is_some() {
        pulse_runtime::init_test_logging();
    }
    let mut s = Settings::defaults().unwrap();
    s.bus = BusKind::Memory;
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.auth.anonymous = true;
    s.ingest.api_keys.push(ApiKeySettings {
        name: "fleet".into(),
        key: Secret::new(KEY),
        role: Role::Agent,
        channels: None,
    });
    s.ingest.api_keys.push(ApiKeySettings {
        name: "decider".into(),
        key: Secret::new(PUBLISHER_KEY),
        role: Role::Publisher,
        channels: None,
    });
    let app = Application::build(s).await.unwrap();
    let port = app.port();
    let shutdown = Shutdown::new();
    let stopped = tokio::spawn(app.run_until(shutdown.clone()));
    (port, shutdown, stopped)
}

fn config(base_url: String, key: &str) -> FleetConfig {
    FleetConfig {
        base_url,
        api_key: key.into(),
        agents: 4,
        interval: Duration::from_millis(100),
        l3_failure_rate: 0.5,
        silent_agents: 1,
        silent_after: Duration::from_millis(300),
        seed: 3,
        publisher_key: Some(PUBLISHER_KEY.into()),
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn a_fleet_reports_raises_and_resolves_alerts_through_ingest() {
    let (port, stop_ingest, stopped) = ingest().await;
    let base = format!("http://127.0.0.1:{port}");
    let fleet = Fleet::new(config(base.clone(), KEY)).unwrap();
    let stats = fleet.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(fleet.run(shutdown.clone()));
    pulse_testkit::wait_until("alerts to open and resolve, and an agent to go silent", Duration::from_secs(20), || {
        let base = base.clone();
        let stats = stats.clone();
        async move {
            if stats.snapshot().silenced == 0 {
                return false;
            }
            let alerts: serde_json::Value =
                reqwest::get(format!("{base}/api/v1/alerts")).await.unwrap().json().await.unwrap();
            let text = alerts.to_string();
            text.contains("\"open\"") && text.contains("\"resolved\"")
        }
    })
    .await
    .unwrap();
    shutdown.trigger();
    let summary = running.await.unwrap();
    assert!(summary.accepted > 4, "{summary}");
    assert_eq!((summary.rejected, summary.failed, summary.duplicates), (0, 0, 0), "{summary}");
    assert!(summary.l3_failures > 0, "{summary}");
    assert_eq!(summary.decisions, summary.l3_failures, "one decision per failure: {summary}");
    let decisions: serde_json::Value =
        reqwest::get(format!("{base}/api/v1/channels/decisions/history")).await.unwrap().json().await.unwrap();
    assert!(decisions.to_string().contains("decision_made"), "{decisions}");
    assert_eq!(summary.silenced, 1, "{summary}");
    assert_eq!(stats.snapshot(), summary);
    let agents: serde_json::Value = reqwest::get(format!("{base}/api/v1/agents")).await.unwrap().json().await.unwrap();
    for i in 0..4 {
        assert!(agents.to_string().contains(&pulse_probe::agent_name(i)), "{agents}");
    }
    stop_ingest.trigger();
    stopped.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_rejected_without_retries() {
    let (port, stop_ingest, stopped) = ingest().await;
    let fleet = Fleet::new(config(format!("http://127.0.0.1:{port}"), "not-a-key")).unwrap();
    let report = SimAgent::new(0, 1, "r", 0.0).next_report(Utc::now());
    match fleet.post(&report).await {
        PostOutcome::Rejected { status, .. } => assert_eq!(status, 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(fleet.stats().snapshot().retries, 0);
    stop_ingest.trigger();
    stopped.await.unwrap().unwrap();
}

/// A server that answers 503 to the first `failures` requests and 202 after,
/// recording every body it receives.
async fn flaky_server(failures: usize) -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    flaky_server_with(failures, 0).await
}

/// Like [`flaky_server`], but never answers the first `hangs` requests.
async fn flaky_server_with(failures: usize, hangs: usize) -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then the body by Content-Length.
                let body = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break buf[end + 4..end + 4 + length].to_vec();
                        }
                    }
                };
                let count = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(serde_json::from_slice(&body).unwrap());
                    seen.len()
                };
                if count <= hangs {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let response = if count <= failures {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                } else {
                    let body = r#"{"report_id":"x","duplicate":false}"#;
                    format!(
                        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, bodies)
}

#[tokio::test]
async fn a_5xx_is_retried_with_the_same_report_id() {
    let (port, bodies) = flaky_server(2).await;
    let fleet = Fleet::new(config(format!("http://127.0.0.1:{port}"), KEY)).unwrap();
    let report = SimAgent::new(0, 1, "r", 0.0).next_report(Utc::now());
    assert_eq!(fleet.post(&report).await, PostOutcome::Accepted { duplicate: false });
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| b["report_id"] == report.report_id.as_str()), "{bodies:?}");
    assert_eq!(fleet.stats().snapshot().retries, 2);
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_given_up_on() {
    let (port, bodies) = flaky_server(usize::MAX).await;
    let fleet = Fleet::new(config(format!("http://127.0.0.1:{port}"), KEY)).unwrap();
    let report = SimAgent::new(0, 1, "r", 0.0).next_report(Utc::now());
    assert!(matches!(fleet.post(&report).await, PostOutcome::Failed(_)));
    assert_eq!(bodies.lock().unwrap().len(), 1 + pulse_probe::MAX_RETRIES as usize);
}

#[tokio::test]
async fn a_timeout_is_retried_with_the_same_report_id() {
    let (port, bodies) = flaky_server_with(0, 1).await;
    let mut config = config(format!("http://127.0.0.1:{port}"), KEY);
    config.request_timeout = Duration::from_millis(300);
    let fleet = Fleet::new(config).unwrap();
    let report = SimAgent::new(0, 1, "r", 0.0).next_report(Utc::now());
    assert_eq!(fleet.post(&report).await, PostOutcome::Accepted { duplicate: false });
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|b| b["report_id"] == report.report_id.as_str()), "{bodies:?}");
}

#[test]
fn nonsense_settings_are_refused() {
    let base = FleetConfig::default();
    assert!(Fleet::new(FleetConfig { interval: Duration::ZERO, ..base.clone() }).is_err());
    assert!(Fleet::new(FleetConfig { l3_failure_rate: 1.5, ..base.clone() }).is_err());
    assert!(Fleet::new(FleetConfig { l3_failure_rate: f64::NAN, ..base }).is_err());
}
