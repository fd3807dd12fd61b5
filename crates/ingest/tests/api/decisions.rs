//! `POST /api/v1/decisions`.

use pulse_protocol::probe::Decision;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DEPLOY_PUBLISHER_KEY, error_of, json_of, spawn_app};

fn decision(id: &str, agents: &[&str]) -> Value {
    json!({
        "decision_id": id, "action": "restart_service", "reason": "nginx failed twice",
        "agent_ids": agents, "ts": "2026-11-22T10:00:00.000Z", "details": {"service": "nginx"}
    })
}

#[tokio::test]
async fn a_decision_is_published_on_decisions_and_each_named_agent_once() {
    let app = spawn_app().await;
    let body = decision("d-1", &["web-1", "db-1", "web-1"]);
    let answer = json_of(app.post_decision(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(answer["decision_id"], "d-1");
    assert_eq!(answer["duplicate"], false);
    let channels: Vec<&str> =
        answer["events"].as_array().unwrap().iter().map(|e| e["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["decisions", "agent:web-1", "agent:db-1"]);

    for channel in ["decisions", "agent:web-1", "agent:db-1"] {
        let events = app.events(channel).await;
        assert_eq!(events.len(), 1, "{channel}");
        assert_eq!(events[0].event_type.as_str(), "decision_made");
        let published: Decision = events[0].payload().unwrap();
        assert_eq!(published.decision_id, "d-1");
        assert_eq!(published.details, json!({"service": "nginx"}));
    }
    assert_eq!(answer["events"][0]["id"], app.events("decisions").await[0].id.to_string());

    // A retried decision is published once.
    let again = json_of(app.post_decision(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(again, json!({"decision_id": "d-1", "duplicate": true, "events": answer["events"]}));
    assert_eq!(app.events("decisions").await.len(), 1);
}

#[tokio::test]
async fn a_decision_needs_a_publisher_allowed_on_every_channel() {
    let app = spawn_app().await;
    let body = decision("d-2", &["web-1"]);
    let (status, error) = error_of(app.post("/api/v1/decisions", Some(crate::helpers::AGENT_KEY), &body).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    // This key may write `agent:web-*` but not `decisions`.
    let (status, error) = error_of(app.post("/api/v1/decisions", Some(DEPLOY_PUBLISHER_KEY), &body).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error.message.contains("decisions"), "{}", error.message);
    assert!(app.all_events().await.is_empty());
}

#[tokio::test]
async fn a_bad_decision_names_the_field() {
    let app = spawn_app().await;
    let mut body = decision("d-3", &["web-1"]);
    body["agent_ids"] = json!(["web-1", "bad id"]);
    let (status, error) = error_of(app.post_decision(&body).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("agent_ids[1]")));
    let mut body = decision("", &[]);
    body["decision_id"] = json!("");
    let (status, error) = error_of(app.post_decision(&body).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("decision_id")));
    let too_many: Vec<String> = (0..101).map(|i| format!("a-{i}")).collect();
    let mut body = decision("d-4", &[]);
    body["agent_ids"] = json!(too_many);
    let (status, error) = error_of(app.post_decision(&body).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_agents", Some("agent_ids"))
    );
    assert!(app.all_events().await.is_empty());
}
