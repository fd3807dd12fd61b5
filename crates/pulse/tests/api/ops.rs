use std::time::Duration;

use pulse_testkit::WsClient;

use crate::helpers::{DEADLINE, settings, spawn};

#[tokio::test]
async fn ops_endpoints_answer_once_on_the_shared_port() {
    let pulse = spawn(settings()).await.unwrap();
    assert_eq!(pulse.get("/healthz").await.unwrap().status(), 200);
    let ready = pulse.get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    let metrics = pulse.get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    pulse.stop().await.unwrap();
}

/// Without `static_dir`, the dashboard built into the binary is served,
/// with the content types a browser needs.
#[tokio::test]
async fn the_built_in_dashboard_is_served_without_a_static_dir() {
    let pulse = spawn(settings()).await.unwrap();
    for (path, content_type, marker) in [
        ("/", "text/html", "<html"),
        ("/index.html", "text/html", "app.js"),
        ("/app.js", "javascript", "pulse-client.js"),
        ("/pulse-client.js", "javascript", "WebSocket"),
        ("/style.css", "text/css", "{"),
    ] {
        let response = pulse.get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let got = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(got.contains(content_type), "{path}: {got}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path}: {marker:?} not in the body");
        let on_disk = std::fs::read_to_string(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/dashboard/").to_owned()
                + if path == "/" { "index.html" } else { &path[1..] },
        )
        .unwrap();
        assert_eq!(body, on_disk, "{path} is the file of web/dashboard");
    }
    // Revalidation: the ETag answers 304.
    let first = pulse.get("/app.js").await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = pulse.http.get(pulse.url("/app.js")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(pulse.get("/no-such-file.js").await.unwrap().status(), 404);
    // The catch-all route does not hide the API.
    assert_eq!(pulse.get("/api/v1/agents").await.unwrap().status(), 200);
    pulse.stop().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_is_served_at_the_root_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>Pulse dashboard</h1>").unwrap();
    let mut s = settings();
    s.gateway.static_dir = Some(dir.path().to_path_buf());
    let pulse = spawn(s).await.unwrap();
    let index = pulse.get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("Pulse dashboard"));
    // A directory without its own client still offers the built-in one.
    let client = pulse.get("/pulse-client.js").await.unwrap();
    assert_eq!(client.status(), 200);
    assert!(client.text().await.unwrap().contains("WebSocket"));
    // The static files, mounted last, do not hide the API or the ops routes.
    let agents = pulse.get("/api/v1/agents").await.unwrap();
    assert_eq!(agents.status(), 200, "{:?}", agents.text().await);
    assert_eq!(pulse.get("/healthz").await.unwrap().status(), 200);
    pulse.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_browsers_with_1012_and_stops() {
    let pulse = spawn(settings()).await.unwrap();
    let mut client = pulse.subscriber(&["alerts"]).await.unwrap();
    pulse.shutdown.trigger();
    let (_, closed) = client.recv_until_closed(DEADLINE).await.unwrap();
    assert_eq!(closed.code, Some(1012), "{closed:?}");
    pulse_testkit::within("standalone to stop", DEADLINE, pulse.stopped).await.unwrap().unwrap().unwrap();
    // Nothing listens any more.
    let url = format!("ws://127.0.0.1:{}/ws", pulse.port);
    let refused = WsClient::connect(&url);
    assert!(tokio::time::timeout(Duration::from_secs(5), refused).await.map(|r| r.is_err()).unwrap_or(true));
}

/// Standalone answers CORS on `/api` and `/sse` from the one
/// `gateway.allowed_origins` list.
#[tokio::test]
async fn cors_on_api_and_sse_follows_the_gateways_allowed_origins() {
    const DEV: &str = "http://localhost:5173";
    let mut s = settings();
    s.gateway.allowed_origins = vec![DEV.into()];
    let pulse = spawn(s).await.unwrap();
    for path in ["/api/v1/agents", "/sse?channels=alerts"] {
        let preflight = pulse
            .http
            .request(reqwest::Method::OPTIONS, pulse.url(path))
            .header("origin", DEV)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success(), "{path}: {}", preflight.status());
        assert_eq!(preflight.headers()["access-control-allow-origin"], DEV, "{path}");
        let response = pulse.http.get(pulse.url(path)).header("origin", DEV).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], DEV, "{path}");
        let other = pulse.http.get(pulse.url(path)).header("origin", "http://evil.example").send().await.unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
    pulse.stop().await.unwrap();
}
