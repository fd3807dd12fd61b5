//! API keys and browser tokens.

use std::time::Duration;

use pulse_auth::Claims;
use pulse_protocol::ChannelPattern;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    AGENT_KEY, JWT_SECRET, PUBLISHER_KEY, WEB_AGENT_KEY, disk_ok, error_of, json_of, report, spawn_app,
    spawn_memory_app,
};

#[tokio::test]
async fn writes_without_a_valid_key_are_401_with_a_json_body() {
    let app = spawn_app().await;
    let body = report("web-1", "r-1", disk_ok());
    for key in [None, Some("wrong-key"), Some("")] {
        let response = app.post("/api/v1/reports", key, &body).await;
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        let (status, error) = error_of(response).await;
        assert_eq!((status, error.code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{key:?}");
        assert!(challenge.unwrap().starts_with("Bearer"), "{key:?}");
    }
    let response = app
        .client
        .post(app.url("/api/v1/publish"))
        .header("authorization", format!("Basic {PUBLISHER_KEY}"))
        .json(&json!({"channel": "x", "type": "y"}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error.message.contains("Bearer"), "{}", error.message);
    assert!(app.all_events().await.is_empty());
}

#[tokio::test]
async fn keys_of_the_wrong_role_are_403() {
    let app = spawn_app().await;
    let (status, error) =
        error_of(app.post("/api/v1/reports", Some(PUBLISHER_KEY), &report("web-1", "r-1", disk_ok())).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(error.message.contains("role publisher"), "{}", error.message);
    let (status, _) =
        error_of(app.post("/api/v1/heartbeats", Some(PUBLISHER_KEY), &json!({"agent_id": "a"})).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        error_of(app.post("/api/v1/publish", Some(AGENT_KEY), &json!({"channel": "x", "type": "y"})).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(app.all_events().await.is_empty());
}

#[tokio::test]
async fn an_agent_key_limited_to_patterns_reports_for_those_agents_only() {
    let app = spawn_app().await;
    json_of(
        app.post("/api/v1/reports", Some(WEB_AGENT_KEY), &report("web-1", "r-1", disk_ok())).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let (status, error) =
        error_of(app.post("/api/v1/reports", Some(WEB_AGENT_KEY), &report("db-1", "r-2", disk_ok())).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::FORBIDDEN, "forbidden", Some("agent_id"))
    );
    let (status, _) =
        error_of(app.post("/api/v1/heartbeats", Some(WEB_AGENT_KEY), &json!({"agent_id": "db-1"})).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(app.events("agent:db-1").await.is_empty());
}

#[tokio::test]
async fn browser_tokens_must_verify_and_be_current() {
    let app = spawn_app().await;
    let mut expired = Claims::new("old", vec![ChannelPattern::parse("*").unwrap()], Duration::ZERO);
    expired.exp -= 3600;
    let expired = expired.sign_hs256(JWT_SECRET.as_bytes()).unwrap();
    let (status, error) = error_of(app.get("/api/v1/agents", Some(&expired)).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert!(error.message.contains("expired"), "{}", error.message);

    let forged = Claims::new("eve", vec![ChannelPattern::parse("*").unwrap()], Duration::from_secs(60))
        .sign_hs256(b"another-secret")
        .unwrap();
    let (status, error) = error_of(app.get("/api/v1/alerts", Some(&forged)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error.message.contains("signature"), "{}", error.message);

    // API keys are not browser tokens.
    let (status, _) = error_of(app.get("/api/v1/agents", Some(PUBLISHER_KEY)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A token not valid yet (`nbf` an hour ahead) is refused on the read API;
/// one with an `exp` beyond any clock (≥ 2^63) is served, not a panic.
#[tokio::test]
async fn browser_tokens_not_valid_yet_are_refused_and_far_future_ones_served() {
    let app = spawn_memory_app().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut early = Claims::new("eve", vec![ChannelPattern::parse("*").unwrap()], Duration::from_secs(7200));
    early.nbf = Some(now + 3600);
    let early = early.sign_hs256(JWT_SECRET.as_bytes()).unwrap();
    let (status, error) = error_of(app.get("/api/v1/agents", Some(&early)).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert!(error.message.contains("not valid yet"), "{}", error.message);

    let mut far = Claims::new("zed", vec![ChannelPattern::parse("*").unwrap()], Duration::ZERO);
    far.exp = 1 << 63;
    let far = far.sign_hs256(JWT_SECRET.as_bytes()).unwrap();
    json_of(app.get("/api/v1/agents", Some(&far)).await, StatusCode::OK).await;
}
