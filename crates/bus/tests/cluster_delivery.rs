//! Live delivery on a Redis Cluster without faults: several subscribing
//! buses, many channels spread over every master, many concurrent
//! publishers. Every acknowledged event reaches every subscriber once and
//! in order (or the subscriber is told of a gap).
//!
//! Each subscribing bus subscribes its first channel right after
//! [`RedisBus::connect`] returns, while its pub/sub task may still be
//! starting to serve the new connection: that subscribe must reach Redis
//! too.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use pulse_bus::{Bus, BusMessage, RedisBus, RedisBusConfig};
use pulse_protocol::{Channel, EventDraft, EventType, Offset};
use pulse_testkit::{DEADLINE, RedisCluster, wait_until};
use serde_json::json;

const CHANNELS: usize = 128;
const SUBSCRIBERS: usize = 3;
const PUBLISHERS: usize = 32;
const EVENTS_PER_PUBLISHER: usize = 600;

/// What one subscriber saw of each channel: offsets in delivery order, and
/// how many gaps.
#[derive(Debug, Default)]
struct Seen {
    events: BTreeMap<Channel, Vec<Offset>>,
    gaps: BTreeMap<Channel, usize>,
}

async fn bus(url: String) -> RedisBus {
    let config = RedisBusConfig {
        url,
        // As fast as the cluster takes them: no replica to wait for.
        replicas_to_ack: Some(0),
        ..RedisBusConfig::default()
    };
    RedisBus::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_on_many_channels_reaches_every_subscriber_once() {
    let cluster = RedisCluster::shared().await.unwrap();
    let url = cluster.url();
    let channels: Vec<Channel> = (0..CHANNELS).map(|i| Channel::parse(&format!("many-{i}")).unwrap()).collect();

    let mut seen = Vec::new();
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let subscriber = bus(url.clone()).await;
        let mut sub = subscriber.subscription();
        for channel in &channels {
            sub.subscribe(channel).await.unwrap();
        }
        let record = Arc::new(Mutex::new(Seen::default()));
        seen.push(record.clone());
        subscribers.push(tokio::spawn(async move {
            let _subscriber = subscriber;
            while let Some(message) = sub.next().await {
                let mut record = record.lock().unwrap();
                match message {
                    BusMessage::Event(event) => {
                        record.events.entry(event.channel.clone()).or_default().push(event.id.offset)
                    }
                    BusMessage::Gap { channel, .. } => *record.gaps.entry(channel).or_default() += 1,
                }
            }
        }));
    }

    let publisher = bus(url.clone()).await;
    let event_type = EventType::parse("test.event").unwrap();
    let mut publishing = Vec::new();
    for task in 0..PUBLISHERS {
        let (publisher, channels, event_type) = (publisher.clone(), channels.clone(), event_type.clone());
        publishing.push(tokio::spawn(async move {
            let mut acknowledged: Vec<(Channel, Offset)> = Vec::new();
            for n in 0..EVENTS_PER_PUBLISHER {
                let channel = &channels[(task + n) % channels.len()];
                let event = publisher.publish(channel, EventDraft::new(event_type.clone(), json!({ "n": n }))).await;
                acknowledged.push((channel.clone(), event.unwrap().id.offset));
            }
            acknowledged
        }));
    }
    let mut published: BTreeMap<Channel, BTreeSet<Offset>> = BTreeMap::new();
    for task in publishing {
        for (channel, offset) in task.await.unwrap() {
            published.entry(channel).or_default().insert(offset);
        }
    }
    let total: usize = published.values().map(BTreeSet::len).sum();
    let delivered =
        || seen.iter().map(|s| s.lock().unwrap().events.values().map(Vec::len).sum::<usize>()).sum::<usize>();
    let settled =
        wait_until("every subscriber has every event", DEADLINE, || async { delivered() >= total * SUBSCRIBERS }).await;
    for task in &subscribers {
        task.abort();
    }

    let mut problems = Vec::new();
    for (index, record) in seen.iter().enumerate() {
        let record = record.lock().unwrap();
        for (channel, offsets) in &published {
            let got = record.events.get(channel).map(Vec::as_slice).unwrap_or_default();
            if !got.windows(2).all(|w| w[0] < w[1]) {
                problems.push(format!("subscriber {index}, {channel}: not once and in order"));
            }
            let missing: Vec<usize> = offsets
                .iter()
                .enumerate()
                .filter(|(_, offset)| got.binary_search(offset).is_err())
                .map(|(rank, _)| rank)
                .collect();
            if !missing.is_empty() && record.gaps.get(channel).copied().unwrap_or(0) == 0 {
                problems.push(format!(
                    "subscriber {index}, {channel}: {} of {} events missing without a gap, by publish rank: {:?}",
                    missing.len(),
                    offsets.len(),
                    &missing[..missing.len().min(20)]
                ));
            }
        }
    }
    eprintln!("published {total} on {CHANNELS} channels, delivered {} of {}", delivered(), total * SUBSCRIBERS);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    settled.unwrap();
}
