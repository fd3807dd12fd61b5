use crate::helpers::{expect_events, report, settings, spawn};

#[tokio::test]
async fn a_posted_report_and_its_alert_reach_subscribers() {
    let pulse = spawn(settings()).await.unwrap();
    let mut client = pulse.subscriber(&["reports", "alerts"]).await.unwrap();

    let response = pulse.post_report(&report("web-7", "r-1", "fail")).await.unwrap();
    assert_eq!(response.status(), 202);
    let events =
        expect_events(&mut client, &[("report_received", "reports"), ("alert_triggered", "alerts")]).await.unwrap();
    let alert = events.iter().find(|e| e.event_type.as_str() == "alert_triggered").unwrap();
    assert_eq!(alert.data["agent_id"], "web-7");
    assert_eq!(alert.data["check"], "disk:/");

    // The same report again is a duplicate: accepted, nothing published.
    let again: serde_json::Value =
        pulse.post_report(&report("web-7", "r-1", "fail")).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true);

    // Recovery resolves the alert.
    assert_eq!(pulse.post_report(&report("web-7", "r-2", "ok")).await.unwrap().status(), 202);
    let events =
        expect_events(&mut client, &[("report_received", "reports"), ("alert_resolved", "alerts")]).await.unwrap();
    assert!(events.iter().all(|e| e.data["report_id"] != "r-1"), "the duplicate was not published again");

    // The read API answers anonymously in standalone mode.
    let alerts: serde_json::Value = pulse.get("/api/v1/alerts").await.unwrap().json().await.unwrap();
    assert!(alerts.to_string().contains("web-7"), "{alerts}");
    pulse.stop().await.unwrap();
}

#[tokio::test]
async fn reports_need_an_agent_key() {
    let pulse = spawn(settings()).await.unwrap();
    let response = pulse
        .http
        .post(pulse.url("/api/v1/reports"))
        .bearer_auth("demo-agent-key")
        .json(&report("web-1", "r-1", "ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the demo key is only valid while the demo runs");
    pulse.stop().await.unwrap();
}

#[tokio::test]
async fn sse_on_the_same_port_streams_alerts() {
    let pulse = spawn(settings()).await.unwrap();
    let mut response = pulse.get("/sse?channels=alerts").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut posted = false;
    pulse_testkit::within("an alert over SSE", crate::helpers::DEADLINE, async {
        while !text.contains("alert_triggered") {
            if !posted && text.contains("subscribed") {
                assert_eq!(pulse.post_report(&report("edge-9", "r-sse", "fail")).await.unwrap().status(), 202);
                posted = true;
            }
            let chunk = response.chunk().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap();
    assert!(text.contains("edge-9"), "{text}");
    drop(response);
    pulse.stop().await.unwrap();
}
