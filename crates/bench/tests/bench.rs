#![allow(clippy::unwrap_used)]
//! The benchmark against a real gateway (in-process, memory bus and Redis
//! bus) and against the reference broadcaster, at tiny scale: every event
//! reaches every client once.

use std::sync::Arc;
use std::time::Duration;

use pulse_bench::reference::{ReferenceConfig, serve};
use pulse_bench::{Layout, Publisher, RunConfig, RunReport, run};
use pulse_bus::{Bus, MemoryBus, MemoryBusConfig, RedisBus, RedisBusConfig};
use pulse_protocol::Channel;
use pulse_testkit::RedisServer;
use pulse_websocket_gateway::{Application, NoState, Settings};

fn settings() -> Settings {
    let mut s = Settings::defaults().unwrap();
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.gateway.static_dir = None;
    s.gateway.drain_window = Duration::from_millis(200);
    s.auth.anonymous = true;
    s.limits.connections_per_ip_per_sec = 100_000;
    s
}

async fn gateway(bus: Arc<dyn Bus>) -> u16 {
    let metrics = pulse_runtime::install_metrics().unwrap();
    let app = Application::build(settings(), bus, Arc::new(NoState), metrics).await.unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    port
}

fn config(url: &str, clients: usize, rate: f64, duration_ms: u64) -> RunConfig {
    let mut config = RunConfig::new(url, clients, Channel::parse("bench").unwrap());
    config.rate = rate;
    config.duration = Duration::from_millis(duration_ms);
    config.drain = Duration::from_secs(10);
    config.server_pid = Some(std::process::id());
    config
}

fn assert_complete(report: &RunReport, clients: u64, events: u64) {
    assert_eq!(report.connected as u64, clients, "{report:#?}");
    assert_eq!(report.published, events, "{report:#?}");
    assert_eq!(report.expected, clients * events, "{report:#?}");
    assert_eq!(report.delivered, clients * events, "{report:#?}");
    assert_eq!(report.lost, 0, "{report:#?}");
    assert_eq!(report.duplicates, 0, "{report:#?}");
    assert_eq!(report.misrouted, 0, "{report:#?}");
    assert_eq!(report.latency.count, clients * events, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_every_client_once_on_the_memory_bus() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig { history_len: 10_000 }));
    let port = gateway(bus.clone()).await;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let report = run(&config(&url, 5, 500.0, 100), Some(Publisher::Bus(bus))).await.unwrap();
    assert_complete(&report, 5, 50);
    let server = report.server.unwrap();
    assert!(server.end.cpu_secs >= server.before_connect.cpu_secs);
    assert!(server.peak_rss_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_route_each_event_to_its_owner_and_shared_to_all() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig { history_len: 10_000 }));
    let port = gateway(bus.clone()).await;
    let mut config = config(&format!("ws://127.0.0.1:{port}/ws"), 4, 2500.0, 100);
    config.layout = Layout::PerClient { prefix: "agent:b".into(), shared: Channel::parse("alerts").unwrap() };
    config.spread_sources = true;
    let report = run(&config, Some(Publisher::Bus(bus))).await.unwrap();
    // 250 events: #99 and #199 on alerts (to all 4), 248 on the agent channels.
    assert_eq!(report.published, 250);
    assert_eq!(report.expected, 4 * 2 + 248);
    assert_eq!(report.delivered, report.expected, "{report:#?}");
    assert_eq!((report.lost, report.duplicates, report.misrouted), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mode_holds_connections_and_reports_memory() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig { history_len: 100 }));
    let port = gateway(bus).await;
    let mut config = config(&format!("ws://127.0.0.1:{port}/ws"), 20, 1.0, 0);
    config.idle_hold = Some(Duration::from_millis(200));
    let report = run(&config, None).await.unwrap();
    assert_eq!(report.connected, 20);
    assert_eq!(report.closed_by_server, 0);
    assert_eq!(report.published, 0);
    assert!(report.server.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_reference_deliver_everything_over_redis() {
    let redis = RedisServer::start().await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect(RedisBusConfig {
            url: redis.url(),
            prefix: "pulse:".into(),
            history_len: 1_000,
            pool_size: 4,
            ..RedisBusConfig::default()
        })
        .await
        .unwrap(),
    );
    let port = gateway(bus.clone()).await;
    let report = run(&config(&format!("ws://127.0.0.1:{port}/ws"), 5, 500.0, 100), Some(Publisher::Bus(bus.clone())))
        .await
        .unwrap();
    assert_complete(&report, 5, 50);

    let (addr, serving) = serve(ReferenceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        redis_url: redis.url(),
        redis_channel: "pulse:{ch:bench}".into(),
        queue: 1024,
    })
    .await
    .unwrap();
    tokio::spawn(serving);
    let report = run(&config(&format!("ws://{addr}/ws"), 5, 500.0, 100), Some(Publisher::Bus(bus))).await.unwrap();
    assert_complete(&report, 5, 50);
}
