//! API keys and browser tokens.

use std::time::Duration;

use pulse_auth::Claims;
use pulse_protocol::ChannelPattern;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    AGENT_KEY, JWT_SECRET, PUBLISHER_KEY, WEB_AGENT_KEY, disk_ok, error_of, json_of, report, spawn_app, spawn_app_with,
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

#[tokio::test]
async fn api_keys_from_the_environment_authenticate() {
    // What `PULSE__INGEST__API_KEYS` gives, loaded the way the binary loads
    // it (the test's own variables instead of the shared process ones).
    let env = [(
        "PULSE__INGEST__API_KEYS",
        r#"[{"name":"env-web","key":"env-web-key-0123","role":"agent","channels":["agent:web-*"]},
            {"name":"env-runner","key":"env-runner-key-0123","role":"publisher"}]"#,
    )];
    let from_env: pulse_ingest::Settings =
        pulse_runtime::SettingsLoader::new("ingest", pulse_ingest::settings::DEFAULTS).env_vars(env).load().unwrap();
    let short: pulse_ingest::Settings = pulse_runtime::SettingsLoader::new("ingest", pulse_ingest::settings::DEFAULTS)
        .env_vars([("PULSE__INGEST__API_KEYS", "env-fleet:agent:env-fleet-key-0123")])
        .load()
        .unwrap();
    let mut keys = from_env.ingest.api_keys;
    keys.extend(short.ingest.api_keys);
    let app =
        spawn_app_with(pulse_ingest::settings::BusKind::Memory, move |settings| settings.ingest.api_keys = keys).await;

    let accepted = app.post("/api/v1/reports", Some("env-web-key-0123"), &report("web-1", "r-1", disk_ok())).await;
    assert_eq!(json_of(accepted, StatusCode::ACCEPTED).await["duplicate"], false);
    let accepted = app.post("/api/v1/reports", Some("env-fleet-key-0123"), &report("db-1", "r-2", disk_ok())).await;
    assert_eq!(json_of(accepted, StatusCode::ACCEPTED).await["duplicate"], false);
    // The channel limit of the JSON form holds.
    let (status, error) =
        error_of(app.post("/api/v1/reports", Some("env-web-key-0123"), &report("db-1", "r-3", disk_ok())).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    // And the role: a publisher key cannot report.
    let (status, _) =
        error_of(app.post("/api/v1/reports", Some("env-runner-key-0123"), &report("web-1", "r-4", disk_ok())).await)
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let published = app
        .post("/api/v1/publish", Some("env-runner-key-0123"), &json!({"channel": "deploys", "type": "deploy"}))
        .await;
    json_of(published, StatusCode::ACCEPTED).await;
    // The keys the tests usually use are not there.
    let (status, _) =
        error_of(app.post("/api/v1/reports", Some(AGENT_KEY), &report("web-1", "r-5", disk_ok())).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
