use std::sync::Arc;
use std::time::Duration;

use pulse_bus::{Bus, MemoryBus, MemoryBusConfig};
use pulse_protocol::{AgentId, ClientMessage, ControlMessage};
use pulse_store::{MemoryStore, Store, StoreSettings};
use pulse_websocket_gateway::StoreSnapshots;

use crate::helpers::*;

#[tokio::test]
async fn refresh_of_agents_is_answered_from_the_store() -> anyhow::Result<()> {
    let memory = MemoryBus::new(MemoryBusConfig { history_len: 1000 });
    let store = Arc::new(MemoryStore::new(memory.clone(), StoreSettings::default()));
    let bus: Arc<dyn Bus> = Arc::new(memory);
    let gw = spawn_with(settings(), bus, Arc::new(StoreSnapshots(store.clone()))).await?;
    let agents = channel("agents");
    let mut client = gw.connect().await?;
    subscribe(&mut client, &agents, None).await?;

    store.apply_heartbeat(&AgentId::parse("web-1")?, pulse_protocol::timestamp::now(), None).await?;
    let event = client.recv_event(DEADLINE).await?;
    assert_eq!(event.event_type.as_str(), "agent_status_changed");

    client.send(&ClientMessage::Refresh { channel: agents.clone() }).await?;
    match client.recv_control(DEADLINE).await? {
        ControlMessage::Snapshot { channel, offset, data } => {
            assert_eq!(channel, agents);
            assert_eq!(offset, event.id);
            assert_eq!(data[0]["agent_id"], "web-1", "{data}");
        }
        other => anyhow::bail!("expected a snapshot, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn metrics_count_deliveries() -> anyhow::Result<()> {
    let gw = spawn(settings(), memory_bus()).await?;
    let ch = channel("metered");
    let mut client = gw.connect().await?;
    subscribe(&mut client, &ch, None).await?;
    publish(&gw.bus, &ch, 3).await?;
    recv_events(&mut client, 3).await?;
    let text = reqwest::get(gw.http_url("/metrics")).await?.text().await?;
    for name in ["pulse_gateway_events_out_total", "pulse_gateway_connections", "pulse_gateway_publish_to_send_seconds"]
    {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn the_dashboard_is_served_from_static_dir_when_it_exists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("index.html"), "<h1>Pulse</h1>")?;
    let mut s = settings();
    s.gateway.static_dir = Some(dir.path().to_path_buf());
    let gw = spawn(s, memory_bus()).await?;
    let page = reqwest::get(gw.http_url("/")).await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await?, "<h1>Pulse</h1>");
    // The gateway's own routes still answer.
    assert_eq!(reqwest::get(gw.http_url("/healthz")).await?.status(), 200);

    let mut s = settings();
    s.gateway.static_dir = Some(dir.path().join("missing"));
    let gw = spawn(s, memory_bus()).await?;
    assert_eq!(reqwest::get(gw.http_url("/")).await?.status(), 404);
    Ok(())
}

/// The value of the series `name{labels…}` in a Prometheus scrape, where
/// every `label="value"` of `labels` appears.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `/metrics` tells client closes from server closes, with a reason, and
/// carries the queue depth and process metrics.
#[tokio::test]
async fn metrics_split_closes_by_side_and_show_queue_depth_and_process() -> anyhow::Result<()> {
    let mut s = settings();
    s.auth.anonymous = false;
    s.limits.auth_timeout = Duration::from_millis(300);
    let gw = spawn(s, memory_bus()).await?;
    let scrape = || async { reqwest::get(gw.http_url("/metrics")).await?.text().await };
    let closes = |text: &str, by: &str, reason: &str| {
        series(
            text,
            "pulse_gateway_connections_closed_total",
            &["transport=\"ws\"", &format!("by=\"{by}\""), &format!("reason=\"{reason}\"")],
        )
        .unwrap_or(0.0)
    };
    let before = scrape().await?;

    // The client closes.
    let mut client = pulse_testkit::WsClient::connect(&gw.ws_url("")).await?;
    client.recv_control(DEADLINE).await?;
    client.close().await?;
    // The server closes: no `auth` within the auth timeout (4403).
    let mut silent = pulse_testkit::WsClient::connect(&gw.ws_url("")).await?;
    let (_, closed) = silent.recv_until_closed(DEADLINE).await?;
    assert_eq!(closed.code, Some(4403));

    pulse_testkit::wait_until("both closes are counted", DEADLINE, || async {
        let Ok(now) = scrape().await else { return false };
        closes(&now, "client", "close") > closes(&before, "client", "close")
            && closes(&now, "server", "unauthorized") > closes(&before, "server", "unauthorized")
    })
    .await?;
    let text = scrape().await?;
    assert!(text.contains("# HELP pulse_gateway_connections_closed_total "), "{text}");
    // Sampled at start, then every few seconds.
    for name in [
        "pulse_gateway_queued_frames",
        "pulse_gateway_queue_depth_max_frames",
        "process_open_fds",
        "process_resident_memory_bytes",
    ] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "{name}:\n{text}");
    }
    Ok(())
}
