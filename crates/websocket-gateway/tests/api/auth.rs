use std::time::Duration;

use pulse_protocol::{ClientMessage, ControlMessage, ErrorCode};
use pulse_testkit::WsClient;

use crate::helpers::*;

fn authenticated_only() -> pulse_websocket_gateway::Settings {
    let mut s = settings();
    s.auth.anonymous = false;
    s
}

#[tokio::test]
async fn without_a_token_only_auth_works_and_silence_closes_4403() -> anyhow::Result<()> {
    let mut s = authenticated_only();
    s.limits.auth_timeout = Duration::from_millis(500);
    let gw = spawn(s, memory_bus()).await?;
    let mut client = WsClient::connect(&gw.ws_url("")).await?;
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Welcome { authenticated, .. } => assert!(!authenticated),
        other => anyhow::bail!("expected welcome, got {other:?}"),
    }
    client.send(&ClientMessage::Subscribe { channel: channel("alerts"), since: None }).await?;
    let (code, message) = recv_error(&mut client).await?;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("auth"), "{message}");
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403), "{closed:?}");
    assert!(closed.reason.contains("authentication required"), "{closed:?}");
    Ok(())
}

#[tokio::test]
async fn a_token_by_message_header_or_query_grants_its_channels_only() -> anyhow::Result<()> {
    let gw = spawn(authenticated_only(), memory_bus()).await?;
    let token = token("alice", &["alerts", "agent:*"], Duration::from_secs(300));

    // First message.
    let mut client = gw.connect().await?;
    client.send(&ClientMessage::Auth { token: token.clone() }).await?;
    subscribe(&mut client, &channel("agent:web-1"), None).await?;
    client.send(&ClientMessage::Subscribe { channel: channel("decisions"), since: None }).await?;
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Error { code, message, channel: Some(c) } => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert_eq!(c.as_str(), "decisions");
            assert!(message.contains("does not grant"), "{message}");
        }
        other => anyhow::bail!("expected forbidden, got {other:?}"),
    }
    // The connection stays up.
    ping_barrier(&mut client, 1).await?;

    // Header.
    let bearer = format!("Bearer {token}");
    let mut client = gw.connect_with("", &[("Authorization", &bearer)]).await?;
    subscribe(&mut client, &channel("alerts"), None).await?;

    // Query parameter.
    let mut client = gw.connect_with(&format!("?token={token}"), &[]).await?;
    subscribe(&mut client, &channel("alerts"), None).await?;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_at_the_upgrade_close_with_4403_or_4401() -> anyhow::Result<()> {
    let gw = spawn(authenticated_only(), memory_bus()).await?;
    let mut client = WsClient::connect(&gw.ws_url("?token=garbage")).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403), "{closed:?}");
    assert!(closed.reason.contains("invalid token"), "{closed:?}");

    let mut claims = pulse_auth::Claims::new("bob", vec![], Duration::ZERO);
    claims.exp -= 3600;
    let expired = claims.sign_hs256(SECRET.as_bytes())?;
    let mut client = WsClient::connect(&gw.ws_url(&format!("?token={expired}"))).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4401), "{closed:?}");

    // An invalid token as the first message closes too.
    let mut client = gw.connect().await?;
    client.send(&ClientMessage::Auth { token: "nope".into() }).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403), "{closed:?}");
    Ok(())
}

#[tokio::test]
async fn an_expiring_token_closes_4401_unless_a_fresh_one_arrives() -> anyhow::Result<()> {
    let mut s = authenticated_only();
    s.auth.leeway_secs = 0;
    let gw = spawn(s, memory_bus()).await?;
    let short = token("carol", &["*"], Duration::from_secs(2));

    let mut refreshed = gw.connect_with(&format!("?token={short}"), &[]).await?;
    let mut lapsed = gw.connect_with(&format!("?token={short}"), &[]).await?;
    refreshed.send(&ClientMessage::Auth { token: token("carol", &["*"], Duration::from_secs(300)) }).await?;
    let (_, closed) = lapsed.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4401), "{closed:?}");
    // The refreshed one outlives the first token.
    ping_barrier(&mut refreshed, 1).await?;
    Ok(())
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() -> anyhow::Result<()> {
    let mut s = settings();
    s.gateway.allowed_origins = vec!["https://dash.example".into()];
    let gw = spawn(s, memory_bus()).await?;
    let refused = WsClient::connect_status(&gw.ws_url(""), &[("Origin", "https://evil.example")]).await?;
    assert_eq!(refused.err(), Some(403));
    gw.connect_with("", &[("Origin", "https://dash.example")]).await?;
    Ok(())
}

/// With anonymous access on, a token that verifies grants its claims and
/// one that does not is ignored: WebSocket (query, header, `auth` message)
/// and SSE alike.
#[tokio::test]
async fn an_anonymous_gateway_ignores_tokens_that_do_not_verify() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let wrong_key = pulse_auth::Claims::new("mallory", vec![], Duration::from_secs(300)).sign_hs256(b"other")?;
    let mut claims = pulse_auth::Claims::new("bob", vec![], Duration::ZERO);
    claims.exp -= 3600;
    let expired = claims.sign_hs256(SECRET.as_bytes())?;

    for query in ["?token=garbage".to_owned(), format!("?token={expired}"), format!("?token={wrong_key}")] {
        let mut client = gw.connect_with(&query, &[]).await?;
        subscribe(&mut client, &channel("decisions"), None).await?;
    }
    let bearer = format!("Bearer {wrong_key}");
    let mut client = gw.connect_with("", &[("Authorization", &bearer)]).await?;
    subscribe(&mut client, &channel("decisions"), None).await?;
    // An `auth` message with a bad token neither closes nor errors.
    client.send(&ClientMessage::Auth { token: "nope".into() }).await?;
    let before = ping_barrier(&mut client, 7).await?;
    assert!(before.is_empty(), "nothing but the pong: {before:?}");
    subscribe(&mut client, &channel("alerts"), None).await?;

    // A token that verifies grants its channels, and only those.
    let good = token("alice", &["alerts"], Duration::from_secs(300));
    let mut client = gw.connect_with(&format!("?token={good}"), &[]).await?;
    subscribe(&mut client, &channel("alerts"), None).await?;
    client.send(&ClientMessage::Subscribe { channel: channel("decisions"), since: None }).await?;
    let (code, _) = recv_error(&mut client).await?;
    assert_eq!(code, ErrorCode::Forbidden);

    // SSE: the same rules.
    let http = reqwest::Client::new();
    for url in ["/sse?channels=decisions&token=garbage".to_owned(), format!("/sse?channels=decisions&token={expired}")]
    {
        let response = http.get(gw.http_url(&url)).send().await?;
        assert_eq!(response.status(), 200, "{url}");
    }
    let response = http.get(gw.http_url("/sse?channels=decisions")).bearer_auth(&wrong_key).send().await?;
    assert_eq!(response.status(), 200);
    let response = http.get(gw.http_url("/sse?channels=decisions")).bearer_auth(&good).send().await?;
    assert_eq!(response.status(), 403, "the token's claims apply");
    let response = http.get(gw.http_url("/sse?channels=alerts")).bearer_auth(&good).send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

/// Anonymous access without any key: every token is ignored.
#[tokio::test]
async fn an_anonymous_gateway_without_a_key_ignores_every_token() -> anyhow::Result<()> {
    let mut s = settings();
    s.auth.secret = String::new();
    let gw = spawn(s, memory_bus()).await?;
    let good_elsewhere = token("alice", &["alerts"], Duration::from_secs(300));
    let mut client = gw.connect_with(&format!("?token={good_elsewhere}"), &[]).await?;
    subscribe(&mut client, &channel("decisions"), None).await?;
    let response =
        reqwest::Client::new().get(gw.http_url("/sse?channels=decisions")).bearer_auth(&good_elsewhere).send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

/// `/sse` answers CORS from `gateway.allowed_origins`; other origins get
/// no CORS headers (and the `Origin` check's 403).
#[tokio::test]
async fn sse_answers_cors_for_allowed_origins_only() -> anyhow::Result<()> {
    let mut s = settings();
    s.gateway.allowed_origins = vec!["http://localhost:5173".into()];
    let gw = spawn(s, memory_bus()).await?;
    let http = reqwest::Client::new();
    let allow_origin =
        |r: &reqwest::Response| r.headers().get("access-control-allow-origin").map(|v| v.to_str().map(str::to_owned));

    let preflight = http
        .request(reqwest::Method::OPTIONS, gw.http_url("/sse?channels=alerts"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization,last-event-id")
        .send()
        .await?;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(allow_origin(&preflight).transpose()?.as_deref(), Some("http://localhost:5173"));

    let stream = http.get(gw.http_url("/sse?channels=alerts")).header("origin", "http://localhost:5173").send().await?;
    assert_eq!(stream.status(), 200);
    assert_eq!(allow_origin(&stream).transpose()?.as_deref(), Some("http://localhost:5173"));
    drop(stream);

    let refused = http.get(gw.http_url("/sse?channels=alerts")).header("origin", "http://evil.example").send().await?;
    assert_eq!(refused.status(), 403);
    assert!(allow_origin(&refused).is_none());
    let preflight = http
        .request(reqwest::Method::OPTIONS, gw.http_url("/sse"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await?;
    assert!(allow_origin(&preflight).is_none());
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A token whose `nbf` is an hour ahead is refused on WebSocket (query and
/// `auth` message) and SSE.
#[tokio::test]
async fn a_token_not_valid_yet_is_refused() -> anyhow::Result<()> {
    let gw = spawn(authenticated_only(), memory_bus()).await?;
    let mut claims =
        pulse_auth::Claims::new("eve", vec![pulse_protocol::ChannelPattern::parse("*")?], Duration::from_secs(7200));
    claims.nbf = Some(unix_now() + 3600);
    let early = claims.sign_hs256(SECRET.as_bytes())?;

    let mut client = WsClient::connect(&gw.ws_url(&format!("?token={early}"))).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403), "{closed:?}");
    assert!(closed.reason.contains("not valid yet"), "{closed:?}");

    let mut client = gw.connect().await?;
    client.send(&ClientMessage::Auth { token: early.clone() }).await?;
    let (_, closed) = client.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403), "{closed:?}");

    let response = reqwest::Client::new().get(gw.http_url("/sse?channels=alerts")).bearer_auth(&early).send().await?;
    assert_eq!(response.status(), 401);
    Ok(())
}

/// A validly signed token with `exp` ≥ 2^63 (beyond any clock) works as
/// a far-future one: no connection task panics on it.
#[tokio::test]
async fn a_far_future_expiry_is_served_without_overflow() -> anyhow::Result<()> {
    let gw = spawn(authenticated_only(), memory_bus()).await?;
    for exp in [1u64 << 63, u64::MAX] {
        let mut claims =
            pulse_auth::Claims::new("zed", vec![pulse_protocol::ChannelPattern::parse("*")?], Duration::ZERO);
        claims.exp = exp;
        let far = claims.sign_hs256(SECRET.as_bytes())?;

        let mut client = gw.connect_with(&format!("?token={far}"), &[]).await?;
        subscribe(&mut client, &channel("alerts"), None).await?;
        ping_barrier(&mut client, 1).await?;

        let mut client = gw.connect().await?;
        client.send(&ClientMessage::Auth { token: far.clone() }).await?;
        subscribe(&mut client, &channel("alerts"), None).await?;
        // And as a replacement.
        client.send(&ClientMessage::Auth { token: far.clone() }).await?;
        let before = ping_barrier(&mut client, 2).await?;
        assert!(before.is_empty(), "{before:?}");

        let response = reqwest::Client::new().get(gw.http_url("/sse?channels=alerts")).bearer_auth(&far).send().await?;
        assert_eq!(response.status(), 200, "{exp}");
    }
    Ok(())
}

/// A replacement token past its `exp` but inside the leeway is refused
/// like an expired one: an error frame, and the current token stays.
#[tokio::test]
async fn a_replacement_expired_inside_the_leeway_keeps_the_current_token() -> anyhow::Result<()> {
    let mut s = authenticated_only();
    s.auth.leeway_secs = 60;
    let gw = spawn(s, memory_bus()).await?;
    let current = token("carol", &["*"], Duration::from_secs(300));
    let mut client = gw.connect_with(&format!("?token={current}"), &[]).await?;
    subscribe(&mut client, &channel("alerts"), None).await?;

    let mut lapsed =
        pulse_auth::Claims::new("carol", vec![pulse_protocol::ChannelPattern::parse("*")?], Duration::ZERO);
    lapsed.exp = unix_now() - 5;
    client.send(&ClientMessage::Auth { token: lapsed.sign_hs256(SECRET.as_bytes())? }).await?;
    let (code, message) = recv_error(&mut client).await?;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert!(message.contains("expired") && message.contains("previous token"), "{message}");
    // Still open, still subscribed under the current token.
    ping_barrier(&mut client, 3).await?;
    subscribe(&mut client, &channel("decisions"), None).await?;
    Ok(())
}
