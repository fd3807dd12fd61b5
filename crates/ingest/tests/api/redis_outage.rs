//! Redis going away and coming back.

use pulse_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DEADLINE, disk_failing, disk_ok, error_of, json_of, report, spawn_app};

#[tokio::test]
async fn without_redis_requests_fail_fast_with_503_and_recover_by_themselves() {
    let mut app = spawn_app().await;
    json_of(app.post_report(&report("web-1", "r-1", disk_ok())).await, StatusCode::ACCEPTED).await;
    assert_eq!(app.readyz().await, StatusCode::OK);

    app.redis.as_mut().unwrap().stop().unwrap();

    let response = app.post_report(&report("web-1", "r-2", disk_failing())).await;
    assert_eq!(response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()).as_deref(), Some("2"));
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    let unavailable = [
        app.post_heartbeat(&json!({"agent_id": "web-1"})).await,
        app.publish(&json!({"channel": "deploys", "type": "x", "idempotency_key": "k-1"})).await,
        app.get("/api/v1/agents", Some(&app.admin_token())).await,
        app.get("/api/v1/channels/deploys/history", Some(&app.admin_token())).await,
    ];
    for response in unavailable {
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(app.readyz().await, StatusCode::SERVICE_UNAVAILABLE);

    // Back, empty (as after a crash without persistence).
    app.redis.as_mut().unwrap().restart().await.unwrap();
    wait_until("ingest is ready again", DEADLINE, || async { app.readyz().await == StatusCode::OK }).await.unwrap();
    json_of(app.post_report(&report("web-1", "r-2", disk_failing())).await, StatusCode::ACCEPTED).await;
    assert_eq!(app.types("alerts").await, ["alert_triggered"]);
    // The publish that failed did not keep its idempotency key.
    let published = json_of(
        app.publish(&json!({"channel": "deploys", "type": "x", "idempotency_key": "k-1"})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(published["duplicate"], false);
}
