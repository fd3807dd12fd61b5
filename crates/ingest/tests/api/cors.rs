//! CORS on the API, from `ingest.allowed_origins`.

use reqwest::{Method, StatusCode};

use crate::helpers::{AGENT_KEY, disk_ok, report, spawn_app_with};
use pulse_ingest::settings::BusKind;

const ALLOWED: &str = "http://localhost:5173";
const OTHER: &str = "http://evil.example";

fn allow_origin(response: &reqwest::Response) -> Option<String> {
    response.headers().get("access-control-allow-origin").map(|v| v.to_str().expect("an ASCII header").to_owned())
}

#[tokio::test]
async fn allowed_origins_get_cors_answers_and_others_none() {
    let app = spawn_app_with(BusKind::Memory, |s| {
        s.auth.anonymous = true;
        s.ingest.allowed_origins = vec![format!("{ALLOWED}/")];
    })
    .await;
    let preflight = |origin: &str, method: &str, headers: &str, path: &str| {
        app.client
            .request(Method::OPTIONS, app.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };

    // Preflight of a read with a token, and of a write with a JSON body.
    let response = preflight(ALLOWED, "GET", "authorization", "/api/v1/agents").await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
    let allowed_headers = response.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    let response = preflight(ALLOWED, "POST", "authorization,content-type", "/api/v1/reports").await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let methods = response.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST"), "{methods}");

    // Simple and actual requests.
    let response = app.client.get(app.url("/api/v1/agents")).header("origin", ALLOWED).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
    let response = app
        .client
        .post(app.url("/api/v1/reports"))
        .header("origin", ALLOWED)
        .bearer_auth(AGENT_KEY)
        .json(&report("web-1", "r-1", disk_ok()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
    // An error answer carries them too, so the page can read the reason.
    let response = app.client.get(app.url("/api/v1/agents/nobody")).header("origin", ALLOWED).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));

    // Another origin: no CORS headers at all.
    let response = preflight(OTHER, "GET", "authorization", "/api/v1/agents").await.unwrap();
    assert_eq!(allow_origin(&response), None);
    assert!(response.headers().get("access-control-allow-headers").is_none());
    let response = app.client.get(app.url("/api/v1/agents")).header("origin", OTHER).send().await.unwrap();
    assert_eq!(allow_origin(&response), None);
    // No Origin (not a browser): served as before.
    assert_eq!(app.get("/api/v1/agents", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_allowed_origins_no_origin_gets_cors() {
    let app = spawn_app_with(BusKind::Memory, |s| s.auth.anonymous = true).await;
    let response = app.client.get(app.url("/api/v1/agents")).header("origin", ALLOWED).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the request itself is served");
    assert_eq!(allow_origin(&response), None);
}

#[tokio::test]
async fn a_wildcard_allows_any_origin() {
    let app = spawn_app_with(BusKind::Memory, |s| {
        s.auth.anonymous = true;
        s.ingest.allowed_origins = vec!["*".into()];
    })
    .await;
    let response = app.client.get(app.url("/api/v1/alerts")).header("origin", OTHER).send().await.unwrap();
    let got = allow_origin(&response);
    assert!(got.as_deref() == Some(OTHER) || got.as_deref() == Some("*"), "{got:?}");
}
