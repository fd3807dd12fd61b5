use std::collections::BTreeSet;
use std::time::Duration;

use crate::helpers::{DEADLINE, next_event_where, settings, spawn};

#[tokio::test]
async fn the_demo_fleet_reports_raises_alerts_and_decides_through_the_api() {
    let mut s = settings();
    s.demo.enabled = true;
    s.demo.agents = 6;
    s.demo.interval = Duration::from_millis(200);
    s.demo.l3_failure_rate = 0.3;
    s.demo.silent_agents = 0;
    let pulse = spawn(s).await.unwrap();
    let mut client = pulse.subscriber(&["reports", "alerts", "decisions"]).await.unwrap();
    let mut agents = BTreeSet::new();
    let mut types = BTreeSet::new();
    while agents.len() < 4 || !types.contains("alert_triggered") || !types.contains("decision_made") {
        let event = next_event_where(&mut client, |_| true).await.unwrap();
        if event.event_type.as_str() == "report_received" {
            agents.insert(event.data["agent_id"].as_str().unwrap().to_owned());
        }
        types.insert(event.event_type.as_str().to_owned());
    }
    let stats = pulse.app_fleet.as_ref().unwrap().snapshot();
    assert!(stats.accepted > 0 && stats.decisions > 0, "{stats}");
    assert_eq!((stats.rejected, stats.failed), (0, 0), "{stats}");
    pulse.stop().await.unwrap();
}

#[tokio::test]
async fn the_checker_takes_a_silent_demo_agent_offline() {
    let mut s = settings();
    s.demo.enabled = true;
    s.demo.agents = 2;
    s.demo.interval = Duration::from_millis(100);
    s.demo.silent_agents = 1;
    s.demo.silent_after = Duration::from_millis(300);
    s.checker.timeout = Duration::from_secs(1);
    s.checker.scan_interval = Duration::from_millis(100);
    let pulse = spawn(s).await.unwrap();
    let mut client = pulse.subscriber(&["agents"]).await.unwrap();
    // The last agent of the fleet is the silent one.
    let silent = pulse_probe::agent_name(1);
    let event = pulse_testkit::within(
        "the silent agent to go offline",
        DEADLINE,
        next_event_where(&mut client, |e| {
            e.event_type.as_str() == "agent_status_changed"
                && e.data["new_status"] == "offline"
                && e.data["agent_id"] == silent.as_str()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(event.data["agent_id"], silent.as_str());
    // The agent that keeps reporting stays online.
    let agents: serde_json::Value = pulse.get("/api/v1/agents").await.unwrap().json().await.unwrap();
    let text = agents.to_string();
    assert!(text.contains(&pulse_probe::agent_name(0)), "{text}");
    assert_eq!(pulse.app_fleet.as_ref().unwrap().snapshot().silenced, 1);
    pulse.stop().await.unwrap();
}
