//! `POST /api/v1/publish` on a Redis Cluster whose master is killed while
//! events flow: a publisher that retries with its idempotency key gets every
//! event published exactly once, and a subscriber receives each once and in
//! order (or is told of a gap).

use std::sync::Arc;
use std::time::Duration;

use pulse_bus::{Bus, BusMessage, MemoryBus, MemoryBusConfig, RedisBus, RedisBusConfig};
use pulse_protocol::{Channel, Position};
use pulse_store::{MemoryStore, StoreSettings};
use pulse_testkit::{RedisCluster, within};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{DEADLINE, TestApp, spawn_app_on};

async fn cluster_bus(cluster: &RedisCluster) -> RedisBus {
    let config = RedisBusConfig {
        url: cluster.url(),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_secs(1),
        ..RedisBusConfig::default()
    };
    RedisBus::connect(config).await.expect("the bus connects to the cluster")
}

/// Publishes event `n`, retrying with the same idempotency key until it is
/// accepted (a failover answers 503 meanwhile); returns how many times it
/// was refused.
async fn publish(app: &TestApp, ch: &Channel, n: u64) -> u64 {
    let body =
        json!({"channel": ch.as_str(), "type": "test.event", "data": {"n": n}, "idempotency_key": format!("k-{n}")});
    within(&format!("event {n} is accepted"), DEADLINE, async {
        let mut refused = 0;
        loop {
            let response = app.publish(&body).await;
            if response.status() == StatusCode::ACCEPTED {
                return refused;
            }
            refused += 1;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "only unavailability is expected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("accepted in time")
}

#[tokio::test]
async fn a_publisher_retrying_through_a_failover_publishes_each_event_exactly_once() {
    let cluster = RedisCluster::start().await.expect("cluster");
    let bus = cluster_bus(&cluster).await;
    let subscriber = cluster_bus(&cluster).await;
    // The publish API uses the bus only; the store stays in memory.
    let store = MemoryStore::new(MemoryBus::new(MemoryBusConfig::default()), StoreSettings::default());
    let app = spawn_app_on(Arc::new(bus.clone()) as Arc<dyn Bus>, Arc::new(store)).await;
    let ch = Channel::parse("cluster.publish").expect("channel");
    let mut sub = subscriber.subscription();
    sub.subscribe(&ch).await.expect("subscribed");

    let total = 600;
    let publishing = async {
        let mut refused = 0;
        for n in 0..total {
            refused += publish(&app, &ch, n).await;
        }
        refused
    };
    let killing = async {
        // Once events flow, kill the channel's master.
        while !bus.head(&ch).await.is_ok_and(|head| !head.is_start()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill_master_of(&bus.keys().hist(&ch)).await
    };
    let (refused, killed) = tokio::join!(publishing, killing);
    let (old, new) = killed.expect("failover");
    assert_ne!(old, new);

    let mut seen = Vec::new();
    let mut gaps = 0;
    while seen.last() != Some(&(total - 1)) {
        match within("next bus message", DEADLINE, sub.next()).await.expect("a message") {
            Some(BusMessage::Event(event)) => seen.push(event.data["n"].as_u64().expect("n")),
            Some(BusMessage::Gap { .. }) => gaps += 1,
            None => panic!("the bus shut down"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "once and in order: {seen:?}");
    if gaps == 0 {
        assert_eq!(seen, (0..total).collect::<Vec<_>>(), "every accepted event, without a gap reported");
    }
    // History holds each event exactly once.
    let history = bus.history(&ch, Position::ZERO, 10_000).await.expect("history");
    let stored: Vec<u64> = history.events.iter().map(|e| e.data["n"].as_u64().expect("n")).collect();
    assert_eq!(stored, (0..total).collect::<Vec<_>>(), "each accepted event once in history");
    assert!(refused > 0, "the failover happened while events were published");
    eprintln!(
        "published {total} through a failover ({refused} refusals retried); subscriber got {} events, {gaps} gaps",
        seen.len()
    );
}
