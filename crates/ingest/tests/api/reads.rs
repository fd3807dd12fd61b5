//! The read API: agents, alerts, channel history.

use std::time::Duration;

use pulse_auth::Claims;
use pulse_protocol::ChannelPattern;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{JWT_SECRET, disk_failing, error_of, json_of, report, spawn_app, spawn_app_with};
use pulse_ingest::settings::BusKind;

#[tokio::test]
async fn agents_and_alerts_are_filtered_by_the_tokens_channels() {
    let app = spawn_app().await;
    for (agent, id) in [("web-1", "r-1"), ("db-1", "r-2")] {
        json_of(app.post_report(&report(agent, id, disk_failing())).await, StatusCode::ACCEPTED).await;
    }

    let all = json_of(app.get("/api/v1/agents", Some(&app.token(&["agents"]))).await, StatusCode::OK).await;
    let ids: Vec<&str> = all["agents"].as_array().unwrap().iter().map(|a| a["agent_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["db-1", "web-1"]);
    assert_eq!(all["agents"][1]["health"], "critical");
    assert_eq!(all["agents"][1]["checks"][0]["name"], "disk:/");

    let web_only = app.token(&["agent:web-*"]);
    let some = json_of(app.get("/api/v1/agents", Some(&web_only)).await, StatusCode::OK).await;
    assert_eq!(some["agents"].as_array().unwrap().len(), 1);
    assert_eq!(some["agents"][0]["agent_id"], "web-1");

    json_of(app.get("/api/v1/agents/web-1", Some(&web_only)).await, StatusCode::OK).await;
    let (status, error) = error_of(app.get("/api/v1/agents/db-1", Some(&web_only)).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::FORBIDDEN, "forbidden"));

    let history = json_of(app.get("/api/v1/channels/agent:web-1/history", Some(&web_only)).await, StatusCode::OK).await;
    assert_eq!(history["channel"], "agent:web-1");
    let types: Vec<&str> = history["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["agent_status_changed", "report_received", "alert_triggered"]);

    let alerts = json_of(app.get("/api/v1/alerts", Some(&app.token(&["alerts"]))).await, StatusCode::OK).await;
    assert_eq!(alerts["open"].as_array().unwrap().len(), 2);
    let alerts = json_of(app.get("/api/v1/alerts", Some(&web_only)).await, StatusCode::OK).await;
    assert_eq!(alerts["open"].as_array().unwrap().len(), 1);
    assert_eq!(alerts["open"][0]["agent_id"], "web-1");
    assert_eq!(alerts["open"][0]["level"], "L3");
}

#[tokio::test]
async fn unknown_and_malformed_agent_ids() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.get("/api/v1/agents/nobody", Some(&app.admin_token())).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::NOT_FOUND, "not_found", Some("agent_id"))
    );
    let (status, error) = error_of(app.get("/api/v1/agents/bad%20id", Some(&app.admin_token())).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::BAD_REQUEST, "invalid_field", Some("agent_id"))
    );
}

#[tokio::test]
async fn history_pages_forward_from_an_offset() {
    let app = spawn_app().await;
    for n in 0..5 {
        json_of(
            app.publish(&json!({"channel": "deploys", "type": "deploy.step", "data": n})).await,
            StatusCode::ACCEPTED,
        )
        .await;
    }
    let token = app.token(&["deploys"]);
    let latest = json_of(app.get("/api/v1/channels/deploys/history?limit=2", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(
        latest["events"].as_array().unwrap().iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        [json!(3), json!(4)]
    );
    assert_eq!(latest["truncated"], false);
    assert_eq!(latest["next"], latest["events"][1]["id"]);

    let everything =
        json_of(app.get("/api/v1/channels/deploys/history?after=0-0", Some(&token)).await, StatusCode::OK).await;
    let events = everything["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0]["type"], "deploy.step");
    assert_eq!(events[0]["channel"], "deploys");

    let after = events[1]["id"].as_str().unwrap();
    let page = json_of(
        app.get(&format!("/api/v1/channels/deploys/history?after={after}&limit=2"), Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        page["events"].as_array().unwrap().iter().map(|e| e["data"].clone()).collect::<Vec<_>>(),
        [json!(2), json!(3)]
    );
    let next = page["next"].as_str().unwrap();
    let rest =
        json_of(app.get(&format!("/api/v1/channels/deploys/history?after={next}"), Some(&token)).await, StatusCode::OK)
            .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    let head = rest["next"].as_str().unwrap();
    let empty =
        json_of(app.get(&format!("/api/v1/channels/deploys/history?after={head}"), Some(&token)).await, StatusCode::OK)
            .await;
    assert_eq!((empty["events"].clone(), empty["next"].as_str()), (json!([]), Some(head)));
}

/// An `after` from a history that was lost (Redis flushed), one the
/// channel never issued (ahead of its head), or one without epoch (from
/// before epochs) cannot be continued: `truncated`, and `next` is the head
/// to poll on from.
#[tokio::test]
async fn history_after_a_position_it_cannot_continue_is_truncated() {
    let app = spawn_app().await;
    let token = app.admin_token();
    let read = |after: String| {
        let app = &app;
        let token = token.clone();
        async move {
            json_of(
                app.get(&format!("/api/v1/channels/deploys/history?after={after}"), Some(&token)).await,
                StatusCode::OK,
            )
            .await
        }
    };
    let a = json_of(app.publish(&json!({"channel": "deploys", "type": "x", "data": "a"})).await, StatusCode::ACCEPTED)
        .await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert!(a_id.contains(':'), "ids carry their history's epoch: {a_id}");
    let page = read(a_id.clone()).await;
    assert_eq!((page["truncated"].clone(), page["next"].as_str()), (json!(false), Some(a_id.as_str())));

    // Ahead of the head: a day later in the same history.
    let (epoch, offset) = a_id.split_once(':').unwrap();
    let ms: u64 = offset.split_once('-').unwrap().0.parse().unwrap();
    let page = read(format!("{epoch}:{}-0", ms + 86_400_000)).await;
    assert_eq!((page["truncated"].clone(), page["next"].as_str()), (json!(true), Some(a_id.as_str())));
    // Without epoch.
    let page = read(offset.to_owned()).await;
    assert_eq!(page["truncated"], true);

    // The history is lost and a new one begins.
    let _: String = app.redis.as_ref().unwrap().cmd(&["FLUSHALL"]).await.unwrap();
    let d = json_of(app.publish(&json!({"channel": "deploys", "type": "x", "data": "d"})).await, StatusCode::ACCEPTED)
        .await;
    let page = read(a_id.clone()).await;
    assert_eq!(page["truncated"], true, "a position of the lost history cannot be continued");
    assert_eq!(page["events"], json!([]), "old events would land on the refetched state");
    assert_eq!(page["next"], d["id"], "poll on from the new history's head");
}

#[tokio::test]
async fn history_says_when_it_no_longer_reaches_back() {
    let app = spawn_app_with(BusKind::Redis, |s| s.redis.history_len = 3).await;
    let first =
        json_of(app.publish(&json!({"channel": "deploys", "type": "x", "data": 0})).await, StatusCode::ACCEPTED).await;
    for n in 1..10 {
        json_of(app.publish(&json!({"channel": "deploys", "type": "x", "data": n})).await, StatusCode::ACCEPTED).await;
    }
    let first_id = first["id"].as_str().unwrap();
    let page = json_of(
        app.get(&format!("/api/v1/channels/deploys/history?after={first_id}"), Some(&app.admin_token())).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["truncated"], true);
    // Nothing to apply on top of the refetched state; poll on from the head.
    assert_eq!(page["events"], json!([]));
    let latest =
        json_of(app.get("/api/v1/channels/deploys/history?limit=1", Some(&app.admin_token())).await, StatusCode::OK)
            .await;
    assert_eq!(page["next"], latest["next"]);
}

#[tokio::test]
async fn history_refuses_bad_parameters_and_foreign_channels() {
    let app = spawn_app().await;
    let token = app.admin_token();
    for (query, field) in
        [("after=yesterday", "after"), ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit")]
    {
        let (status, error) =
            error_of(app.get(&format!("/api/v1/channels/deploys/history?{query}"), Some(&token)).await).await;
        assert_eq!(
            (status, error.code.as_str(), error.field.as_deref()),
            (StatusCode::BAD_REQUEST, "invalid_field", Some(field)),
            "{query}"
        );
    }
    let (status, error) = error_of(app.get("/api/v1/channels/bad%20name/history", Some(&token)).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("channel")));
    let (status, error) =
        error_of(app.get("/api/v1/channels/alerts/history", Some(&app.token(&["agent:*"]))).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::FORBIDDEN, "forbidden", Some("channel"))
    );
}

#[tokio::test]
async fn reads_are_open_without_a_token_only_when_anonymous_access_is_on() {
    let closed = spawn_app().await;
    let (status, error) = error_of(closed.get("/api/v1/agents", None).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));

    let open = spawn_app_with(BusKind::Memory, |s| s.auth.anonymous = true).await;
    json_of(open.get("/api/v1/agents", None).await, StatusCode::OK).await;
    json_of(open.get("/api/v1/alerts", None).await, StatusCode::OK).await;
    json_of(open.get("/api/v1/channels/alerts/history", None).await, StatusCode::OK).await;
    // A token that verifies still limits to its channels.
    let (status, _) = error_of(open.get("/api/v1/channels/alerts/history", Some(&open.token(&["agents"]))).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // One that does not verify (malformed, wrong key, expired) is ignored:
    // the request reads anonymously.
    let mut expired = Claims::new("old", vec![ChannelPattern::parse("agents").unwrap()], Duration::ZERO);
    expired.exp -= 3600;
    let forged = Claims::new("eve", vec![ChannelPattern::parse("agents").unwrap()], Duration::from_secs(60));
    for token in [
        "not-a-jwt".to_owned(),
        expired.sign_hs256(JWT_SECRET.as_bytes()).unwrap(),
        forged.sign_hs256(b"another-secret").unwrap(),
    ] {
        json_of(open.get("/api/v1/agents", Some(&token)).await, StatusCode::OK).await;
        json_of(open.get("/api/v1/channels/alerts/history", Some(&token)).await, StatusCode::OK).await;
    }
    // Without a key to verify with, every token is ignored.
    let keyless = spawn_app_with(BusKind::Memory, |s| {
        s.auth.anonymous = true;
        s.auth.secret = String::new();
    })
    .await;
    json_of(keyless.get("/api/v1/channels/alerts/history", Some(&open.token(&["agents"]))).await, StatusCode::OK).await;
}
