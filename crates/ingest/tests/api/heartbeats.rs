//! `POST /api/v1/heartbeats`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_of, json_of, spawn_app};

#[tokio::test]
async fn a_heartbeat_brings_a_new_agent_online() {
    let app = spawn_app().await;
    let answer = json_of(app.post_heartbeat(&json!({"agent_id": "db-1"})).await, StatusCode::ACCEPTED).await;
    assert_eq!(answer["agent_id"], "db-1");
    assert_eq!(answer["status"], "online");
    assert_eq!(answer["health"], "unknown");
    assert_eq!(app.types("agents").await, ["agent_status_changed"]);
    assert_eq!(app.types("agent:db-1").await, ["agent_status_changed"]);

    // A second heartbeat changes no status: nothing more is published.
    let answer = json_of(
        app.post_heartbeat(&json!({"agent_id": "db-1", "ts": "2026-11-22T10:00:00Z"})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(answer["status"], "online");
    assert_eq!(app.types("agents").await.len(), 1);

    let agent = json_of(app.get("/api/v1/agents/db-1", Some(&app.admin_token())).await, StatusCode::OK).await;
    assert_eq!(agent["status"], "online");
}

#[tokio::test]
async fn a_bad_heartbeat_names_the_field() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.post_heartbeat(&json!({"agent_id": "db 1"})).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::BAD_REQUEST, "invalid_field", Some("agent_id"))
    );
    let (status, error) = error_of(app.post_heartbeat(&json!({"agent_id": "db-1", "ts": "noon"})).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("ts")));
    assert!(error.message.contains("invalid timestamp"), "{}", error.message);
    let (status, error) = error_of(app.post_heartbeat(&json!({})).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::BAD_REQUEST, "missing_field", Some("agent_id"))
    );
    assert!(app.all_events().await.is_empty());
}
