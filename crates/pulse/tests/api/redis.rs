use pulse_ingest::settings::BusKind;
use pulse_testkit::RedisServer;

use crate::helpers::{expect_events, report, settings, spawn};

#[tokio::test]
async fn on_redis_the_same_flow_works_and_state_lands_in_redis() {
    let redis = RedisServer::start().await.unwrap();
    let mut s = settings();
    s.use_redis(&redis.url());
    assert_eq!(s.bus, BusKind::Redis);
    let pulse = spawn(s).await.unwrap();
    assert_eq!(pulse.get("/readyz").await.unwrap().status(), 200);
    let mut client = pulse.subscriber(&["reports", "alerts"]).await.unwrap();
    assert_eq!(pulse.post_report(&report("db-3", "r-1", "fail")).await.unwrap().status(), 202);
    expect_events(&mut client, &[("report_received", "reports"), ("alert_triggered", "alerts")]).await.unwrap();
    let agents: i64 = redis.cmd(&["HLEN", "pulse:agents"]).await.unwrap();
    assert_eq!(agents, 1);
    pulse.stop().await.unwrap();
}
