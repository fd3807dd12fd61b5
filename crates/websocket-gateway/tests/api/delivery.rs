use pulse_protocol::{ClientMessage, ControlMessage};
use pulse_testkit::RedisServer;

use crate::helpers::*;

#[tokio::test]
async fn a_client_on_each_instance_receives_every_event() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let one = spawn(settings(), redis_bus(&redis).await?).await?;
    let two = spawn(settings(), redis_bus(&redis).await?).await?;
    let alerts = channel("alerts");
    let mut a = one.connect().await?;
    let mut b = two.connect().await?;
    subscribe(&mut a, &alerts, None).await?;
    subscribe(&mut b, &alerts, None).await?;

    let published = publish(&one.bus, &alerts, 50).await?;
    assert_eq!(ids(&recv_events(&mut a, 50).await?), ids(&published));
    assert_eq!(ids(&recv_events(&mut b, 50).await?), ids(&published));
    // And nothing more.
    assert!(ping_barrier(&mut a, 1).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn unsubscribe_stops_delivery() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let gw = spawn(settings(), redis_bus(&redis).await?).await?;
    let (alerts, other) = (channel("alerts"), channel("decisions"));
    let mut client = gw.connect().await?;
    subscribe(&mut client, &alerts, None).await?;
    subscribe(&mut client, &other, None).await?;
    publish(&gw.bus, &alerts, 1).await?;
    client.recv_event(DEADLINE).await?;

    client.send(&ClientMessage::Unsubscribe { channel: alerts.clone() }).await?;
    assert_eq!(client.recv_control(DEADLINE).await?, ControlMessage::Unsubscribed { channel: alerts.clone() });
    publish(&gw.bus, &alerts, 3).await?;
    // An event on the other channel published afterwards arrives, and
    // nothing of the unsubscribed one before it.
    let marker = publish(&gw.bus, &other, 1).await?;
    let event = client.recv_event(DEADLINE).await?;
    assert_eq!(event.id, marker[0].id);
    assert_eq!(event.channel, other);
    // The channel is released on the bus side of the hub too.
    client.send(&ClientMessage::Unsubscribe { channel: other.clone() }).await?;
    client.recv_control(DEADLINE).await?;
    pulse_testkit::wait_until("the hub releases both channels", DEADLINE, || async {
        gw.gateway.stats().channels == 0
    })
    .await?;
    // Unsubscribing again is an error naming the channel.
    client.send(&ClientMessage::Unsubscribe { channel: alerts.clone() }).await?;
    let (code, message) = recv_error(&mut client).await?;
    assert_eq!(code, pulse_protocol::ErrorCode::NotSubscribed);
    assert!(message.contains("alerts"), "{message}");
    Ok(())
}

#[tokio::test]
async fn bare_ping_gets_bare_pong_and_json_ping_json_pong() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let mut client = gw.connect().await?;
    // What hand-written clients send and check for: `ws.send('ping')` …
    // `if (event.data === 'pong') return;`.
    client.send_text("ping").await?;
    assert_eq!(client.recv_text(DEADLINE).await?, "pong");
    client.send_text(r#"{"type":"ping"}"#).await?;
    assert_eq!(client.recv_control(DEADLINE).await?, ControlMessage::Pong { id: None });
    client.send_text(r#"{"type":"ping","id":"abc"}"#).await?;
    assert_eq!(client.recv_control(DEADLINE).await?, ControlMessage::Pong { id: Some(serde_json::json!("abc")) });
    Ok(())
}

#[tokio::test]
async fn memory_bus_mode_delivers_resumes_and_snapshots() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let ops = channel("ops");
    let mut client = gw.connect().await?;
    let (_, head, recovered) = subscribe(&mut client, &ops, None).await?;
    assert!(recovered);
    let published = publish(&gw.bus, &ops, 5).await?;
    assert!(published[0].id.follows(&head));
    assert_eq!(ids(&recv_events(&mut client, 5).await?), ids(&published));

    let mut late = gw.connect().await?;
    let (replayed, offset, recovered) = subscribe(&mut late, &ops, Some(published[1].id)).await?;
    assert_eq!(ids(&replayed), ids(&published[2..]));
    assert_eq!(offset, published[4].id);
    assert!(recovered);

    client.send(&ClientMessage::Refresh { channel: ops.clone() }).await?;
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Snapshot { channel, offset, data } => {
            assert_eq!(channel, ops);
            assert_eq!(offset, published[4].id);
            assert_eq!(data.as_array().map(Vec::len), Some(5), "{data}");
        }
        other => anyhow::bail!("expected a snapshot, got {other:?}"),
    }
    // Refresh of a channel not subscribed is an error.
    client.send(&ClientMessage::Refresh { channel: channel("nope") }).await?;
    assert_eq!(recv_error(&mut client).await?.0, pulse_protocol::ErrorCode::NotSubscribed);
    Ok(())
}

#[tokio::test]
async fn dead_client_is_closed_by_the_heartbeat() -> anyhow::Result<()> {
    let mut s = settings();
    s.gateway.heartbeat_interval = std::time::Duration::from_millis(100);
    s.gateway.client_timeout = std::time::Duration::from_millis(400);
    let gw = spawn(s, memory_bus()).await?;

    // A raw socket that never reads nor writes after the handshake: a real
    // client library would answer pings when it finally reads.
    let mut dead = raw_ws_connect(gw.port).await?;
    let mut live = gw.connect().await?;
    // `live` keeps talking (and answering the server's pings) meanwhile.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let talker = tokio::spawn(async move {
        let mut i = 0;
        loop {
            ping_barrier(&mut live, i).await?;
            i += 1;
            tokio::select! {
                _ = &mut stopped => return anyhow::Ok((live, i)),
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    });
    // `dead` reads nothing, so it answers no ping: the server closes it.
    pulse_testkit::wait_until("the silent client is closed", DEADLINE, || async {
        gw.gateway.stats().connections == 1
    })
    .await?;
    assert_eq!(read_close_code(&mut dead).await?, Some(4001));
    // Several timeouts passed; the talking client is still served.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let _ = stop.send(());
    let (mut live, rounds) = talker.await??;
    assert!(rounds > 0);
    ping_barrier(&mut live, 9_999).await?;
    Ok(())
}

/// Opens a WebSocket by hand, leaving the socket to the test.
async fn raw_ws_connect(port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 101"), "upgrade refused: {}", String::from_utf8_lossy(&head));
    Ok(stream)
}

/// Reads server frames until a close frame; returns its code.
async fn read_close_code(stream: &mut tokio::net::TcpStream) -> anyhow::Result<Option<u16>> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut header = [0u8; 2];
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(None);
        }
        let len = match header[1] & 0x7f {
            126 => u64::from(stream.read_u16().await?),
            127 => stream.read_u64().await?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len)?];
        stream.read_exact(&mut payload).await?;
        if header[0] & 0x0f == 0x8 {
            return Ok(payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])));
        }
    }
}

#[tokio::test]
async fn a_slow_subscribe_does_not_delay_events_of_other_channels() -> anyhow::Result<()> {
    use pulse_bus::{RedisBus, RedisBusConfig};
    let redis = RedisServer::start().await?;
    // The gateway reaches Redis through a forwarder that can hold its
    // requests while Redis's pub/sub messages still come through.
    let proxy = pulse_testkit::TcpProxy::start(([127, 0, 0, 1], redis.port()).into()).await?;
    let config = RedisBusConfig {
        url: proxy.redis_url(),
        pool_size: 2,
        // Held requests must not count as a dead link in this test.
        ping_interval: std::time::Duration::from_secs(60),
        ping_timeout: std::time::Duration::from_secs(120),
        ..RedisBusConfig::default()
    };
    let gw = spawn(settings(), std::sync::Arc::new(RedisBus::connect(config).await?)).await?;
    let publisher = redis_bus(&redis).await?;
    let (fast, slow) = (channel("fast"), channel("slow"));
    let mut a = gw.connect().await?;
    subscribe(&mut a, &fast, None).await?;

    proxy.freeze_requests();
    let mut b = gw.connect().await?;
    b.send(&ClientMessage::Subscribe { channel: slow.clone(), since: None }).await?;
    // B's subscribe now waits on Redis, which does not answer; A's channel
    // keeps flowing meanwhile.
    let sent = publish(&publisher, &fast, 3).await?;
    assert_eq!(ids(&recv_events(&mut a, 3).await?), ids(&sent));
    assert!(
        b.recv(std::time::Duration::from_millis(100)).await.is_err(),
        "B's subscribe was answered although Redis held it: the events above waited for it"
    );

    // Once Redis answers again, B subscribes (retrying if its first try
    // failed and was rolled back) and gets its channel's events.
    proxy.thaw();
    loop {
        match b.recv_control(DEADLINE).await? {
            ControlMessage::Subscribed { .. } => break,
            ControlMessage::Error { .. } => {
                b.send(&ClientMessage::Subscribe { channel: slow.clone(), since: None }).await?;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let sent = publish(&publisher, &slow, 2).await?;
    assert_eq!(ids(&recv_events(&mut b, 2).await?), ids(&sent));
    Ok(())
}
