//! `POST /api/v1/publish`, single and batch.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DEPLOY_PUBLISHER_KEY, PUBLISHER_KEY, error_of, json_of, spawn_app, spawn_memory_app};

#[tokio::test]
async fn a_single_event_is_published_with_its_type_and_data() {
    let app = spawn_app().await;
    let body = json!({"channel": "deploys", "type": "deploy.finished", "data": {"service": "api", "version": "1.4.2"}});
    let answer = json_of(app.publish(&body).await, StatusCode::ACCEPTED).await;
    let events = app.events("deploys").await;
    assert_eq!(events.len(), 1);
    assert_eq!(answer, json!({"channel": "deploys", "id": events[0].id.to_string(), "duplicate": false}));
    assert_eq!(events[0].event_type.as_str(), "deploy.finished");
    assert_eq!(events[0].data, json!({"service": "api", "version": "1.4.2"}));
}

#[tokio::test]
async fn a_batch_is_published_in_order() {
    let app = spawn_app().await;
    let body = json!({"events": [
        {"channel": "deploys", "type": "deploy.started", "data": 1},
        {"channel": "agent:web-1", "type": "remediation.started", "data": {"action": "restart"}},
        {"channel": "deploys", "type": "deploy.finished"},
    ]});
    let answer = json_of(app.publish(&body).await, StatusCode::ACCEPTED).await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["channel"], "agent:web-1");
    let deploys = app.events("deploys").await;
    assert_eq!(
        deploys.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["deploy.started", "deploy.finished"]
    );
    assert_eq!(deploys[1].data, json!(null), "data defaults to null");
    assert_eq!(results[2]["id"], deploys[1].id.to_string());
    assert_eq!(app.types("agent:web-1").await, ["remediation.started"]);
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_per_publisher() {
    let app = spawn_app().await;
    let body =
        json!({"channel": "agent:web-1", "type": "ticket.opened", "data": {"n": 1}, "idempotency_key": "ticket-77"});
    let first = json_of(app.publish(&body).await, StatusCode::ACCEPTED).await;
    let second = json_of(app.publish(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second, json!({"channel": "agent:web-1", "id": first["id"], "duplicate": true}));
    assert_eq!(app.events("agent:web-1").await.len(), 1);

    // Keys are scoped per publisher: another backend may use the same one.
    let other =
        json_of(app.post("/api/v1/publish", Some(DEPLOY_PUBLISHER_KEY), &body).await, StatusCode::ACCEPTED).await;
    assert_eq!(other["duplicate"], false);
    assert_eq!(app.events("agent:web-1").await.len(), 2);

    // A key names one event of one channel: the same key elsewhere publishes.
    let elsewhere = json!({"channel": "agent:web-2", "type": "ticket.opened", "idempotency_key": "ticket-77"});
    let elsewhere = json_of(app.publish(&elsewhere).await, StatusCode::ACCEPTED).await;
    assert_eq!((elsewhere["channel"].as_str(), elsewhere["duplicate"].as_bool()), (Some("agent:web-2"), Some(false)));
    assert_ne!(elsewhere["id"], first["id"]);

    // In a batch, a used key is reported as a duplicate and the rest publish.
    let batch = json!({"events": [body, {"channel": "agent:web-1", "type": "ticket.updated"}]});
    let answer = json_of(app.publish(&batch).await, StatusCode::ACCEPTED).await;
    assert_eq!(answer["results"][0]["duplicate"], true);
    assert_eq!(answer["results"][1]["duplicate"], false);
    assert_eq!(app.types("agent:web-1").await, ["ticket.opened", "ticket.opened", "ticket.updated"]);
}

#[tokio::test]
async fn reserved_and_malformed_types_are_refused() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.publish(&json!({"channel": "deploys", "type": "welcome"})).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("type")));
    assert!(error.message.contains("reserved"), "{}", error.message);
    let (status, error) = error_of(app.publish(&json!({"channel": "deploys", "type": "Deploy Done"})).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("type")));
    let (status, error) = error_of(app.publish(&json!({"channel": "no/slash", "type": "x"})).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::BAD_REQUEST, "invalid_field", Some("channel"))
    );
    let (status, error) =
        error_of(app.publish(&json!({"channel": "deploys", "type": "x", "idempotency_key": "has space"})).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("idempotency_key")));
    assert!(app.events("deploys").await.is_empty());
}

#[tokio::test]
async fn a_batch_with_one_bad_event_publishes_nothing() {
    let app = spawn_app().await;
    let bad_type = json!({"events": [
        {"channel": "deploys", "type": "deploy.started"},
        {"channel": "deploys", "type": "pong"},
    ]});
    let (status, error) = error_of(app.publish(&bad_type).await).await;
    assert_eq!((status, error.field.as_deref()), (StatusCode::BAD_REQUEST, Some("events[1].type")));

    // The deploy publisher may write `deploys` and `agent:web-*` only.
    let outside = json!({"events": [
        {"channel": "deploys", "type": "deploy.started"},
        {"channel": "agent:web-1", "type": "deploy.started"},
        {"channel": "alerts", "type": "deploy.started"},
    ]});
    let (status, error) = error_of(app.post("/api/v1/publish", Some(DEPLOY_PUBLISHER_KEY), &outside).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::FORBIDDEN, "forbidden", Some("events[2].channel"))
    );

    let too_many = json!({"events": vec![json!({"channel": "deploys", "type": "x"}); 101]});
    let (status, error) = error_of(app.publish(&too_many).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_events", Some("events"))
    );
    let (status, error) = error_of(app.publish(&json!({"events": []})).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "empty_batch"));

    assert!(app.all_events().await.is_empty(), "nothing was published");
}

#[tokio::test]
async fn publishing_works_in_memory_mode() {
    let app = spawn_memory_app().await;
    let body = json!({"channel": "deploys", "type": "deploy.finished", "idempotency_key": "k-1"});
    json_of(app.post("/api/v1/publish", Some(PUBLISHER_KEY), &body).await, StatusCode::ACCEPTED).await;
    let again = json_of(app.publish(&body).await, StatusCode::ACCEPTED).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.types("deploys").await, ["deploy.finished"]);
}

/// During a Redis write pause (what a managed failover does) publishes fail
/// with an unknown outcome; retried with the same idempotency key until
/// accepted, each is in history exactly once, under the id the answer gives.
#[tokio::test]
async fn retries_with_an_idempotency_key_during_a_write_pause_never_duplicate() {
    let app = spawn_app().await;
    let redis = app.redis.as_ref().unwrap();
    let _: String = redis.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]).await.unwrap();
    let mut outcomes = Vec::new();
    let mut answers = Vec::new();
    for n in 0..4 {
        let body =
            json!({"channel": "paused", "type": "job.done", "data": {"n": n}, "idempotency_key": format!("job-{n}")});
        let answer = loop {
            let response = app.publish(&body).await;
            if response.status() == StatusCode::ACCEPTED {
                break response.json::<serde_json::Value>().await.unwrap();
            }
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(response.headers().contains_key("retry-after"));
            let (_, error) = error_of(response).await;
            outcomes.push(error.code);
        };
        answers.push(answer);
    }
    assert!(
        outcomes.iter().any(|c| c == "outcome_unknown"),
        "a timed-out publish says its outcome is unknown: {outcomes:?}"
    );
    let events = app.events("paused").await;
    for (n, answer) in answers.iter().enumerate() {
        let copies: Vec<_> = events.iter().filter(|e| e.data["n"] == n).collect();
        assert_eq!(copies.len(), 1, "event {n} is published exactly once: {events:?}");
        assert_eq!(answer["id"], copies[0].id.to_string(), "the answer names the one copy");
    }
}
