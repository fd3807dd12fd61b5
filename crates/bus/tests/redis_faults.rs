//! The Redis bus under faults: killed connections, restarts, outages and
//! corrupt data.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pulse_bus::{Bus, BusError, BusMessage, RedisBus, RedisBusConfig, Subscription};
use pulse_protocol::{Channel, EventDraft, EventType, Offset};
use pulse_testkit::{DEADLINE, RedisServer, wait_until, within};
use serde_json::json;

fn channel(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

fn draft(n: u64) -> EventDraft {
    EventDraft::new(EventType::parse("test.event").unwrap(), json!({ "n": n }))
}

async fn bus(server: &RedisServer) -> RedisBus {
    RedisBus::connect(RedisBusConfig { url: server.url(), ..RedisBusConfig::default() }).await.unwrap()
}

async fn next_n(sub: &mut Subscription) -> u64 {
    match within("next bus message", DEADLINE, sub.next()).await.unwrap() {
        Some(BusMessage::Event(event)) => event.data["n"].as_u64().unwrap(),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn killed_pubsub_connections_lose_nothing() {
    let server = RedisServer::start().await.unwrap();
    let subscriber_bus = bus(&server).await;
    let publisher_bus = bus(&server).await;
    let ch = channel("alerts");
    let mut sub = subscriber_bus.subscription();
    sub.subscribe(&ch).await.unwrap();

    // Publish continuously while the subscriber's pub/sub connection is
    // killed again and again.
    let total = 3_000;
    let publisher = tokio::spawn({
        let ch = ch.clone();
        async move {
            for n in 0..total {
                publisher_bus.publish(&ch, draft(n)).await.unwrap();
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    });
    let mut kills = 0;
    let mut received = Vec::with_capacity(total as usize);
    while received.len() < total as usize {
        if received.len() % 500 == 250 && kills < 5 {
            kills += server.kill_pubsub_clients().await.unwrap();
        }
        received.push(next_n(&mut sub).await);
    }
    publisher.await.unwrap();
    assert!(kills >= 3, "the subscriber's connection was killed {kills} times");
    assert_eq!(received, (0..total).collect::<Vec<_>>(), "every event once, in order");
    assert!(within("no extra message", Duration::from_millis(300), sub.next()).await.is_err());
}

#[tokio::test]
async fn a_restarted_redis_delivers_what_is_published_after_it() {
    let mut server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("agents");
    let mut sub = bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    bus.publish(&ch, draft(1)).await.unwrap();
    assert_eq!(next_n(&mut sub).await, 1);

    server.stop().unwrap();
    let err = bus.publish(&ch, draft(99)).await.unwrap_err();
    assert!(err.is_unavailable(), "publishing to a stopped redis: {err}");
    server.restart().await.unwrap();

    // The subscriber reconnects by itself; publish until it is back, then
    // every event after that arrives in order.
    wait_until("the bus accepts publishes again", DEADLINE, || async { bus.check().await.is_ok() }).await.unwrap();
    for n in 2..50 {
        bus.publish(&ch, draft(n)).await.unwrap();
    }
    for n in 2..50 {
        assert_eq!(next_n(&mut sub).await, n);
    }
}

#[tokio::test]
async fn a_redis_that_is_down_gives_typed_errors() {
    let mut server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let url = server.url();
    server.stop().unwrap();
    let ch = channel("decisions");

    for err in [
        bus.publish(&ch, draft(1)).await.unwrap_err(),
        bus.history(&ch, Offset::ZERO, 10).await.unwrap_err(),
        bus.check().await.unwrap_err(),
        bus.subscription().subscribe(&ch).await.unwrap_err(),
    ] {
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("unavailable"), "{err}");
    }
    let err = RedisBus::connect(RedisBusConfig { url, ..RedisBusConfig::default() }).await.err().unwrap();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn corrupt_history_is_a_typed_error() {
    let server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("reports");
    bus.publish(&ch, draft(1)).await.unwrap();
    let _: String = server.cmd(&["XADD", "pulse:hist:reports", "*", "e", "{not json"]).await.unwrap();
    let err = bus.history(&ch, Offset::ZERO, 10).await.unwrap_err();
    assert!(matches!(err, BusError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("reports"), "{err}");
}
