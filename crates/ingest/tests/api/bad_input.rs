//! Bad input: 4xx with a JSON body naming the field; nothing is written.

use pulse_ingest::settings::BusKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{AGENT_KEY, TestApp, disk_failing, error_of, report, spawn_app, spawn_app_with};

/// Asserts that nothing at all was written: no agent, no event.
async fn assert_nothing_written(app: &TestApp) {
    let agents = app.state.store().agents().await.expect("agents readable");
    assert!(agents.is_empty(), "no agent state: {agents:?}");
    let events = app.all_events().await;
    assert!(events.is_empty(), "nothing published: {events:?}");
}

#[tokio::test]
async fn malformed_reports_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"report_id": "r", "agent_id": "web-1", "ts": "2026-11-22T10:00:00Z"}), "missing_field", Some("checks")),
        (
            report("web-1", "r", json!([{"name": "x", "level": "L4", "status": "ok"}])),
            "invalid_field",
            Some("checks[0].level"),
        ),
        (
            report("web-1", "r", json!([{"name": "x", "level": "L1", "status": "ok"}, {"name": "y", "level": "L1"}])),
            "missing_field",
            Some("checks[1].status"),
        ),
        (
            report("web-1", "r", json!([{"name": "x", "level": "L1", "status": "sad"}])),
            "invalid_field",
            Some("checks[0].status"),
        ),
        (
            report("web-1", "r", json!([{"name": "", "level": "L1", "status": "ok"}])),
            "invalid_field",
            Some("checks[0].name"),
        ),
        (report("web 1", "r", json!([])), "invalid_field", Some("agent_id")),
        (report("web-1", "", json!([])), "invalid_field", Some("report_id")),
        (report("web-1", "r", json!({"not": "a list"})), "invalid_field", Some("checks")),
        (
            json!({"report_id": "r", "agent_id": "web-1", "ts": "2026-11-22T10:00:00Z", "checks": [], "extra": 1}),
            "unknown_field",
            Some("extra"),
        ),
        (json!([1, 2, 3]), "invalid_field", None),
    ];
    for (body, code, field) in cases {
        let (status, error) = error_of(app.post_report(&body).await).await;
        assert_eq!(
            (status, error.code.as_str(), error.field.as_deref()),
            (StatusCode::BAD_REQUEST, code, field),
            "{body}"
        );
        assert!(!error.message.is_empty());
    }
    let (status, error) =
        error_of(app.post_report(&report("web-1", "r", json!([{"name": "x", "level": "L4", "status": "ok"}]))).await)
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.message.contains("unknown variant `L4`"), "{}", error.message);
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn broken_json_and_wrong_content_types() {
    let app = spawn_app().await;
    let response = app.post_raw("/api/v1/reports", AGENT_KEY, "application/json", b"{\"report_id\": ".to_vec()).await;
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str(), error.field), (StatusCode::BAD_REQUEST, "malformed_json", None));
    assert!(error.message.contains("line 1"), "{}", error.message);
    let response = app.post_raw("/api/v1/reports", AGENT_KEY, "text/plain", b"{}".to_vec()).await;
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn too_large_bodies_are_413_and_too_many_checks_422() {
    let app = spawn_app_with(BusKind::Redis, |s| {
        s.ingest.max_body_bytes = 4096;
        s.ingest.max_checks = 3;
    })
    .await;
    let big = report("web-1", "r-big", json!([{"name": "x".repeat(5000), "level": "L1", "status": "ok"}]));
    let (status, error) = error_of(app.post_report(&big).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    assert!(error.message.contains("4096"), "{}", error.message);

    let checks: Vec<_> = (0..4).map(|i| json!({"name": format!("c{i}"), "level": "L3", "status": "fail"})).collect();
    let (status, error) = error_of(app.post_report(&report("web-1", "r-many", json!(checks))).await).await;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_checks", Some("checks"))
    );
    assert!(error.message.contains("4 checks") && error.message.contains("at most 3"), "{}", error.message);
    assert_nothing_written(&app).await;

    // The same report within the limits is fine: the refusals left no trace
    // (no dedupe entry either).
    let checks: Vec<_> = (0..3).map(|i| json!({"name": format!("c{i}"), "level": "L3", "status": "fail"})).collect();
    let (status, _) = (app.post_report(&report("web-1", "r-many", json!(checks))).await.status(), ());
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.types("alerts").await.len(), 3);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.get("/api/v1/nothing-here", None).await).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let response = app.get("/api/v1/reports", None).await;
    assert_eq!(response.headers()["allow"], "POST", "a 405 names the method the path takes");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    // A query string that does not parse is a JSON 400 too.
    let response = app.get("/api/v1/channels/deploys/history?limit=1&limit=2", Some(&app.admin_token())).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_field"));
    let _ = disk_failing();
}
