use pulse_protocol::{Event, Position};
use pulse_testkit::RedisServer;

use crate::helpers::*;

#[tokio::test]
async fn a_client_resumes_on_the_other_instance_with_each_missed_event_once_in_order() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let one = spawn(settings(), redis_bus(&redis).await?).await?;
    let two = spawn(settings(), redis_bus(&redis).await?).await?;
    let alerts = channel("alerts");

    let mut client = one.connect().await?;
    subscribe(&mut client, &alerts, None).await?;
    let first = publish(&one.bus, &alerts, 1).await?;
    let last_seen = client.recv_event(DEADLINE).await?.id;
    assert_eq!(last_seen, first[0].id);
    client.close().await?;

    let missed = publish(&one.bus, &alerts, 100).await?;
    let mut client = two.connect().await?;
    let (replayed, offset, recovered) = subscribe(&mut client, &alerts, Some(last_seen)).await?;
    assert!(recovered);
    assert_eq!(ids(&replayed), ids(&missed));
    assert_eq!(offset, missed[99].id);
    // Live after the replay.
    let next = publish(&two.bus, &alerts, 1).await?;
    assert_eq!(client.recv_event(DEADLINE).await?.id, next[0].id);
    Ok(())
}

#[tokio::test]
async fn a_replay_racing_live_publishes_has_no_gap_or_duplicate() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut s = settings();
    // Small pages: the replay takes many round trips while events keep coming.
    s.gateway.replay_page = 7;
    let gw = spawn(s, redis_bus(&redis).await?).await?;
    let publisher_bus = redis_bus(&redis).await?;
    let ch = channel("race");
    // Someone else keeps the channel live on this instance.
    let mut other = gw.connect().await?;
    subscribe(&mut other, &ch, None).await?;

    let before = publish(&publisher_bus, &ch, 200).await?;
    let since = before[0].id;
    let publisher = {
        let bus = publisher_bus.clone();
        let ch = ch.clone();
        tokio::spawn(async move { publish(&bus, &ch, 300).await })
    };
    let mut client = gw.connect().await?;
    let (mut received, _, recovered) = subscribe(&mut client, &ch, Some(since)).await?;
    assert!(recovered);
    let during = publisher.await??;
    let last = during[299].id;
    while received.last().map(|e| e.id) != Some(last) {
        received.push(client.recv_event(DEADLINE).await?);
    }
    let expected: Vec<Position> = before[1..].iter().chain(&during).map(|e: &Event| e.id).collect();
    assert_eq!(ids(&received), expected);
    Ok(())
}

#[tokio::test]
async fn resume_beyond_history_says_not_recovered() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let gw = spawn(settings(), redis_bus_with(&redis, 10).await?).await?;
    let ch = channel("short");
    let old = publish(&gw.bus, &ch, 30).await?;
    let mut client = gw.connect().await?;
    let (replayed, offset, recovered) = subscribe(&mut client, &ch, Some(old[0].id)).await?;
    assert!(!recovered);
    assert!(replayed.is_empty());
    assert_eq!(offset, old[29].id);
    let next = publish(&gw.bus, &ch, 1).await?;
    assert_eq!(client.recv_event(DEADLINE).await?.id, next[0].id);
    Ok(())
}
