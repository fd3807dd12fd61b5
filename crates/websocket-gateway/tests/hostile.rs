//! Hostile clients against one gateway on its own Redis, while a canary
//! client on another channel must keep receiving every event, in order.
//!
//! At once: clients announcing huge frames and streaming (refused with 1009
//! from the header), tokens not valid yet (4403), with an expiry past any
//! clock (served, no panic) and replacements expired inside the leeway
//! (`unauthorized`, the current token stays), a connection-attempt flood
//! from one client behind the trusted proxy (the others still get in),
//! garbage input (1008), and a presence member switching identity before it
//! leaves (it leaves under the identity it shows). Then, in turn, more
//! connections than `max_connections` (the overflow gets 503). Outcomes are
//! asserted, not timings; the process's RSS must stay within 64 MiB of its
//! level before the attacks (a test binary of its own, so no other test
//! shares the process).

use std::time::Duration;

use anyhow::{Context, bail};
use pulse_protocol::{ClientMessage, ErrorCode, Event};
use pulse_runtime::TrustedProxies;
use pulse_testkit::{RedisServer, WsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;

/// The tests of this binary run one at a time: each measures the process.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Growth of the process's resident memory allowed over an attack.
const RSS_BUDGET: u64 = 64 << 20;
/// Events the canary must receive while the attacks run.
const CANARY_EVENTS: usize = 300;
const LONG: Duration = Duration::from_secs(60);

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Resident memory of this process (gateway and clients), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The highest RSS seen while `work` runs (sampled every 50 ms), and its
/// output.
async fn peak_rss<T>(work: impl std::future::Future<Output = T>) -> (u64, T) {
    let peak = std::sync::atomic::AtomicU64::new(rss());
    let sample = async {
        loop {
            peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let out = tokio::select! {
        out = work => out,
        () = sample => unreachable!("the sampler never ends"),
    };
    peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
    (peak.into_inner(), out)
}

fn hostile_settings(redis_url: &str) -> pulse_websocket_gateway::Settings {
    let mut s = settings();
    s.redis.url = redis_url.to_owned();
    s.auth.anonymous = false;
    s.auth.leeway_secs = 60;
    s.limits.connections_per_ip_per_sec = 5;
    s.limits.max_violations = 5;
    s.presence.channels = vec![pulse_protocol::ChannelPattern::parse("room:*").expect("pattern")];
    s.http.trusted_proxies = TrustedProxies::parse(["127.0.0.1"]).expect("entry");
    s
}

/// A client behind the proxy: its own address in `X-Forwarded-For`.
async fn connect_as(gw: &TestGateway, addr: &str, token: &str) -> anyhow::Result<WsClient> {
    gw.connect_with(&format!("?token={token}"), &[("X-Forwarded-For", addr)]).await
}

/// The canary: subscribed to `canary` from the start, reads until it has
/// `CANARY_EVENTS` events.
async fn canary_reads(mut client: WsClient) -> anyhow::Result<Vec<Event>> {
    recv_events(&mut client, CANARY_EVENTS).await.context("the canary stopped receiving")
}

/// Publishes the canary's events, one every 10 ms, across the attacks.
async fn publish_canary(gw: &TestGateway) -> anyhow::Result<Vec<Event>> {
    let canary = channel("canary");
    let mut published = Vec::with_capacity(CANARY_EVENTS);
    for _ in 0..CANARY_EVENTS {
        published.extend(publish(&gw.bus, &canary, 1).await?);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(published)
}

/// Opens a WebSocket by hand (the client libraries refuse to send what
/// comes next), as `addr` behind the proxy.
async fn raw_upgrade(gw: &TestGateway, addr: &str, token: &str) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await?;
    let request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: {addr}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await? == 0 {
            bail!("closed during the handshake: {}", String::from_utf8_lossy(&head));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head));
    }
    Ok(tcp)
}

/// Reads server frames until a close frame; its code.
async fn read_close_code(mut rd: impl tokio::io::AsyncRead + Unpin) -> anyhow::Result<Option<u16>> {
    loop {
        let mut header = [0u8; 2];
        if rd.read_exact(&mut header).await.is_err() {
            return Ok(None);
        }
        let len = match header[1] & 0x7f {
            126 => u64::from(rd.read_u16().await?),
            127 => rd.read_u64().await?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len)?];
        rd.read_exact(&mut payload).await?;
        if header[0] & 0x0f == 0x8 {
            return Ok(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])));
        }
    }
}

/// Case 1: a frame header announcing 2^40 bytes, then a stream of payload.
/// Returns the close code and how many bytes the gateway took before it
/// stopped reading.
async fn huge_frame(gw: &TestGateway, addr: &str, token: &str) -> anyhow::Result<(Option<u16>, usize)> {
    let tcp = raw_upgrade(gw, addr, token).await?;
    let (rd, mut wr) = tcp.into_split();
    let closed = tokio::spawn(read_close_code(rd));
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    wr.write_all(&header).await?;
    let chunk = vec![0x55u8; 64 * 1024];
    let mut sent = 0;
    // Up to 64 MiB, or until the gateway has closed the connection.
    while sent < 64 << 20 {
        match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
        if closed.is_finished() {
            break;
        }
    }
    drop(wr);
    let code = tokio::time::timeout(LONG, closed).await.context("no close from the gateway")???;
    Ok((code, sent))
}

/// Case 3: the JWT edges.
async fn jwt_edges(gw: &TestGateway) -> anyhow::Result<()> {
    let all = || vec![pulse_protocol::ChannelPattern::parse("*").expect("pattern")];
    // Not valid for another hour: refused.
    let mut early = pulse_auth::Claims::new("eve", all(), Duration::from_secs(7200));
    early.nbf = Some(unix_now() + 3600);
    let early = early.sign_hs256(SECRET.as_bytes())?;
    let mut client =
        WsClient::connect_with(&gw.ws_url(&format!("?token={early}")), &[("X-Forwarded-For", "198.51.100.31")]).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    anyhow::ensure!(closed.code == Some(4403), "a token not valid yet: {closed:?}");

    // Expiring after any clock: served.
    let mut far = pulse_auth::Claims::new("zed", all(), Duration::ZERO);
    far.exp = u64::MAX;
    let far = far.sign_hs256(SECRET.as_bytes())?;
    let mut client = connect_as(gw, "198.51.100.32", &far).await?;
    subscribe(&mut client, &channel("alerts"), None).await?;

    // A replacement already expired (inside the leeway): refused, the
    // current token stays.
    let mut lapsed = pulse_auth::Claims::new("zed", all(), Duration::ZERO);
    lapsed.exp = unix_now() - 5;
    client.send(&ClientMessage::Auth { token: lapsed.sign_hs256(SECRET.as_bytes())? }).await?;
    let (code, _) = recv_error(&mut client).await?;
    anyhow::ensure!(code == ErrorCode::Unauthorized, "a lapsed replacement: {code:?}");
    ping_barrier(&mut client, 1).await?;
    subscribe(&mut client, &channel("decisions"), None).await?;
    Ok(())
}

/// Case 4: one client behind the proxy floods connection attempts; 40
/// others still get in. Returns (flooder's 429s, others refused).
async fn attempt_flood(gw: &TestGateway, token: &str) -> anyhow::Result<(usize, Vec<u16>)> {
    let url = gw.ws_url(&format!("?token={token}"));
    let flood = async {
        let mut limited = 0;
        for _ in 0..60 {
            match WsClient::connect_status(&url, &[("X-Forwarded-For", "203.0.113.66")]).await? {
                Ok(client) => client.close().await?,
                Err(429) => limited += 1,
                Err(other) => bail!("the flooder got {other}"),
            }
        }
        anyhow::Ok(limited)
    };
    let others = async {
        let mut refused = Vec::new();
        for i in 0..40 {
            let addr = format!("198.51.100.{}", 100 + i);
            match WsClient::connect_status(&url, &[("X-Forwarded-For", &addr)]).await? {
                Ok(client) => client.close().await?,
                Err(status) => refused.push(status),
            }
        }
        anyhow::Ok(refused)
    };
    let (limited, refused) = tokio::try_join!(flood, others)?;
    Ok((limited, refused))
}

/// Garbage: binary frames and broken JSON until closed. The close code.
async fn garbage(gw: &TestGateway, token: &str) -> anyhow::Result<Option<u16>> {
    let mut client = connect_as(gw, "198.51.100.40", token).await?;
    for i in 0..20 {
        let sent = if i % 2 == 0 {
            client.send_text("{\"type\":\"subscribe\",").await
        } else {
            client.send_raw(tokio_tungstenite::tungstenite::Message::Binary(vec![0u8; 100].into())).await
        };
        if sent.is_err() {
            break;
        }
    }
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    Ok(closed.code)
}

/// Reads until a `presence_update` lists exactly `names`.
async fn until_members(client: &mut WsClient, names: &[&str]) -> anyhow::Result<()> {
    let want = serde_json::json!(names);
    loop {
        let event = client.recv_event(DEADLINE).await?;
        if event.event_type.as_str() == "presence_update" && event.data["members"] == want {
            return Ok(());
        }
    }
}

/// Case 6: a member switches token, then leaves; the observer sees the
/// room empty of both identities.
async fn presence_switch(gw: &TestGateway) -> anyhow::Result<()> {
    let room = channel("room:hostile");
    let carol = token("carol", &["room:*"], Duration::from_secs(300));
    let mut observer = connect_as(gw, "198.51.100.50", &carol).await?;
    subscribe(&mut observer, &room, None).await?;
    let alice = token("alice", &["room:*"], Duration::from_secs(300));
    let mut switcher = connect_as(gw, "198.51.100.51", &alice).await?;
    subscribe(&mut switcher, &room, None).await?;
    until_members(&mut observer, &["alice", "carol"]).await?;
    switcher.send(&ClientMessage::Auth { token: token("bob", &["room:*"], Duration::from_secs(300)) }).await?;
    until_members(&mut observer, &["bob", "carol"]).await?;
    switcher.send(&ClientMessage::Unsubscribe { channel: room.clone() }).await?;
    until_members(&mut observer, &["carol"]).await?;
    Ok(())
}

/// Case 5 (its outcome): more connections than `max_connections`; the
/// overflow gets 503 and the canary is unaffected. Returns how many got 503.
async fn over_capacity(gw: &TestGateway, token: &str, attempts: usize) -> anyhow::Result<usize> {
    let mut held = Vec::new();
    let mut unavailable = 0;
    for i in 0..attempts {
        let addr = format!("192.0.2.{}", i % 250);
        let url = gw.ws_url(&format!("?token={token}"));
        match WsClient::connect_status(&url, &[("X-Forwarded-For", &addr)]).await? {
            Ok(client) => held.push(client),
            Err(503) => unavailable += 1,
            Err(other) => bail!("over capacity, got {other} instead of 503"),
        }
    }
    for client in held {
        client.close().await?;
    }
    Ok(unavailable)
}

#[tokio::test]
async fn hostile_clients_do_not_exhaust_or_fool_the_gateway_and_the_canary_loses_nothing() -> anyhow::Result<()> {
    let _alone = ALONE.lock().await;
    let redis = RedisServer::start().await?;
    let mut s = hostile_settings(&redis.url());
    s.gateway.max_connections = 80;
    let gw = spawn(s, redis_bus(&redis).await?).await?;
    let reader = token("reader", &["*"], Duration::from_secs(3600));

    let mut canary = connect_as(&gw, "198.51.100.1", &reader).await?;
    subscribe(&mut canary, &channel("canary"), None).await?;
    let canary = tokio::spawn(canary_reads(canary));
    let baseline = rss();

    let attacks = async {
        let huge = futures_util::future::try_join_all(
            ["198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13"]
                .map(|addr| huge_frame(&gw, addr, &reader)),
        );
        let (huge, (), (limited, refused), garbage_code, ()) = tokio::try_join!(
            huge,
            jwt_edges(&gw),
            attempt_flood(&gw, &reader),
            garbage(&gw, &reader),
            presence_switch(&gw),
        )?;
        for (code, sent) in &huge {
            anyhow::ensure!(*code == Some(1009), "a huge frame was closed with {code:?} after {sent} bytes");
        }
        anyhow::ensure!(limited > 0, "the flooding client was never limited");
        anyhow::ensure!(refused.is_empty(), "clients behind the proxy were refused: {refused:?}");
        anyhow::ensure!(garbage_code == Some(1008), "garbage was closed with {garbage_code:?}");
        // In turn: past max_connections.
        let unavailable = over_capacity(&gw, &reader, 100).await?;
        anyhow::ensure!(unavailable > 0, "no connection was refused past max_connections");
        anyhow::Ok(huge)
    };
    let (peak, outcome) = peak_rss(async { tokio::try_join!(attacks, publish_canary(&gw)) }).await;
    let (huge, published) = outcome?;
    let grown = peak.saturating_sub(baseline);

    let received = tokio::time::timeout(LONG, canary).await.context("canary")???;
    let ids = |events: &[Event]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&received), ids(&published), "the canary lost, duplicated or reordered events");
    eprintln!("hostile: RSS peak +{} MiB over the attacks; huge frames taken before the close: {huge:?}", grown >> 20);
    assert!(grown < RSS_BUDGET, "RSS grew by {} MiB during the attacks ({huge:?})", grown >> 20);
    // The gateway still takes new clients.
    let mut late = connect_as(&gw, "198.51.100.200", &reader).await?;
    subscribe(&mut late, &channel("alerts"), None).await?;
    Ok(())
}

/// Case 2: a client subscribed to a channel of large events that sends
/// `refresh` at the allowed rate and never reads. Its pending output must
/// be bounded in bytes (snapshots, control frames and pongs included), so
/// the gateway's memory stays flat and the canary keeps receiving.
#[tokio::test]
async fn a_client_that_refreshes_and_never_reads_is_bounded_in_bytes() -> anyhow::Result<()> {
    let _alone = ALONE.lock().await;
    let redis = RedisServer::start().await?;
    let mut s = hostile_settings(&redis.url());
    s.limits.messages_per_sec = 20;
    let gw = spawn(s, redis_bus(&redis).await?).await?;
    let reader = token("reader", &["*"], Duration::from_secs(3600));
    let big = channel("big");
    // 100 events of 32 KiB: each snapshot is some 3 MiB.
    publish_sized(&gw.bus, &big, 100, 32 * 1024).await?;

    let mut canary = connect_as(&gw, "198.51.100.1", &reader).await?;
    subscribe(&mut canary, &channel("canary"), None).await?;
    let canary = tokio::spawn(canary_reads(canary));
    let baseline = rss();

    let hoarders = (0..2).map(|i| {
        let (gw, reader, big) = (&gw, &reader, &big);
        async move {
            let tcp = raw_upgrade(gw, &format!("198.51.100.{}", 60 + i), reader).await?;
            let (mut rd, mut wr) = tcp.into_split();
            let frame = |text: &str| {
                let mask = [9u8, 8, 7, 6];
                let payload = text.as_bytes();
                let mut out = vec![0x81, 0x80 | 126];
                out.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.extend_from_slice(&mask);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                out
            };
            let subscribe = ClientMessage::Subscribe { channel: big.clone(), since: None }.to_json();
            let refresh = ClientMessage::Refresh { channel: big.clone() }.to_json();
            wr.write_all(&frame(&format!("{subscribe:<200}"))).await?;
            // Reads up to `subscribed`, then never again.
            let mut seen = Vec::new();
            while !String::from_utf8_lossy(&seen).contains("\"subscribed\"") {
                let mut buf = [0u8; 512];
                let n = tokio::time::timeout(DEADLINE, rd.read(&mut buf)).await??;
                anyhow::ensure!(n > 0, "closed before subscribed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            // 20 refreshes a second for 10 s, never reading.
            for _ in 0..200 {
                if wr.write_all(&frame(&format!("{refresh:<200}"))).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Still connected when the memory is measured.
            anyhow::Ok((rd, wr))
        }
    });
    let (peak, outcome) =
        peak_rss(async { tokio::try_join!(futures_util::future::try_join_all(hoarders), publish_canary(&gw)) }).await;
    let (_connected, published) = outcome?;
    let grown = peak.saturating_sub(baseline);
    let received = tokio::time::timeout(LONG, canary).await.context("canary")???;
    assert_eq!(received.len(), published.len(), "the canary lost events");
    eprintln!("hoarders: RSS peak +{} MiB", grown >> 20);
    assert!(grown < RSS_BUDGET, "RSS grew by {} MiB under two clients that never read", grown >> 20);
    Ok(())
}
