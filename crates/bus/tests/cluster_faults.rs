//! The Redis bus on a Redis Cluster under faults: a master killed (its
//! replica takes over) and a channel's slot moved to another master, both
//! while events flow.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pulse_bus::{Bus, BusMessage, RedisBus, RedisBusConfig, Subscription};
use pulse_protocol::{Channel, EventDraft, EventType};
use pulse_testkit::{DEADLINE, RedisCluster, within};
use serde_json::json;

fn draft(n: u64) -> EventDraft {
    EventDraft::new(EventType::parse("test.event").unwrap(), json!({ "n": n }))
}

/// A bus on `cluster` whose pub/sub link notices a dead node quickly.
async fn bus(cluster: &RedisCluster) -> RedisBus {
    bus_on(cluster.url()).await
}

/// A bus whose `redis.url` is `url`.
async fn bus_on(url: String) -> RedisBus {
    let config = RedisBusConfig {
        url,
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(1000),
        ..RedisBusConfig::default()
    };
    let bus = RedisBus::connect(config).await.unwrap();
    assert!(bus.is_cluster());
    bus
}

/// What a subscriber saw: event numbers, and where gaps were reported (the
/// number of events delivered before each).
#[derive(Debug, Default)]
struct Seen {
    events: Vec<u64>,
    gaps: Vec<usize>,
}

/// Publishes numbered events until `stop`, then `after_stop` more, and
/// returns the numbers whose publish was acknowledged, and the last number
/// tried.
async fn publish_until(bus: RedisBus, ch: Channel, stop: Arc<AtomicBool>, after_stop: u64) -> (BTreeSet<u64>, u64) {
    let mut acknowledged = BTreeSet::new();
    let mut n = 0;
    let mut stopped_at = None;
    loop {
        match bus.publish(&ch, draft(n)).await {
            Ok(_) => {
                acknowledged.insert(n);
            }
            // A failover or a moving slot: not acknowledged; go on.
            Err(err) => assert!(err.is_unavailable(), "{err}"),
        }
        if stop.load(Ordering::Relaxed) && stopped_at.is_none() {
            stopped_at = Some(acknowledged.len());
        }
        if stopped_at.is_some_and(|at| acknowledged.len() >= at + after_stop as usize) {
            return (acknowledged, n);
        }
        n += 1;
        if n % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Reads until event `last` (or a later one) arrived.
async fn read_until(sub: &mut Subscription, seen: &mut Seen, last: u64) {
    while seen.events.last().is_none_or(|n| *n < last) {
        match within("next bus message", DEADLINE, sub.next()).await.unwrap() {
            Some(BusMessage::Event(event)) => seen.events.push(event.data["n"].as_u64().unwrap()),
            Some(BusMessage::Gap { .. }) => seen.gaps.push(seen.events.len()),
            None => panic!("the bus shut down"),
        }
    }
}

/// Every event at most once and in order; every acknowledged one delivered,
/// unless a gap was reported where it would have been.
fn check(seen: &Seen, acknowledged: &BTreeSet<u64>) {
    assert!(seen.events.windows(2).all(|w| w[0] < w[1]), "not once and in order: {:?}", seen.events);
    let delivered: BTreeSet<u64> = seen.events.iter().copied().collect();
    for n in acknowledged.difference(&delivered) {
        let before = seen.events.iter().filter(|m| *m < n).count();
        assert!(
            seen.gaps.contains(&before),
            "acknowledged event {n} was neither delivered nor covered by a gap (gaps after {:?} events; {} \
             delivered)",
            seen.gaps,
            seen.events.len()
        );
    }
}

/// The subscriber names one node only, the master that is killed: it
/// finds the others through it.
#[tokio::test]
async fn a_master_killed_while_events_flow_loses_no_acknowledged_event_silently() {
    let cluster = RedisCluster::start().await.unwrap();
    let ch = Channel::parse("failover").unwrap();
    let master = cluster.master_of(&pulse_bus::redis_lua::Keys::new("pulse:").hist(&ch)).await.unwrap();
    let subscriber = bus_on(format!("redis://127.0.0.1:{master}/")).await;
    let publisher = bus(&cluster).await;
    let mut sub = subscriber.subscription();
    sub.subscribe(&ch).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher.clone(), ch.clone(), stop.clone(), 200));
    let mut seen = Seen::default();
    read_until(&mut sub, &mut seen, 300).await;
    subscriber.check().await.unwrap();
    let hist = subscriber.keys().hist(&ch);
    // Another crate's writes wait for the replica too (it has one now).
    let mut conn = publisher.open_connection().await.unwrap();
    assert!(conn.is_cluster());
    let _: () =
        redis::cmd("SET").arg(publisher.keys().channel_key(&ch, "mark")).arg(1).query_async(&mut conn).await.unwrap();
    publisher.wait_replicas(&mut conn, &hist).await.unwrap();
    let (killed, promoted) = cluster.kill_master_of(&hist).await.unwrap();
    assert_ne!(killed, promoted);
    pulse_testkit::wait_until("the cluster is ready again", DEADLINE, || async { publisher.check().await.is_ok() })
        .await
        .unwrap();
    // Reads and writes reach the new master (no transaction stuck on the
    // old one); it has no replica left to wait for.
    assert!(!publisher.latest(&ch, 3).await.unwrap().is_empty());
    let _: () =
        redis::cmd("SET").arg(publisher.keys().channel_key(&ch, "mark")).arg(2).query_async(&mut conn).await.unwrap();
    publisher.wait_replicas(&mut conn, &hist).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, last) = within("publishing ends", DEADLINE * 2, publishing).await.unwrap().unwrap();
    read_until(&mut sub, &mut seen, last.min(*acknowledged.last().unwrap())).await;
    eprintln!(
        "published {} ({} acknowledged), delivered {}, gaps after {:?} events",
        last + 1,
        acknowledged.len(),
        seen.events.len(),
        seen.gaps
    );
    check(&seen, &acknowledged);
    assert!(acknowledged.len() > 400, "publishing went on after the failover: {}", acknowledged.len());
}

#[tokio::test]
async fn a_slot_moved_while_events_flow_loses_nothing() {
    let cluster = RedisCluster::start().await.unwrap();
    let (subscriber, publisher) = (bus(&cluster).await, bus(&cluster).await);
    let ch = Channel::parse("moving").unwrap();
    let mut sub = subscriber.subscription();
    sub.subscribe(&ch).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(publisher.clone(), ch.clone(), stop.clone(), 200));
    let mut seen = Seen::default();
    read_until(&mut sub, &mut seen, 300).await;
    let (from, to) = cluster.migrate_slot_of(&subscriber.keys().hist(&ch)).await.unwrap();
    assert_ne!(from, to);
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, _) = within("publishing ends", DEADLINE * 2, publishing).await.unwrap().unwrap();
    read_until(&mut sub, &mut seen, *acknowledged.last().unwrap()).await;
    check(&seen, &acknowledged);
    assert!(seen.gaps.is_empty(), "moving a slot loses no history: gaps after {:?} events", seen.gaps);
    let history = subscriber.history(&ch, pulse_protocol::Position::ZERO, 10_000).await.unwrap();
    assert!(!history.truncated);
    assert_eq!(cluster.master_of(&subscriber.keys().hist(&ch)).await.unwrap(), to);
}
