//! Two gateways on a Redis Cluster whose master is killed while events
//! flow: resuming clients get every acknowledged event once and in order,
//! or are told (`recovered: false`) where events may be missing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pulse_bus::{Bus, RedisBus, RedisBusConfig};
use pulse_protocol::{Channel, ClientMessage, ControlMessage, EventDraft, EventType, Position, ServerFrame};
use pulse_testkit::{RedisCluster, WsClient, wait_until};
use tokio::sync::{Notify, watch};

use crate::helpers::{DEADLINE, channel, settings, spawn};

/// A bus on `cluster` whose pub/sub link notices a dead node quickly.
async fn cluster_bus(cluster: &RedisCluster) -> anyhow::Result<RedisBus> {
    let bus = RedisBus::connect(RedisBusConfig {
        url: cluster.url(),
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_secs(1),
        pool_size: 4,
        ..RedisBusConfig::default()
    })
    .await?;
    anyhow::ensure!(bus.is_cluster(), "not detected as a cluster");
    Ok(bus)
}

/// What a client saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Event(u64),
    /// `recovered: false`: events before this point may be missing.
    Told,
}

/// A client that stays subscribed to `ch`, alternating between the gateways
/// whenever its connection ends or `reconnect` fires, resuming from the
/// last position it received.
async fn resuming_client(
    urls: Vec<String>,
    ch: Channel,
    seen: Arc<Mutex<Vec<Seen>>>,
    reconnect: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut since: Option<Position> = None;
    for attempt in 0.. {
        if *stop.borrow() {
            return;
        }
        let url = &urls[attempt % urls.len()];
        let Ok(mut client) = WsClient::connect(url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if client.send(&ClientMessage::Subscribe { channel: ch.clone(), since }).await.is_err() {
            continue;
        }
        loop {
            let frame = tokio::select! {
                frame = client.recv(DEADLINE) => frame,
                () = reconnect.notified() => break,
                _ = stop.changed() => return,
            };
            match frame {
                Ok(ServerFrame::Event(event)) => {
                    let Some(n) = event.data["n"].as_u64() else { continue };
                    since = Some(event.id);
                    seen.lock().push(Seen::Event(n));
                }
                Ok(ServerFrame::Control(ControlMessage::Subscribed { recovered, offset, .. })) => {
                    if !recovered && since.is_some() {
                        seen.lock().push(Seen::Told);
                    }
                    since = Some(offset);
                }
                Ok(ServerFrame::Control(_)) => {}
                Err(_) => break,
            }
        }
    }
}

#[tokio::test]
async fn resuming_clients_lose_no_acknowledged_event_silently_when_a_master_fails() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let mut gateways = Vec::new();
    for _ in 0..2 {
        gateways.push(spawn(settings(), Arc::new(cluster_bus(&cluster).await?)).await?);
    }
    let urls: Vec<String> = gateways.iter().map(|g| g.ws_url("")).collect();
    let publisher = cluster_bus(&cluster).await?;
    let ch = channel("cluster.failover");

    let (stop, stop_rx) = watch::channel(false);
    let reconnect = Arc::new(Notify::new());
    let logs: Vec<Arc<Mutex<Vec<Seen>>>> = (0..4).map(|_| Arc::default()).collect();
    let mut clients = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let urls: Vec<String> = urls.iter().cycle().skip(i).take(2).cloned().collect();
        clients.push(tokio::spawn(resuming_client(urls, ch.clone(), log.clone(), reconnect.clone(), stop_rx.clone())));
    }

    let mut acknowledged = BTreeSet::new();
    let mut n = 0u64;
    let mut publish_some = async |count: u64, acknowledged: &mut BTreeSet<u64>| {
        for _ in 0..count {
            let draft = EventDraft::new(EventType::parse("test.event")?, serde_json::json!({ "n": n }));
            if publisher.publish(&ch, draft).await.is_ok() {
                acknowledged.insert(n);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::Ok(())
    };
    // Every client is subscribed once it receives events.
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !logs.iter().all(|log| !log.lock().is_empty()) {
        anyhow::ensure!(tokio::time::Instant::now() < give_up, "the clients did not subscribe in time");
        publish_some(1, &mut acknowledged).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish_some(200, &mut acknowledged).await?;

    let killing = {
        let cluster = &cluster;
        let key = publisher.keys().hist(&ch);
        async move { cluster.kill_master_of(&key).await }
    };
    let publishing = publish_some(400, &mut acknowledged);
    let (killed, publishing) = tokio::join!(killing, publishing);
    let (old, new) = killed?;
    publishing?;
    anyhow::ensure!(old != new);
    // Every client resumes on the other gateway.
    reconnect.notify_waiters();
    publish_some(200, &mut acknowledged).await?;

    let last = *acknowledged.last().expect("some publishes were acknowledged");
    for (i, log) in logs.iter().enumerate() {
        wait_until(&format!("client {i} has event {last}"), DEADLINE * 2, || async {
            log.lock().contains(&Seen::Event(last))
        })
        .await?;
    }
    stop.send_replace(true);
    for client in clients {
        client.await?;
    }
    for (i, log) in logs.iter().enumerate() {
        let seen = log.lock().clone();
        let events: Vec<u64> =
            seen.iter().filter_map(|s| if let Seen::Event(n) = s { Some(*n) } else { None }).collect();
        anyhow::ensure!(events.windows(2).all(|w| w[0] < w[1]), "client {i}: not once and in order: {events:?}");
        let delivered: BTreeSet<u64> = events.iter().copied().collect();
        for missing in acknowledged.difference(&delivered).filter(|m| **m >= events[0]) {
            // Told at the point where it would have been.
            let at = seen.iter().position(|s| matches!(s, Seen::Event(m) if m > missing)).unwrap_or(seen.len());
            let told = seen[..at].iter().rev().take_while(|s| !matches!(s, Seen::Event(m) if m < missing));
            anyhow::ensure!(
                told.clone().any(|s| *s == Seen::Told),
                "client {i}: acknowledged event {missing} neither delivered nor reported missing"
            );
        }
        eprintln!(
            "client {i}: {} events delivered of {} acknowledged ({} published), told {} times",
            events.len(),
            acknowledged.len(),
            n,
            seen.iter().filter(|s| **s == Seen::Told).count()
        );
    }
    Ok(())
}
