//! The partitioned layout's outbox on a real `redis-server`: a change whose
//! events could not be published when it was made has them published later,
//! exactly once and in order, by whoever comes next (the agent's next
//! change, or the heartbeat checker's sweep), and racing processes keep
//! each agent's events in order. Events are read back from the bus.

use std::sync::Arc;

use anyhow::{Context, ensure};
use chrono::TimeDelta;
use pulse_bus::{Bus, RedisBus, RedisSettings};
use pulse_protocol::probe::{AgentStatus, Alert, CheckResult, CheckStatus, Level, Report};
use pulse_protocol::{AgentId, Channel, Event, Position, timestamp};
use pulse_store::{Layout, RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisServer, wait_until};

const HISTORY: usize = 100_000;

/// One process's store and bus (partitioned layout) on `server`.
async fn replica(server: &RedisServer) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    let bus = RedisBus::connect(RedisSettings {
        url: server.url(),
        prefix: "pulse:".into(),
        history_len: HISTORY,
        pool_size: 4,
        ..RedisSettings::default()
    })
    .await?;
    let store = RedisStore::with_layout(bus.clone(), StoreSettings::default(), Layout::Partitioned);
    Ok((Arc::new(store), Arc::new(bus)))
}

fn id(name: &str) -> AgentId {
    AgentId::parse(name).expect("test agent ids are valid")
}

fn disk(status: CheckStatus) -> CheckResult {
    CheckResult {
        name: "disk:/var".into(),
        level: Level::L3,
        status,
        message: Some(format!("{status:?}")),
        metrics: Default::default(),
    }
}

fn report(agent: &str, report_id: &str, status: CheckStatus) -> Report {
    Report { report_id: report_id.into(), agent_id: id(agent), ts: timestamp::now(), checks: vec![disk(status)] }
}

async fn history(bus: &dyn Bus, channel: &str) -> anyhow::Result<Vec<Event>> {
    let history = bus.history(&Channel::parse(channel)?, Position::ZERO, HISTORY).await?;
    ensure!(!history.truncated, "history of {channel} was truncated");
    Ok(history.events)
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Entries waiting in every outbox.
async fn queued(server: &RedisServer) -> anyhow::Result<u64> {
    let keys: Vec<String> = server.cmd(&["KEYS", "pulse:{agents:*}:outbox"]).await?;
    let mut total = 0;
    for key in keys {
        total += server.cmd::<u64>(&["XLEN", &key]).await?;
    }
    Ok(total)
}

/// The key of `channel`'s history stream.
fn hist_key(channel: &str) -> anyhow::Result<String> {
    Ok(pulse_bus::redis_lua::Keys::new("pulse:").hist(&Channel::parse(channel)?))
}

/// Makes every publish on `channel` fail (its history key has the wrong
/// type) until [`unblock`] runs.
async fn block(server: &RedisServer, channel: &str) -> anyhow::Result<()> {
    let _: () = server.cmd(&["SET", &hist_key(channel)?, "not a stream"]).await?;
    Ok(())
}

async fn unblock(server: &RedisServer, channel: &str) -> anyhow::Result<()> {
    let _: u64 = server.cmd(&["DEL", &hist_key(channel)?]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_behind_are_published_once_by_the_sweep() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, bus) = replica(&server).await?;
    block(&server, "reports").await?;

    // The change is made; its `reports` event cannot be published, its
    // events on the other channels are.
    let err = store.apply_report(&report("web-1", "r-1", CheckStatus::Fail), None).await.err();
    let err = err.context("a change whose events could not all be published says so")?;
    ensure!(err.is_unavailable(), "{err}");
    assert_eq!(store.agent(&id("web-1")).await?.context("the change was made")?.status, AgentStatus::Online);
    assert_eq!(queued(&server).await?, 1, "the events wait in the outbox");
    assert_eq!(history(bus.as_ref(), "agent:web-1").await?.len(), 3);
    // The process that made the change is gone.
    drop(store);
    unblock(&server, "reports").await?;

    // Another process's checker sweep publishes what was left, once.
    let (sweeper, _) = replica(&server).await?;
    wait_until("the sweep publishes the left-behind events", DEADLINE, || {
        let (sweeper, bus) = (sweeper.clone(), bus.clone());
        async move {
            let _ = sweeper.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await;
            history(bus.as_ref(), "reports").await.is_ok_and(|events| !events.is_empty())
        }
    })
    .await?;
    sweeper.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await?;
    assert_eq!(queued(&server).await?, 0, "the outbox is empty");
    let reports = history(bus.as_ref(), "reports").await?;
    assert_eq!(types(&reports), vec!["report_received"]);
    assert_eq!(reports[0].payload::<Report>()?.report_id, "r-1");
    assert_eq!(
        types(&history(bus.as_ref(), "agent:web-1").await?),
        vec!["agent_status_changed", "report_received", "alert_triggered"],
        "what was published before is not published again"
    );
    assert_eq!(types(&history(bus.as_ref(), "agents").await?), vec!["agent_status_changed"]);
    assert_eq!(types(&history(bus.as_ref(), "alerts").await?), vec!["alert_triggered"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_change_publishes_what_an_earlier_one_left_behind_first() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, bus) = replica(&server).await?;
    block(&server, "alerts").await?;
    block(&server, "agent:web-1").await?;
    ensure!(store.apply_report(&report("web-1", "r-1", CheckStatus::Fail), None).await.is_err());
    drop(store);
    unblock(&server, "alerts").await?;
    unblock(&server, "agent:web-1").await?;

    // The agent's next report, handled by another process, publishes the
    // first report's events before its own, on every channel.
    let (other, _) = replica(&server).await?;
    let outcome = other.apply_report(&report("web-1", "r-2", CheckStatus::Ok), None).await?;
    assert_eq!(types(&outcome.events), vec!["report_received", "report_received", "alert_resolved", "alert_resolved"]);
    assert_eq!(queued(&server).await?, 0);
    let on_agent = history(bus.as_ref(), "agent:web-1").await?;
    assert_eq!(
        types(&on_agent),
        vec!["agent_status_changed", "report_received", "alert_triggered", "report_received", "alert_resolved"]
    );
    assert_eq!(types(&history(bus.as_ref(), "alerts").await?), vec!["alert_triggered", "alert_resolved"]);
    // What the store returned is what the bus holds, ids included.
    for event in &outcome.events {
        let channel = history(bus.as_ref(), event.channel.as_str()).await?;
        ensure!(channel.contains(event), "{event:?} is not on the bus");
    }
    Ok(())
}

/// Two processes change one agent as fast as they can, its alert opening
/// and resolving with each report: on every channel the agent's alert
/// events alternate, as its state did, and each report is announced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_processes_keep_each_agents_events_in_order() -> anyhow::Result<()> {
    const REPORTS: usize = 100;
    let server = RedisServer::start().await?;
    let (first, bus) = replica(&server).await?;
    let (second, _) = replica(&server).await?;
    let replicas = [first, second];
    let tasks: Vec<_> = (0..REPORTS)
        .map(|n| {
            let store = replicas[n % 2].clone();
            tokio::spawn(async move {
                // Each replica alternates failing and passing, so the
                // agent's state flips with most reports.
                let status = if (n / 2) % 2 == 0 { CheckStatus::Fail } else { CheckStatus::Ok };
                store.apply_report(&report("web-1", &format!("r-{n}"), status), None).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    assert_eq!(queued(&server).await?, 0, "everything was published");
    assert_eq!(history(bus.as_ref(), "reports").await?.len(), REPORTS, "each report is announced once");
    for channel in ["alerts", "agent:web-1"] {
        let alerts: Vec<Alert> = history(bus.as_ref(), channel)
            .await?
            .iter()
            .filter(|e| e.event_type.as_str().starts_with("alert_"))
            .map(|e| e.payload::<Alert>())
            .collect::<Result<_, _>>()?;
        ensure!(!alerts.is_empty(), "{channel}: the alert opened");
        for (n, pair) in alerts.chunks(2).enumerate() {
            ensure!(pair[0].resolved_at.is_none(), "{channel}: event {} resolves nothing open: {alerts:#?}", n * 2);
            if let Some(resolved) = pair.get(1) {
                assert_eq!(resolved.alert_id, pair[0].alert_id, "{channel}: an alert resolves the one opened");
            }
        }
    }
    let on_agent = types(&history(bus.as_ref(), "agent:web-1").await?).len();
    let fleet: usize = futures_util::future::try_join_all(
        ["agents", "reports", "alerts"].map(|c| async { history(bus.as_ref(), c).await.map(|h| h.len()) }),
    )
    .await?
    .iter()
    .sum();
    assert_eq!(on_agent, fleet, "every event is on its fleet channel and on the agent's, once each");
    Ok(())
}

#[tokio::test]
async fn a_quiet_outbox_costs_the_sweep_nothing() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, _) = replica(&server).await?;
    store.apply_heartbeat(&id("web-1"), timestamp::now(), None).await?;
    assert_eq!(queued(&server).await?, 0, "published changes leave nothing queued");
    let pending: Vec<String> = server.cmd(&["KEYS", "pulse:{agents:*}:pending"]).await?;
    ensure!(pending.is_empty(), "no agent is marked pending: {pending:?}");
    ensure!(store.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await?.is_empty());
    Ok(())
}
