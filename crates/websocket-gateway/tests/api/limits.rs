use pulse_protocol::{ClientMessage, ErrorCode};
use pulse_testkit::WsClient;

use crate::helpers::*;

#[tokio::test]
async fn connections_beyond_the_limit_get_503() -> anyhow::Result<()> {
    let mut s = settings();
    s.gateway.max_connections = 2;
    let gw = spawn(s, memory_bus()).await?;
    let _a = gw.connect().await?;
    let b = gw.connect().await?;
    assert_eq!(WsClient::connect_status(&gw.ws_url(""), &[]).await?.err(), Some(503));
    b.close().await?;
    pulse_testkit::wait_until("a slot frees up", DEADLINE, || async { gw.gateway.stats().connections == 1 }).await?;
    gw.connect().await?;
    Ok(())
}

#[tokio::test]
async fn connection_attempts_per_ip_are_limited_with_429() -> anyhow::Result<()> {
    let mut s = settings();
    s.limits.connections_per_ip_per_sec = 1; // burst of 2
    let gw = spawn(s, memory_bus()).await?;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(WsClient::connect_status(&gw.ws_url(""), &[]).await?.err());
    }
    assert!(statuses.contains(&Some(429)), "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn too_many_messages_get_rate_limited_then_1008() -> anyhow::Result<()> {
    let mut s = settings();
    s.limits.messages_per_sec = 1; // burst of 2
    s.limits.max_violations = 3;
    let gw = spawn(s, memory_bus()).await?;
    let mut client = gw.connect().await?;
    for _ in 0..8 {
        client.send_text("ping").await?;
    }
    let (frames, closed) = client.recv_until_closed(DEADLINE).await?;
    assert!(frames.iter().any(|f| f.contains("rate_limited")), "{frames:?}");
    assert_eq!(closed.code, Some(1008), "{closed:?}");
    Ok(())
}

#[tokio::test]
async fn frames_over_the_size_limit_close_1009() -> anyhow::Result<()> {
    let mut s = settings();
    s.limits.max_frame_size = 1024;
    let gw = spawn(s, memory_bus()).await?;
    let mut client = gw.connect().await?;
    client.send_text(&format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(2048))).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(1009), "{closed:?}");
    Ok(())
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() -> anyhow::Result<()> {
    let mut s = settings();
    s.limits.max_subscriptions = 2;
    let gw = spawn(s, memory_bus()).await?;
    let mut client = gw.connect().await?;
    subscribe(&mut client, &channel("a"), None).await?;
    subscribe(&mut client, &channel("b"), None).await?;
    client.send(&ClientMessage::Subscribe { channel: channel("c"), since: None }).await?;
    let (code, message) = recv_error(&mut client).await?;
    assert_eq!(code, ErrorCode::TooManySubscriptions);
    assert!(message.contains("at most 2"), "{message}");
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_an_error_naming_the_problem_and_garbage_closes_1008() -> anyhow::Result<()> {
    let mut s = settings();
    s.limits.max_violations = 5;
    let gw = spawn(s, memory_bus()).await?;
    let mut client = gw.connect().await?;
    let cases = [
        ("{oops", ErrorCode::BadRequest, "malformed"),
        (r#"{"type":"dance"}"#, ErrorCode::UnknownType, "dance"),
        (r#"{"type":"subscribe","channel":"a b"}"#, ErrorCode::InvalidChannel, "channel name"),
        (r#"{"type":"subscribe"}"#, ErrorCode::BadRequest, "missing field `channel`"),
    ];
    for (input, code, needle) in cases {
        client.send_text(input).await?;
        let (got, message) = recv_error(&mut client).await?;
        assert_eq!(got, code, "{input}: {message}");
        assert!(message.contains(needle), "{input}: {message}");
    }
    // Still served.
    ping_barrier(&mut client, 1).await?;
    for _ in 0..5 {
        client.send_text("garbage").await?;
    }
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(1008), "{closed:?}");
    Ok(())
}
