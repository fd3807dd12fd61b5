//! The per-address connection-attempt limit behind a load balancer: with
//! the proxy trusted, each browser has its own bucket (its address from
//! `X-Forwarded-For`); from an untrusted peer, or with a header that does
//! not parse, the TCP peer is the client.

use pulse_runtime::TrustedProxies;
use pulse_testkit::WsClient;

use crate::helpers::*;

/// Tests connect from 127.0.0.1, standing in for the proxy.
fn behind(trusted: &[&str]) -> pulse_websocket_gateway::Settings {
    let mut s = settings();
    // A burst of 10 attempts per address, then 5 per second.
    s.limits.connections_per_ip_per_sec = 5;
    s.http.trusted_proxies = TrustedProxies::parse(trusted).expect("valid entries");
    s
}

/// One upgrade attempt with `X-Forwarded-For: xff`: the refusal status, or
/// `None` when admitted (the connection is closed at once).
async fn attempt(gw: &TestGateway, xff: &str) -> anyhow::Result<Option<u16>> {
    match WsClient::connect_status(&gw.ws_url(""), &[("X-Forwarded-For", xff)]).await? {
        Ok(client) => {
            client.close().await?;
            Ok(None)
        }
        Err(status) => Ok(Some(status)),
    }
}

/// 60 attempts from one client: the flood that empties its bucket.
async fn flood(gw: &TestGateway, xff: &str) -> anyhow::Result<usize> {
    let mut refused = 0;
    for _ in 0..60 {
        if attempt(gw, xff).await? == Some(429) {
            refused += 1;
        }
    }
    Ok(refused)
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_flooding_client_does_not_limit_the_others() -> anyhow::Result<()> {
    let gw = spawn(behind(&["127.0.0.1"]), memory_bus()).await?;
    // The proxy appends the client's address to what the client sent; the
    // forged leftmost entry is not read.
    let flooder = "10.66.66.66, 203.0.113.66";
    assert!(flood(&gw, flooder).await? > 0, "the flooding client is limited");
    let mut refused = Vec::new();
    for i in 0..40 {
        let xff = format!("198.51.100.{i}");
        if let Some(status) = attempt(&gw, &xff).await? {
            refused.push((xff, status));
        }
    }
    assert!(refused.is_empty(), "other clients behind the proxy were refused: {refused:?}");
    assert_eq!(attempt(&gw, flooder).await?, Some(429), "the flooder is still limited");
    Ok(())
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() -> anyhow::Result<()> {
    let gw = spawn(behind(&["192.0.2.1", "10.0.0.0/8"]), memory_bus()).await?;
    let mut refused = 0;
    // Each attempt claims another address; all count against 127.0.0.1.
    for i in 0..60 {
        if attempt(&gw, &format!("198.51.100.{i}")).await? == Some(429) {
            refused += 1;
        }
    }
    assert!(refused > 0, "claimed addresses from an untrusted peer made their own buckets");
    Ok(())
}

#[tokio::test]
async fn malformed_forwarded_headers_count_against_the_peer() -> anyhow::Result<()> {
    let gw = spawn(behind(&["127.0.0.1"]), memory_bus()).await?;
    let mut refused = 0;
    let malformed = ["unknown", "not-an-address", "198.51.100.7, garbage", "300.1.2.3", ""];
    for xff in malformed.iter().cycle().take(60) {
        if attempt(&gw, xff).await? == Some(429) {
            refused += 1;
        }
    }
    assert!(refused > 0, "malformed headers made buckets of their own");
    // A well-formed one still has its own bucket.
    assert_eq!(attempt(&gw, "198.51.100.8").await?, None);
    Ok(())
}
