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
    // Without a dashboard directory, `/` is not served.
    assert_eq!(pulse.get("/").await.unwrap().status(), 404);
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
