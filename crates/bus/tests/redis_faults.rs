//! The Redis bus under faults: killed connections, restarts, outages and
//! corrupt data.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pulse_bus::{Bus, BusError, BusMessage, LinkState, RedisBus, RedisBusConfig, Subscription};
use pulse_protocol::{Channel, EventDraft, EventType, Position};
use pulse_testkit::{DEADLINE, RedisServer, TcpProxy, wait_until, within};
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

/// A bus whose connections go through a [`TcpProxy`] (to freeze them),
/// pinging its pub/sub link often so tests need not wait long.
async fn bus_through_proxy(server: &RedisServer) -> (TcpProxy, RedisBus) {
    let target = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let config = RedisBusConfig {
        url: proxy.redis_url(),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(500),
        ..RedisBusConfig::default()
    };
    let bus = RedisBus::connect(config).await.unwrap();
    (proxy, bus)
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

    // The subscriber reconnects by itself; then every event after that
    // arrives in order. Redis came back empty: whatever it held after
    // event 1 is gone, and the subscription says so with a gap first.
    wait_until("the bus accepts publishes again", DEADLINE, || async { bus.check().await.is_ok() }).await.unwrap();
    for n in 2..50 {
        bus.publish(&ch, draft(n)).await.unwrap();
    }
    match within("gap", DEADLINE, sub.next()).await.unwrap() {
        Some(BusMessage::Gap { channel, .. }) => assert_eq!(channel, ch),
        other => panic!("expected a gap for the lost history, got {other:?}"),
    }
    for n in 2..50 {
        assert_eq!(next_n(&mut sub).await, n);
    }
}

/// Every way a channel's history can be lost starts a new epoch, and a
/// position of the old one is never continued.
#[tokio::test]
async fn lost_history_starts_a_new_epoch() {
    let mut server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("c");
    let mut epochs = Vec::new();
    let mut losses: Vec<&str> = vec!["restart", "flushall", "del"];
    loop {
        let a = bus.publish(&ch, draft(1)).await.unwrap().id;
        bus.publish(&ch, draft(2)).await.unwrap();
        bus.publish(&ch, draft(3)).await.unwrap();
        assert!(!bus.history(&ch, a, 10).await.unwrap().truncated);
        epochs.push(a.epoch);
        let Some(loss) = losses.pop() else { break };
        match loss {
            "del" => {
                let _: u64 = server.cmd(&["DEL", &bus.keys().hist(&ch)]).await.unwrap();
            }
            "flushall" => {
                let _: String = server.cmd(&["FLUSHALL"]).await.unwrap();
            }
            _ => {
                server.restart().await.unwrap();
                wait_until("redis is back", DEADLINE, || async { bus.check().await.is_ok() }).await.unwrap();
            }
        }
        let d = bus.publish(&ch, draft(4)).await.unwrap().id;
        assert_ne!(d.epoch, a.epoch, "after {loss}, the history is a new one");
        let resumed = bus.history(&ch, a, 10).await.unwrap();
        assert!(resumed.truncated, "after {loss}, a position of the lost history cannot be continued");
        assert_eq!(resumed.events.len(), 1, "the new history holds D alone");
        assert_eq!(resumed.head, d);
        let _: u64 = server.cmd(&["DEL", &bus.keys().hist(&ch)]).await.unwrap();
    }
    epochs.sort_by_key(|e| e.as_u64());
    epochs.dedup();
    assert_eq!(epochs.len(), 4, "four histories, four epochs");
}

/// A pub/sub connection that stays open but moves no bytes (a partition, or
/// a failover that leaves the old primary unreachable) is found by its ping
/// deadline and replaced; what was published meanwhile is filled from
/// history.
#[tokio::test]
async fn a_frozen_pubsub_link_is_replaced_and_loses_nothing() {
    let server = RedisServer::start().await.unwrap();
    let (proxy, subscriber_bus) = bus_through_proxy(&server).await;
    let publisher_bus = bus(&server).await;
    let ch = channel("frozen");
    let mut sub = subscriber_bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    publisher_bus.publish(&ch, draft(0)).await.unwrap();
    assert_eq!(next_n(&mut sub).await, 0);

    // Every connection through the proxy stops moving bytes: the link is
    // found dead and reported down.
    proxy.freeze_all();
    for n in 1..50 {
        publisher_bus.publish(&ch, draft(n)).await.unwrap();
    }
    wait_until("the frozen link is reported down", DEADLINE, || async { subscriber_bus.link() == LinkState::Down })
        .await
        .unwrap();

    // New connections work again (the partition healed, or a new primary
    // answers): everything published meanwhile arrives, in order, once.
    proxy.thaw();
    for n in 1..50 {
        assert_eq!(next_n(&mut sub).await, n);
    }
    publisher_bus.publish(&ch, draft(50)).await.unwrap();
    assert_eq!(next_n(&mut sub).await, 50);
    assert_eq!(subscriber_bus.link(), LinkState::Up);
}

/// Only the existing connections freeze; new ones work (the usual shape of a
/// failover): the subscriber reconnects without any thaw.
#[tokio::test]
async fn a_frozen_pubsub_link_is_replaced_while_new_connections_work() {
    let server = RedisServer::start().await.unwrap();
    let (proxy, subscriber_bus) = bus_through_proxy(&server).await;
    let publisher_bus = bus(&server).await;
    let ch = channel("partitioned");
    let mut sub = subscriber_bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    proxy.freeze();
    for n in 0..30 {
        publisher_bus.publish(&ch, draft(n)).await.unwrap();
    }
    for n in 0..30 {
        assert_eq!(next_n(&mut sub).await, n);
    }
}

/// During a write pause (what a managed failover does) a publish that times
/// out has an unknown outcome, its connection is discarded, and a retry
/// with the same idempotency key leaves exactly one copy in history.
#[tokio::test]
async fn a_publish_that_timed_out_is_retried_without_a_duplicate() {
    let server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("paused");
    bus.publish(&ch, draft(0)).await.unwrap();
    let _: String = server.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]).await.unwrap();
    let ttl = Duration::from_secs(60);
    let err = bus.publish_once(&ch, draft(1), "retry-me", ttl).await.unwrap_err();
    assert!(matches!(err, BusError::OutcomeUnknown(_)), "{err}");
    // Without a key nothing makes a retry safe; the error says whether the
    // request went out (outcome unknown) or not (unavailable).
    let err = bus.publish(&ch, draft(2)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    // Retry until the pause is over, as a careful publisher would.
    let answer = within("the retry is answered", DEADLINE, async {
        loop {
            if let Ok(publication) = bus.publish_once(&ch, draft(1), "retry-me", ttl).await {
                break publication;
            }
        }
    })
    .await
    .unwrap();
    let history = bus.history(&ch, Position::ZERO, 100).await.unwrap();
    let copies: Vec<_> = history.events.iter().filter(|e| e.data["n"] == 1).collect();
    assert_eq!(copies.len(), 1, "published exactly once: {:?}", history.events);
    assert_eq!(copies[0].id, answer.id, "the answer names the one copy");
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
        bus.history(&ch, Position::ZERO, 10).await.unwrap_err(),
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
    let _: String = server.cmd(&["XADD", &bus.keys().hist(&ch), "*", "e", "{not json"]).await.unwrap();
    let err = bus.history(&ch, Position::ZERO, 10).await.unwrap_err();
    assert!(matches!(err, BusError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("reports"), "{err}");
}

/// After a failover the old primary is a read-only replica: publishing is
/// refused without being run, which is unavailability (503, retry), not an
/// internal error, and readiness fails until the service reaches a primary.
#[tokio::test]
async fn a_demoted_primary_is_unavailable_not_an_internal_error() {
    let server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("demoted");
    bus.publish(&ch, draft(0)).await.unwrap();
    let _: String = server.cmd(&["REPLICAOF", "127.0.0.1", "1"]).await.unwrap();
    let err = bus.publish(&ch, draft(1)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    let err = bus.publish_once(&ch, draft(1), "k", Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err}");
    assert!(bus.check().await.is_err(), "a replica is not ready for publishes");
    // Promoted again (or the service reaches the new primary): all is well.
    let _: String = server.cmd(&["REPLICAOF", "NO", "ONE"]).await.unwrap();
    bus.check().await.unwrap();
    bus.publish(&ch, draft(2)).await.unwrap();
}

/// Every publisher trims the shared history; one configured with a smaller
/// `history_len` must not undo a larger one: all trim to the largest live
/// claim, whoever publishes.
#[tokio::test]
async fn every_publisher_keeps_the_largest_history_length_of_any_live_service() {
    let server = RedisServer::start().await.unwrap();
    let small = RedisBus::connect(RedisBusConfig { url: server.url(), history_len: 3, ..RedisBusConfig::default() })
        .await
        .unwrap();
    let large = RedisBus::connect(RedisBusConfig { url: server.url(), history_len: 5, ..RedisBusConfig::default() })
        .await
        .unwrap();
    assert_eq!(large.history_len(), 5);
    // The small one learns of the larger claim when it next renews it; a
    // service started after the larger one knows at once.
    let late = RedisBus::connect(RedisBusConfig { url: server.url(), history_len: 2, ..RedisBusConfig::default() })
        .await
        .unwrap();
    assert_eq!(late.history_len(), 5);
    let ch = channel("kept");
    for n in 0..10 {
        late.publish(&ch, draft(n)).await.unwrap();
    }
    let kept = late.history(&ch, Position::ZERO, 100).await.unwrap().events;
    assert_eq!(kept.iter().map(|e| e.data["n"].as_u64().unwrap()).collect::<Vec<_>>(), vec![5, 6, 7, 8, 9]);
    drop(small);
}

/// A failover to a replica that had not received the newest events
/// (replication is asynchronous) leaves a history without them, which new
/// events then continue. A reader that had seen the lost events cannot
/// continue from it, even once the head has passed them: a subscriber gets
/// a gap, and the history read says truncated. (The loss is made here by
/// rewriting the stream without its two newest entries, as the promoted
/// replica would hold it.)
#[tokio::test]
async fn a_history_that_lost_what_a_reader_saw_is_not_continued() {
    let server = RedisServer::start().await.unwrap();
    let bus = bus(&server).await;
    let ch = channel("diverged");
    let mut sub = bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    for n in 0..5 {
        assert_eq!(next_n(&mut sub).await, n);
    }
    let hist = bus.keys().hist(&ch);
    let kept: Vec<(String, Vec<String>)> = server.cmd(&["XRANGE", &hist, "-", "+", "COUNT", "3"]).await.unwrap();
    let _: u64 = server.cmd(&["DEL", &hist]).await.unwrap();
    for (id, fields) in &kept {
        let mut args = vec!["XADD", hist.as_str(), id.as_str()];
        args.extend(fields.iter().map(String::as_str));
        let _: String = server.cmd(&args).await.unwrap();
    }
    // The link drops; meanwhile the new history goes on past the lost ids.
    assert!(server.kill_pubsub_clients().await.unwrap() >= 1);
    bus.publish(&ch, draft(5)).await.unwrap();

    match within("gap", DEADLINE, sub.next()).await.unwrap() {
        Some(BusMessage::Gap { channel, after }) => assert_eq!((channel, after), (ch.clone(), ids[4])),
        other => panic!("expected a gap for the lost events, got {other:?}"),
    }
    assert_eq!(next_n(&mut sub).await, 5);
    assert!(bus.history(&ch, ids[4], 10).await.unwrap().truncated, "event 4 was lost");
    assert!(bus.history(&ch, ids[3], 10).await.unwrap().truncated, "event 3 was lost");
    let continued = bus.history(&ch, ids[2], 10).await.unwrap();
    assert!(!continued.truncated, "event 2 survived: its reader continues");
    assert_eq!(continued.events.len(), 1);
}
