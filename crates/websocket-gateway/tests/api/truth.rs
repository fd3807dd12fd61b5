//! Resume tells the truth when history was lost or replaced, or when a
//! client asks for a position the channel never issued; a silent bus link is
//! found and replaced.

use std::time::Duration;

use pulse_bus::{RedisBus, RedisBusConfig};
use pulse_protocol::{Epoch, Offset, Position, ServerFrame};
use pulse_testkit::{RedisServer, TcpProxy, wait_until};

use crate::helpers::*;

/// Redis came back empty (restart without persistence), was flushed, or the
/// channel's stream was deleted: a client resuming from before that is told
/// `recovered: false` with the new head, never `recovered: true` with the
/// events after it silently missing.
#[tokio::test]
async fn a_resume_across_lost_history_is_not_recovered() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let gw = spawn(settings(), redis_bus(&redis).await?).await?;
    let ch = channel("c");
    for loss in ["restart", "flushall", "del"] {
        let a = publish(&gw.bus, &ch, 3).await?;
        match loss {
            "restart" => {
                redis.restart().await?;
                let http = reqwest::Client::new();
                wait_until("the gateway is ready again", DEADLINE, || async {
                    http.get(gw.http_url("/readyz")).send().await.is_ok_and(|r| r.status() == 200)
                })
                .await?;
            }
            "flushall" => {
                let _: String = redis.cmd(&["FLUSHALL"]).await?;
            }
            _ => {
                let _: u64 = redis.cmd(&["DEL", &pulse_bus::redis_lua::Keys::new("pulse:").hist(&ch)]).await?;
            }
        }
        let d = publish(&gw.bus, &ch, 1).await?;
        let mut client = gw.connect().await?;
        let (replayed, offset, recovered) = subscribe(&mut client, &ch, Some(a[0].id)).await?;
        assert!(!recovered, "after {loss}, B and C are gone: the client must be told");
        assert!(replayed.is_empty(), "after {loss}: nothing is replayed from another history: {replayed:?}");
        assert_eq!(offset, d[0].id, "after {loss}, the client continues from the new head");
        let next = publish(&gw.bus, &ch, 1).await?;
        assert_eq!(client.recv_event(DEADLINE).await?.id, next[0].id);
    }
    Ok(())
}

/// A standalone (memory bus) restart is a new history too.
#[tokio::test]
async fn a_resume_from_before_a_memory_bus_restart_is_not_recovered() -> anyhow::Result<()> {
    let ch = channel("c");
    let before = spawn(settings(), memory_bus()).await?;
    let a = publish(&before.bus, &ch, 3).await?;
    before.shutdown.trigger();
    let after = spawn(settings(), memory_bus()).await?;
    let d = publish(&after.bus, &ch, 1).await?;
    let mut client = after.connect().await?;
    let (replayed, offset, recovered) = subscribe(&mut client, &ch, Some(a[0].id)).await?;
    assert!(!recovered);
    assert!(replayed.is_empty());
    assert_eq!(offset, d[0].id);
    Ok(())
}

/// A `since` ahead of the head (a host whose clock was ahead issued it, or
/// a client made it up) is not echoed back as recovered, and later live
/// events all arrive.
#[tokio::test]
async fn a_since_the_channel_never_issued_is_not_recovered() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    for bus in [memory_bus(), redis_bus(&redis).await?] {
        let gw = spawn(settings(), bus).await?;
        let ch = channel("future");
        let published = publish(&gw.bus, &ch, 3).await?;
        let head = published[2].id;
        let tomorrow = Position::new(head.epoch, Offset::new(head.offset.ms + 86_400_000, 0));
        let mut client = gw.connect().await?;
        let (replayed, offset, recovered) = subscribe(&mut client, &ch, Some(tomorrow)).await?;
        assert!(!recovered, "a future since is not a promise the gateway can keep");
        assert!(replayed.is_empty());
        assert_eq!(offset, head, "the real head, not the echoed future id");
        let live = publish(&gw.bus, &ch, 3).await?;
        assert_eq!(ids(&recv_events(&mut client, 3).await?), ids(&live), "0 of 3 was delivered before");

        // An offset from before epochs existed: unknown epoch.
        let mut legacy = gw.connect().await?;
        let (_, offset, recovered) = subscribe(&mut legacy, &ch, Some(published[0].id.offset.into())).await?;
        assert!(!recovered, "an offset without epoch is accepted, as unknown epoch");
        assert_eq!(offset, live[2].id);
        // From the beginning is still a full replay.
        let mut fresh = gw.connect().await?;
        let (replayed, _, recovered) = subscribe(&mut fresh, &ch, Some(Position::ZERO)).await?;
        assert!(recovered);
        assert_eq!(replayed.len(), 6);
        gw.shutdown.trigger();
    }
    Ok(())
}

/// SSE resumes from `Last-Event-ID` with the same verdicts.
#[tokio::test]
async fn sse_last_event_id_of_another_epoch_is_not_recovered() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let ch = channel("alerts");
    let published = publish(&gw.bus, &ch, 2).await?;
    let stale = Position::new(Epoch::from_u64(published[0].id.epoch.as_u64() ^ 1), published[0].id.offset);
    let response = reqwest::Client::new()
        .get(gw.http_url("/sse?channels=alerts"))
        .header("Last-Event-ID", format!("alerts@{stale}"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let text = read_sse_until(response, "\"subscribed\"").await?;
    assert!(text.contains("\"recovered\":false"), "{text}");
    assert!(text.contains(&format!("\"offset\":\"{}\"", published[1].id)), "{text}");
    assert!(text.contains(&format!("id: alerts@{}", published[1].id)), "the stream continues from the head: {text}");
    Ok(())
}

async fn read_sse_until(mut response: reqwest::Response, needle: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    while !text.contains(needle) || !text.ends_with("\n\n") {
        let chunk = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("no {needle} within {DEADLINE:?}: {text}"))??
            .ok_or_else(|| anyhow::anyhow!("SSE stream ended: {text}"))?;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    Ok(text)
}

/// The gateway's Redis connections stop moving bytes but stay open (a
/// partition; a failover that leaves the old primary unreachable): the
/// gateway notices within its ping deadline, reports it in `/readyz` and
/// `/metrics`, reconnects, and delivers everything published meanwhile.
#[tokio::test]
async fn a_frozen_bus_link_is_reported_replaced_and_loses_nothing() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port()).parse()?).await?;
    let bus = RedisBus::connect(RedisBusConfig {
        url: proxy.redis_url(),
        pool_size: 4,
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(500),
        ..RedisBusConfig::default()
    })
    .await?;
    let gw = spawn(settings(), std::sync::Arc::new(bus)).await?;
    let publisher = redis_bus(&redis).await?;
    let ch = channel("partitioned");
    let mut client = gw.connect().await?;
    subscribe(&mut client, &ch, None).await?;
    let http = reqwest::Client::new();
    assert_eq!(http.get(gw.http_url("/readyz")).send().await?.status(), 200);

    proxy.freeze_all();
    let during = publish(&publisher, &ch, 40).await?;
    wait_until("/readyz reports the dead link", DEADLINE, || async {
        http.get(gw.http_url("/readyz")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await?;

    proxy.thaw();
    let received = recv_events(&mut client, 40).await?;
    assert_eq!(ids(&received), ids(&during), "every event once, in order");
    wait_until("/readyz is ready again", DEADLINE, || async {
        http.get(gw.http_url("/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await?;
    let metrics = http.get(gw.http_url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("pulse_bus_link_up"), "{metrics}");
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pulse_bus_reconnects_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reconnects >= 1.0, "the reconnect is counted: {metrics}");
    Ok(())
}

/// The gateway's "last id" filter never drops a live event of a new epoch,
/// even one whose offset is lower (a new primary whose clock is behind).
#[tokio::test]
async fn live_events_of_a_new_epoch_with_lower_offsets_are_delivered() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let gw = spawn(settings(), redis_bus(&redis).await?).await?;
    let ch = channel("rewound");
    let mut client = gw.connect().await?;
    subscribe(&mut client, &ch, None).await?;
    // Events far in the future of the new history's clock.
    let keys = pulse_bus::redis_lua::Keys::new("pulse:");
    let _: String = redis.cmd(&["XADD", &keys.hist(&ch), "9999999999999-0", "e", "{}"]).await?;
    let _: String = redis.cmd(&["SET", &keys.epoch(&ch), "old1"]).await?;
    let old = publish(&gw.bus, &ch, 2).await?;
    assert!(old[0].id.offset.ms > 9_999_999_999_000);
    assert_eq!(ids(&recv_events(&mut client, 2).await?), ids(&old));
    // The history is lost; the new one starts at today's clock, far below.
    let _: String = redis.cmd(&["FLUSHALL"]).await?;
    let new = publish(&gw.bus, &ch, 3).await?;
    assert_ne!(new[0].id.epoch, old[0].id.epoch);
    assert!(new[0].id.offset < old[1].id.offset);
    let frames = recv_until_events(&mut client, 3).await?;
    let events: Vec<_> =
        frames.iter().filter_map(|f| if let ServerFrame::Event(e) = f { Some(e.id) } else { None }).collect();
    assert_eq!(events, ids(&new), "none of the new epoch's events is dropped as already seen");
    Ok(())
}

/// Reads frames until `n` events arrived (control frames such as a gap's
/// `subscribed` are kept too).
async fn recv_until_events(client: &mut pulse_testkit::WsClient, n: usize) -> anyhow::Result<Vec<ServerFrame>> {
    let mut frames = Vec::new();
    while frames.iter().filter(|f| matches!(f, ServerFrame::Event(_))).count() < n {
        frames.push(client.recv(DEADLINE).await?);
    }
    Ok(frames)
}
