//! The service starting while Redis is down: alive at once, ready once
//! Redis answers. (Its own test binary: metrics are per process, and this
//! service's gauges must not mix with another test's.)

use pulse_heartbeat_checker::{Application, Settings};
use pulse_runtime::Shutdown;
use pulse_testkit::{DEADLINE, RedisServer, wait_until};

fn settings_for(redis_url: &str) -> anyhow::Result<Settings> {
    Ok(Settings::loader()
        .env_vars([
            ("PULSE__HTTP__HOST", "127.0.0.1"),
            ("PULSE__HTTP__PORT", "0"),
            ("PULSE__REDIS__URL", redis_url),
            ("PULSE__CHECKER__MAX_BACKOFF", "300ms"),
        ])
        .load()?)
}

async fn status(client: &reqwest::Client, port: u16, path: &str) -> Option<u16> {
    let response = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_starts_before_redis_and_connects_when_it_comes() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    server.stop()?;
    let shutdown = Shutdown::new();
    let app = Application::build(settings_for(&server.url())?, shutdown.clone()).await?;
    let port = app.port();
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    assert_eq!(status(&client, port, "/healthz").await, Some(200));
    assert_eq!(status(&client, port, "/readyz").await, Some(503), "not ready without Redis");
    server.restart().await?;
    wait_until("/readyz is ready", DEADLINE, || async { status(&client, port, "/readyz").await == Some(200) }).await?;

    shutdown.trigger();
    pulse_testkit::within("the service stops", DEADLINE, running).await???;
    Ok(())
}
