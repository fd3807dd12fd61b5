#![allow(clippy::unwrap_used)]
//! One suite of behaviours, run against every bus implementation: memory,
//! one Redis server, and a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use pulse_bus::{Bus, BusMessage, HistoryPages, MemoryBus, MemoryBusConfig, RedisBus, RedisBusConfig, Subscription};
use pulse_protocol::{Channel, Epoch, Event, EventDraft, EventType, Offset, Position};
use pulse_testkit::{DEADLINE, RedisCluster, RedisServer, within};
use serde_json::json;

/// A bus under test, keeping its Redis (if any) alive.
struct Harness {
    bus: Arc<dyn Bus>,
    _redis: Option<Box<dyn std::any::Any + Send>>,
}

async fn memory(history_len: usize) -> Harness {
    Harness { bus: Arc::new(MemoryBus::new(MemoryBusConfig { history_len })), _redis: None }
}

async fn redis(history_len: usize) -> Harness {
    let server = RedisServer::start().await.unwrap();
    let config = RedisBusConfig { url: server.url(), history_len, ..RedisBusConfig::default() };
    Harness { bus: Arc::new(RedisBus::connect(config).await.unwrap()), _redis: Some(Box::new(server)) }
}

/// On the cluster shared by this binary's tests, each under a key prefix of
/// its own.
async fn cluster(history_len: usize) -> Harness {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cluster = RedisCluster::shared().await.unwrap();
    let prefix = format!("t{}:", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let config = RedisBusConfig { url: cluster.url(), prefix, history_len, ..RedisBusConfig::default() };
    let bus = RedisBus::connect(config).await.unwrap();
    assert!(bus.is_cluster());
    Harness { bus: Arc::new(bus), _redis: Some(Box::new(cluster)) }
}

fn channel(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

fn draft(n: u64) -> EventDraft {
    EventDraft::new(EventType::parse("test.event").unwrap(), json!({ "n": n }))
}

fn n_of(event: &Event) -> u64 {
    event.data["n"].as_u64().unwrap()
}

async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match within("next bus message", DEADLINE, sub.next()).await.unwrap() {
        Some(BusMessage::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Generates one test per implementation for each behaviour.
macro_rules! conformance {
    ($($name:ident($history_len:expr)),* $(,)?) => {
        mod on_memory {
            $(#[tokio::test] async fn $name() { super::$name(super::memory($history_len).await).await })*
        }
        mod on_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::redis($history_len).await).await })*
        }
        mod on_cluster {
            $(#[tokio::test] async fn $name() { super::$name(super::cluster($history_len).await).await })*
        }
    };
}

conformance! {
    offsets_increase_and_history_keeps_order(100),
    a_position_of_another_epoch_is_not_continued(100),
    a_position_ahead_of_the_head_is_not_continued(100),
    an_idempotent_publish_happens_once_per_key(100),
    live_and_history_copies_carry_the_same_id(100),
    history_after_an_offset_with_a_limit(100),
    trimming_keeps_the_newest_and_reports_truncation(10),
    trimming_in_batches_keeps_the_newest_trimmed_position_continuous(64),
    latest_and_head(100),
    many_subscribers_each_get_everything_in_order(1000),
    one_subscription_serves_many_channels(100),
    unsubscribe_stops_delivery(100),
    history_pages_then_live_without_gap_or_duplicate(10_000),
    history_pages_report_what_history_no_longer_has(5),
    a_channel_subscribed_from_another_task_joins_the_stream(100),
    a_subscriber_that_falls_behind_still_gets_everything(20_000),
    what_has_arrived_can_be_taken_without_waiting(100),
}

async fn what_has_arrived_can_be_taken_without_waiting(h: Harness) {
    let ch = channel("batch");
    let mut sub = h.bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    assert!(sub.try_next().is_none(), "nothing published yet");
    for n in 0..20 {
        h.bus.publish(&ch, draft(n)).await.unwrap();
    }
    // Each arrives (Redis pub/sub takes a moment) and is then taken
    // without waiting: poll until all are in.
    let mut seen = Vec::new();
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < 20 && tokio::time::Instant::now() < give_up {
        match sub.try_next() {
            Some(BusMessage::Event(event)) => seen.push(n_of(&event)),
            Some(other) => panic!("expected an event, got {other:?}"),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

async fn offsets_increase_and_history_keeps_order(h: Harness) {
    let ch = channel("orders");
    let mut last = Position::ZERO;
    for n in 0..50 {
        let event = h.bus.publish(&ch, draft(n)).await.unwrap();
        assert!(!event.id.epoch.is_none(), "every event carries its history's epoch");
        assert!(n == 0 || event.id.epoch == last.epoch, "one history, one epoch");
        assert!(event.id.offset > last.offset, "offset {} not after {}", event.id, last);
        assert_eq!(event.channel, ch);
        last = event.id;
    }
    let history = h.bus.history(&ch, Position::ZERO, 1000).await.unwrap();
    assert!(!history.truncated);
    assert_eq!(history.events.iter().map(n_of).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>());
    assert_eq!(history.events.last().unwrap().id, last);
}

async fn live_and_history_copies_carry_the_same_id(h: Harness) {
    let ch = channel("alerts");
    let mut sub = h.bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    let published = h.bus.publish(&ch, draft(7).with_trace(Some("00-abc-def-01".into()))).await.unwrap();
    let live = next_event(&mut sub).await;
    let stored = h.bus.history(&ch, Position::ZERO, 10).await.unwrap().events;
    assert_eq!(*live, published);
    assert_eq!(stored, vec![published]);
}

async fn history_after_an_offset_with_a_limit(h: Harness) {
    let ch = channel("reports");
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    let page = h.bus.history(&ch, ids[4], 5).await.unwrap();
    assert_eq!(page.events.iter().map(n_of).collect::<Vec<_>>(), vec![5, 6, 7, 8, 9]);
    assert!(!page.truncated);
    let tail = h.bus.history(&ch, ids[19], 5).await.unwrap();
    assert!(tail.events.is_empty());
    let unknown = h.bus.history(&channel("never-used"), Position::ZERO, 5).await.unwrap();
    assert!(unknown.events.is_empty() && !unknown.truncated);
}

async fn trimming_keeps_the_newest_and_reports_truncation(h: Harness) {
    // History keeps 10 events.
    let ch = channel("trimmed");
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    let all = h.bus.history(&ch, Position::ZERO, 100).await.unwrap();
    assert_eq!(all.events.iter().map(n_of).collect::<Vec<_>>(), (15..25).collect::<Vec<_>>());
    assert!(all.truncated, "events 0..15 were trimmed");
    // After the newest trimmed event, nothing is missing.
    let exact = h.bus.history(&ch, ids[14], 100).await.unwrap();
    assert!(!exact.truncated);
    assert_eq!(exact.events.len(), 10);
    // One before it, event 14 is gone.
    assert!(h.bus.history(&ch, ids[13], 100).await.unwrap().truncated);
}

/// With a history of 64 or more events, Redis trims in batches (up to
/// `history_len / 32` events over, then back to `history_len`): whatever a
/// backend keeps, it keeps at least the newest `history_len` events, at most
/// a thirty-second more, and a reader at the newest trimmed event continues
/// without a gap while one a step older is told.
async fn trimming_in_batches_keeps_the_newest_trimmed_position_continuous(h: Harness) {
    // History keeps 64 events.
    let ch = channel("trimmed-in-batches");
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    let all = h.bus.history(&ch, Position::ZERO, 1_000).await.unwrap();
    let kept = all.events.iter().map(n_of).collect::<Vec<_>>();
    assert!((64..=66).contains(&kept.len()), "kept {} events", kept.len());
    let oldest = kept[0];
    assert_eq!(kept, (oldest..200).collect::<Vec<_>>(), "the newest events, in order");
    assert!(all.truncated, "older events were trimmed");
    let newest_trimmed = usize::try_from(oldest - 1).unwrap();
    let exact = h.bus.history(&ch, ids[newest_trimmed], 1_000).await.unwrap();
    assert!(!exact.truncated, "nothing is missing after the newest trimmed event");
    assert_eq!(exact.events.len(), kept.len());
    assert!(h.bus.history(&ch, ids[newest_trimmed - 1], 1_000).await.unwrap().truncated);
}

async fn latest_and_head(h: Harness) {
    let ch = channel("decisions");
    assert!(h.bus.head(&ch).await.unwrap().is_start());
    assert!(h.bus.latest(&ch, 3).await.unwrap().is_empty());
    let mut last = Position::ZERO;
    for n in 0..10 {
        last = h.bus.publish(&ch, draft(n)).await.unwrap().id;
    }
    assert_eq!(h.bus.head(&ch).await.unwrap(), last);
    let latest = h.bus.latest(&ch, 3).await.unwrap();
    assert_eq!(latest.iter().map(n_of).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert_eq!(latest[2].id, last, "latest events carry their epoch too");
}

async fn many_subscribers_each_get_everything_in_order(h: Harness) {
    let ch = channel("fanout");
    let mut subs = Vec::new();
    for _ in 0..5 {
        let sub = h.bus.subscription();
        sub.subscribe(&ch).await.unwrap();
        subs.push(sub);
    }
    for n in 0..200 {
        h.bus.publish(&ch, draft(n)).await.unwrap();
    }
    for sub in &mut subs {
        for n in 0..200 {
            assert_eq!(n_of(&*next_event(sub).await), n);
        }
    }
}

async fn one_subscription_serves_many_channels(h: Harness) {
    let channels: Vec<Channel> = (0..10).map(|i| channel(&format!("agent:a{i}"))).collect();
    let mut sub = h.bus.subscription();
    for ch in &channels {
        sub.subscribe(ch).await.unwrap();
    }
    for n in 0..100 {
        h.bus.publish(&channels[(n % 10) as usize], draft(n)).await.unwrap();
    }
    let mut per_channel = vec![Vec::new(); 10];
    for _ in 0..100 {
        let event = next_event(&mut sub).await;
        let i = channels.iter().position(|c| *c == event.channel).unwrap();
        per_channel[i].push(n_of(&event));
    }
    for (i, seen) in per_channel.iter().enumerate() {
        assert_eq!(*seen, (0..10).map(|k| k * 10 + i as u64).collect::<Vec<_>>());
    }
}

async fn unsubscribe_stops_delivery(h: Harness) {
    let (a, b) = (channel("a"), channel("b"));
    let mut sub = h.bus.subscription();
    sub.subscribe(&a).await.unwrap();
    sub.subscribe(&b).await.unwrap();
    h.bus.publish(&a, draft(1)).await.unwrap();
    assert_eq!(n_of(&*next_event(&mut sub).await), 1);
    sub.unsubscribe(&a);
    assert!(!sub.is_subscribed(&a));
    h.bus.publish(&a, draft(2)).await.unwrap();
    h.bus.publish(&b, draft(3)).await.unwrap();
    // The event on `a` was published first; only `b`'s arrives.
    let event = next_event(&mut sub).await;
    assert_eq!((event.channel.clone(), n_of(&event)), (b, 3));
}

/// Reads every page of `pages` into a list of events, and whether any
/// page was truncated.
async fn read_pages(bus: &dyn Bus, ch: &Channel, mut pages: HistoryPages) -> (Vec<Event>, bool) {
    let (mut events, mut truncated) = (Vec::new(), false);
    while let Some(after) = pages.next_request() {
        let page = pages.accept(bus.history(ch, after, pages.limit()).await.unwrap());
        truncated |= page.truncated;
        events.extend(page.events);
    }
    (events, truncated)
}

/// The resume procedure: subscribe (live from the head on), read history
/// after the client's position up to that head, then go live.
async fn history_pages_then_live_without_gap_or_duplicate(h: Harness) {
    let ch = channel("resume");
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    // Keep publishing while the subscription replays.
    let bus = h.bus.clone();
    let publisher = tokio::spawn({
        let ch = ch.clone();
        async move {
            for n in 100..400 {
                bus.publish(&ch, draft(n)).await.unwrap();
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let mut sub = h.bus.subscription();
    let head = sub.subscribe(&ch).await.unwrap();
    let (replayed, truncated) = read_pages(&*h.bus, &ch, HistoryPages::new(ids[49], Some(head), 7)).await;
    assert!(!truncated);
    assert_eq!(replayed.last().map(|e| e.id), (head != ids[49]).then_some(head));
    let mut seen: Vec<u64> = replayed.iter().map(n_of).collect();
    while seen.len() < 350 {
        seen.push(n_of(&*next_event(&mut sub).await));
    }
    assert_eq!(seen, (50..400).collect::<Vec<_>>());
    publisher.await.unwrap();
}

async fn history_pages_report_what_history_no_longer_has(h: Harness) {
    // History keeps 5 events.
    let ch = channel("gappy");
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    let (events, truncated) = read_pages(&*h.bus, &ch, HistoryPages::new(ids[2], None, 2)).await;
    assert!(truncated, "events after the position were trimmed");
    assert_eq!(events.iter().map(n_of).collect::<Vec<_>>(), (7..12).collect::<Vec<_>>());
    // A position of another epoch: truncated, then the current history.
    let last = ids[11];
    let stale = Position::new(Epoch::from_u64(last.epoch.as_u64().wrapping_add(1).max(1)), last.offset);
    let (events, truncated) = read_pages(&*h.bus, &ch, HistoryPages::new(stale, None, 100)).await;
    assert!(truncated);
    assert_eq!(events.iter().map(n_of).collect::<Vec<_>>(), (7..12).collect::<Vec<_>>());
    // Up to a bound, nothing after it.
    let (events, truncated) = read_pages(&*h.bus, &ch, HistoryPages::new(ids[8], Some(ids[10]), 1)).await;
    assert!(!truncated);
    assert_eq!(events.iter().map(n_of).collect::<Vec<_>>(), [9, 10]);
}

async fn a_channel_subscribed_from_another_task_joins_the_stream(h: Harness) {
    let (a, b) = (channel("first"), channel("second"));
    let mut sub = h.bus.subscription();
    sub.subscribe(&a).await.unwrap();
    let handle = sub.handle();
    let subscribing = tokio::spawn({
        let b = b.clone();
        async move { handle.subscribe(&b).await }
    });
    // The stream is read meanwhile.
    h.bus.publish(&a, draft(1)).await.unwrap();
    assert_eq!(n_of(&*next_event(&mut sub).await), 1);
    within("subscribe", DEADLINE, subscribing).await.unwrap().unwrap().unwrap();
    h.bus.publish(&b, draft(2)).await.unwrap();
    let event = next_event(&mut sub).await;
    assert_eq!((event.channel.clone(), n_of(&event)), (b.clone(), 2));
    sub.handle().unsubscribe(&b);
    h.bus.publish(&b, draft(3)).await.unwrap();
    h.bus.publish(&a, draft(4)).await.unwrap();
    let event = next_event(&mut sub).await;
    assert_eq!((event.channel.clone(), n_of(&event)), (a, 4), "nothing of an unsubscribed channel");
}

async fn a_subscriber_that_falls_behind_still_gets_everything(h: Harness) {
    // More events than a subscription's queue holds are published while it
    // does not read; it must fill the overflow from history.
    let ch = channel("burst");
    let mut sub = h.bus.subscription();
    sub.subscribe(&ch).await.unwrap();
    let total = 10_000;
    for n in 0..total {
        h.bus.publish(&ch, draft(n)).await.unwrap();
    }
    for n in 0..total {
        assert_eq!(n_of(&*next_event(&mut sub).await), n);
    }
    h.bus.publish(&ch, draft(total)).await.unwrap();
    assert_eq!(n_of(&*next_event(&mut sub).await), total);
    assert!(within("no more messages", Duration::from_millis(200), sub.next()).await.is_err());
}

async fn a_position_of_another_epoch_is_not_continued(h: Harness) {
    let ch = channel("epochs");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(h.bus.publish(&ch, draft(n)).await.unwrap().id);
    }
    let epoch = ids[0].epoch;
    let other = Epoch::from_u64(epoch.as_u64().wrapping_add(1).max(1));
    // The same offset in another history: nothing of this one was seen.
    let foreign = h.bus.history(&ch, Position::new(other, ids[1].offset), 100).await.unwrap();
    assert!(foreign.truncated, "another epoch's position cannot be continued");
    assert_eq!(foreign.events.iter().map(n_of).collect::<Vec<_>>(), (0..5).collect::<Vec<_>>());
    assert_eq!(foreign.head, ids[4]);
    // An offset from before epochs existed: epoch unknown.
    let legacy = h.bus.history(&ch, ids[1].offset.into(), 100).await.unwrap();
    assert!(legacy.truncated, "an offset without epoch cannot be continued");
    // From the beginning fits any epoch.
    assert!(!h.bus.history(&ch, Position::ZERO, 100).await.unwrap().truncated);
    assert!(!h.bus.history(&ch, Position::new(other, Offset::ZERO), 100).await.unwrap().truncated);
    // The position itself is continued.
    let own = h.bus.history(&ch, ids[1], 100).await.unwrap();
    assert!(!own.truncated);
    assert_eq!(own.events.iter().map(n_of).collect::<Vec<_>>(), vec![2, 3, 4]);
}

async fn a_position_ahead_of_the_head_is_not_continued(h: Harness) {
    let ch = channel("future");
    let mut last = Position::ZERO;
    for n in 0..3 {
        last = h.bus.publish(&ch, draft(n)).await.unwrap().id;
    }
    // One day ahead, as a host whose clock was ahead would have issued.
    let ahead = Position::new(last.epoch, Offset::new(last.offset.ms + 86_400_000, 0));
    let page = h.bus.history(&ch, ahead, 100).await.unwrap();
    assert!(page.truncated, "an offset the channel never issued cannot be continued");
    assert_eq!(page.head, last);
    assert!(!h.bus.history(&ch, last, 100).await.unwrap().truncated, "the head itself is fine");
}

async fn an_idempotent_publish_happens_once_per_key(h: Harness) {
    let ch = channel("once");
    let ttl = Duration::from_secs(60);
    let first = h.bus.publish_once(&ch, draft(1), "k-1", ttl).await.unwrap();
    assert!(!first.duplicate);
    let again = h.bus.publish_once(&ch, draft(1), "k-1", ttl).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id, "a duplicate is answered with the first publish's position");
    let other = h.bus.publish_once(&ch, draft(2), "k-2", ttl).await.unwrap();
    assert!(!other.duplicate);
    let history = h.bus.history(&ch, Position::ZERO, 100).await.unwrap();
    assert_eq!(history.events.iter().map(n_of).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(history.events[0].id, first.id);
    // An expired key publishes again.
    let short = h.bus.publish_once(&ch, draft(3), "k-3", Duration::from_millis(1)).await.unwrap();
    assert!(!short.duplicate);
    pulse_testkit::wait_until("the key expires", DEADLINE, || {
        let bus = h.bus.clone();
        let ch = ch.clone();
        async move { !bus.publish_once(&ch, draft(3), "k-3", Duration::from_secs(60)).await.unwrap().duplicate }
    })
    .await
    .unwrap();
}
