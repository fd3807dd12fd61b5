//! `POST /api/v1/reports`: events, idempotency, the alert lifecycle.

use chrono::{Duration as ChronoDuration, Utc};
use pulse_protocol::probe::{AgentStatus, AgentStatusChange, Alert, AlertState, Report};
use pulse_protocol::{Channel, EventType};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, disk_failing, disk_ok, json_of, next_event, report, spawn_app, spawn_memory_app};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_report_publishes_status_report_and_alert_in_order_with_its_trace() {
    let app = spawn_app().await;
    let mut subscription = app.state.bus().subscription();
    let agent_channel = Channel::parse("agent:web-1").unwrap();
    subscription.subscribe(&agent_channel).await.unwrap();

    let body = report("web-1", "r-1", disk_failing());
    let response = app
        .client
        .post(app.url("/api/v1/reports"))
        .bearer_auth(crate::helpers::AGENT_KEY)
        .header("traceparent", TRACEPARENT)
        .json(&body)
        .send()
        .await
        .unwrap();
    let answer = json_of(response, StatusCode::ACCEPTED).await;
    assert_eq!(answer, json!({"report_id": "r-1", "duplicate": false}));

    // On the agent's channel: it came online, its report, its alert.
    let online = next_event(&mut subscription).await;
    let received = next_event(&mut subscription).await;
    let alert = next_event(&mut subscription).await;
    assert_eq!(online.event_type.as_str(), EventType::AGENT_STATUS_CHANGED);
    assert_eq!(received.event_type.as_str(), EventType::REPORT_RECEIVED);
    assert_eq!(alert.event_type.as_str(), EventType::ALERT_TRIGGERED);
    assert!(online.id.offset < received.id.offset && received.id.offset < alert.id.offset, "offsets increase");
    for event in [&online, &received, &alert] {
        assert_eq!(event.channel, agent_channel);
        assert_eq!(event.trace.as_deref(), Some(TRACEPARENT), "the request's trace is on {event:?}");
    }
    let change: AgentStatusChange = online.payload().unwrap();
    assert_eq!((change.old_status, change.new_status), (AgentStatus::Offline, AgentStatus::Online));
    let sent: Report = received.payload().unwrap();
    assert_eq!(sent.report_id, "r-1");
    assert_eq!(sent.checks[0].name, "disk:/");
    let alert: Alert = alert.payload().unwrap();
    assert_eq!((alert.check.as_str(), alert.state), ("disk:/", AlertState::Open));

    // And on the fleet channels, the same events once each.
    assert_eq!(app.types("agents").await, ["agent_status_changed"]);
    assert_eq!(app.types("reports").await, ["report_received"]);
    assert_eq!(app.types("alerts").await, ["alert_triggered"]);
    // History and live carry the same envelope.
    let history = app.events("agent:web-1").await;
    assert_eq!(history.len(), 3);
    assert_eq!(history[1], received);
}

#[tokio::test]
async fn a_retried_report_is_a_duplicate_and_raises_no_second_alert() {
    let app = spawn_app().await;
    let body = report("web-1", "r-retry", disk_failing());
    let first = json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    let second = json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second, json!({"report_id": "r-retry", "duplicate": true}));

    assert_eq!(app.types("alerts").await, ["alert_triggered"], "one alert only");
    assert_eq!(app.types("reports").await, ["report_received"], "one report only");
    assert_eq!(app.events("agent:web-1").await.len(), 3);
}

#[tokio::test]
async fn an_alert_is_raised_once_while_failing_and_resolved_when_the_check_recovers() {
    let app = spawn_app().await;
    for (id, checks) in [("r-1", disk_failing()), ("r-2", disk_failing()), ("r-3", disk_ok())] {
        json_of(app.post_report(&report("web-1", id, checks)).await, StatusCode::ACCEPTED).await;
    }
    assert_eq!(app.types("alerts").await, ["alert_triggered", "alert_resolved"]);
    assert_eq!(app.types("reports").await, ["report_received"; 3]);

    let alerts = json_of(app.get("/api/v1/alerts", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(alerts["open"], json!([]));
    assert_eq!(alerts["recent"][0]["check"], "disk:/");
    assert_eq!(alerts["recent"][0]["state"], "resolved");

    // Failing again opens a new alert.
    json_of(app.post_report(&report("web-1", "r-4", disk_failing())).await, StatusCode::ACCEPTED).await;
    let alerts = json_of(app.get("/api/v1/alerts", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(alerts["open"].as_array().unwrap().len(), 1);
    assert_eq!(app.types("alerts").await, ["alert_triggered", "alert_resolved", "alert_triggered"]);
}

#[tokio::test]
async fn an_offline_agent_that_reports_comes_back_online() {
    let app = spawn_app().await;
    json_of(app.post_report(&report("web-1", "r-1", disk_ok())).await, StatusCode::ACCEPTED).await;
    // What the heartbeat checker does when the agent goes silent.
    let changes = app.state.store().mark_silent_offline(Utc::now() + ChronoDuration::hours(1), 100).await.unwrap();
    assert_eq!(changes.len(), 1);
    let agent = json_of(app.get("/api/v1/agents/web-1", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(agent["status"], "offline");

    json_of(app.post_report(&report("web-1", "r-2", disk_ok())).await, StatusCode::ACCEPTED).await;
    let statuses: Vec<(String, String)> = app
        .events("agents")
        .await
        .iter()
        .map(|e| {
            let change: AgentStatusChange = e.payload().unwrap();
            (format!("{:?}", change.old_status), format!("{:?}", change.new_status))
        })
        .collect();
    assert_eq!(
        statuses,
        [("Offline".into(), "Online".into()), ("Online".into(), "Offline".into()), ("Offline".into(), "Online".into())]
    );
    let agent = json_of(app.get("/api/v1/agents/web-1", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(agent["status"], "online");
    assert_eq!(agent["last_report_id"], "r-2");
}

#[tokio::test]
async fn reports_work_in_memory_mode() {
    let app: TestApp = spawn_memory_app().await;
    let body = report("web-1", "r-1", disk_failing());
    json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    let again = json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(again["duplicate"], true);
    json_of(app.post_report(&report("web-1", "r-2", disk_ok())).await, StatusCode::ACCEPTED).await;
    assert_eq!(app.types("alerts").await, ["alert_triggered", "alert_resolved"]);
    let agents = json_of(app.get("/api/v1/agents", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(agents["agents"][0]["agent_id"], "web-1");
    assert_eq!(agents["agents"][0]["health"], "healthy");
    assert_eq!(app.readyz().await, StatusCode::OK);
}

#[tokio::test]
async fn reports_and_requests_are_counted_in_metrics() {
    let app = spawn_memory_app().await;
    let body = report("web-1", "r-metrics", disk_failing());
    json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    json_of(app.post_report(&body).await, StatusCode::ACCEPTED).await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    // The recorder is shared by every test in this binary: look for the
    // series, not for exact counts.
    for series in [
        r#"pulse_ingest_reports_total{outcome="accepted"}"#,
        r#"pulse_ingest_reports_total{outcome="duplicate"}"#,
        "pulse_ingest_alerts_raised_total",
        r#"pulse_ingest_events_published_total{source="report"}"#,
        r#"route="/api/v1/reports""#,
        "pulse_ingest_http_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
    // Every ingest metric has HELP text, and the process ones are there.
    let ingest: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("pulse_ingest_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n)))
        .collect();
    assert_eq!(ingest.len(), 6, "{ingest:?}");
    for name in ingest {
        assert!(metrics.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{metrics}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("process_resident_memory_bytes ")), "{metrics}");
}

/// A metric is kept exactly as sent, to the last bit: 17 significant
/// digits (what Python prints for 72.2 / 3) are parsed correctly rounded,
/// not one unit in the last place off.
#[tokio::test]
async fn metrics_are_kept_to_the_last_bit() {
    let app = spawn_app().await;
    let used_pct = 24.066_666_666_666_666_f64;
    let checks = json!([{"name": "disk:/", "level": "L2", "status": "ok", "metrics": {"used_pct": used_pct}}]);
    let response = app.post_report(&report("web-1", "r-exact", checks)).await;
    json_of(response, StatusCode::ACCEPTED).await;
    let events = app.events("reports").await;
    let sent: Report = events[0].payload().unwrap();
    assert_eq!(sent.checks[0].metrics["used_pct"].to_bits(), used_pct.to_bits());
}
