//! The `pulse-heartbeat-checker` service as its binary runs it: settings,
//! the ops endpoints on a real port, the checker against a real Redis.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use pulse_bus::{RedisBus, RedisBusConfig};
use pulse_heartbeat_checker::{Application, Settings};
use pulse_protocol::{AgentId, timestamp};
use pulse_runtime::Shutdown;
use pulse_store::{RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisServer, wait_until};

fn settings_for(redis_url: &str) -> anyhow::Result<Settings> {
    Ok(Settings::loader()
        .env_vars([
            ("PULSE__HTTP__HOST", "127.0.0.1"),
            ("PULSE__HTTP__PORT", "0"),
            ("PULSE__REDIS__URL", redis_url),
            ("PULSE__CHECKER__TIMEOUT", "1s"),
            ("PULSE__CHECKER__SCAN_INTERVAL", "100ms"),
            ("PULSE__CHECKER__MAX_BACKOFF", "300ms"),
        ])
        .load()?)
}

async fn status(client: &reqwest::Client, port: u16, path: &str) -> Option<u16> {
    let response = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
    Some(response.status().as_u16())
}

#[test]
fn defaults_match_the_documentation() -> anyhow::Result<()> {
    let settings: Settings = Settings::loader().env_vars(Vec::<(String, String)>::new()).load()?;
    assert_eq!(settings.http.port, 8082);
    assert_eq!(settings.checker.timeout, Duration::from_secs(300));
    assert_eq!(settings.checker.scan_interval, Duration::from_secs(5));
    assert_eq!(settings.checker.batch, 500);
    assert_eq!(settings.checker.max_backoff, Duration::from_secs(10));
    assert_eq!(settings.checker, Default::default(), "the TOML and Default agree");
    assert_eq!(settings.redis.prefix, "pulse:");

    let settings: Settings =
        Settings::loader().env_vars([("PULSE__CHECKER__TIMEOUT", "2m"), ("PULSE__CHECKER__BATCH", "50")]).load()?;
    assert_eq!((settings.checker.timeout, settings.checker.batch), (Duration::from_secs(120), 50));
    let err = Settings::loader().env_vars([("PULSE__CHECKER__TIMEOUT", "soon")]).load::<Settings>().unwrap_err();
    ensure!(err.to_string().contains("checker.timeout"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_serves_ops_endpoints_and_takes_silent_agents_offline() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let shutdown = Shutdown::new();
    let app = Application::build(settings_for(&server.url())?, shutdown.clone()).await?;
    let port = app.port();
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();

    assert_eq!(status(&client, port, "/healthz").await, Some(200));
    wait_until("/readyz is ready", DEADLINE, || async { status(&client, port, "/readyz").await == Some(200) }).await?;

    let bus = RedisBus::connect(RedisBusConfig {
        url: server.url(),
        prefix: "pulse:".into(),
        history_len: 1000,
        pool_size: 2,
        ..RedisBusConfig::default()
    })
    .await?;
    let store: Arc<dyn Store> = Arc::new(RedisStore::new(bus, StoreSettings::default()));
    let agent = AgentId::parse("web-1")?;
    store.apply_heartbeat(&agent, timestamp::now(), None).await?;
    wait_until("web-1 is offline", DEADLINE, || async {
        store.counts().await.is_ok_and(|c| c.offline == 1 && c.online == 0)
    })
    .await?;

    // The gauges follow at the end of the scan that made the transition.
    // (Metrics are per process: this is the only service in this test binary.)
    let metrics = || async {
        let response = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?;
        response.text().await.ok()
    };
    let expected = [
        "pulse_agents{status=\"offline\"} 1",
        "pulse_agents{status=\"online\"} 0",
        "pulse_agent_transitions_total{to=\"offline\"} 1",
        "pulse_heartbeat_scan_duration_seconds_bucket",
    ];
    let shown = wait_until("/metrics shows the transition", DEADLINE, || async {
        metrics().await.is_some_and(|text| expected.iter().all(|line| text.contains(line)))
    })
    .await;
    if shown.is_err() {
        anyhow::bail!("/metrics lacks one of {expected:?}:\n{}", metrics().await.unwrap_or_default());
    }

    server.stop()?;
    wait_until("/readyz says not ready", DEADLINE, || async { status(&client, port, "/readyz").await == Some(503) })
        .await?;
    assert_eq!(status(&client, port, "/healthz").await, Some(200), "liveness does not depend on Redis");
    server.restart().await?;
    wait_until("/readyz is ready again", DEADLINE, || async { status(&client, port, "/readyz").await == Some(200) })
        .await?;

    shutdown.trigger();
    pulse_testkit::within("the service stops", DEADLINE, running).await???;
    ensure!(status(&client, port, "/healthz").await.is_none(), "the port is closed after shutdown");
    Ok(())
}
