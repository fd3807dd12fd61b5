//! The store on a Redis Cluster of its own while the cluster changes under
//! it. Events are read back from the bus.

use std::sync::Arc;

use anyhow::ensure;
use chrono::TimeDelta;
use pulse_bus::{Bus, RedisBus, RedisSettings};
use pulse_protocol::probe::{Alert, CheckResult, CheckStatus, Level, Report};
use pulse_protocol::{AgentId, Channel, Position, timestamp};
use pulse_store::{Layout, RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisCluster, wait_until};

const HISTORY: usize = 100_000;

fn report(report_id: &str, status: CheckStatus) -> anyhow::Result<Report> {
    let check =
        CheckResult { name: "disk:/var".into(), level: Level::L3, status, message: None, metrics: Default::default() };
    Ok(Report {
        report_id: report_id.into(),
        agent_id: AgentId::parse("web-1")?,
        ts: timestamp::now(),
        checks: vec![check],
    })
}

/// The slot of the agent's bucket moves to another master while the
/// agent reports as fast as it can (alternating a failing and a passing
/// check, so that its alert opens and resolves): a report cut off by the
/// move is retried with the same id, as a probe does, and in the end every
/// report is announced exactly once and the alert events alternate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_moving_to_another_master_loses_no_event_and_repeats_none() -> anyhow::Result<()> {
    const REPORTS: usize = 200;
    let cluster = RedisCluster::start().await?;
    let bus = RedisBus::connect(RedisSettings {
        url: cluster.url(),
        prefix: "pulse:".into(),
        history_len: HISTORY,
        ..RedisSettings::default()
    })
    .await?;
    let store: Arc<dyn Store> = Arc::new(RedisStore::new(bus.clone(), StoreSettings::default()));
    // The bucket of `web-1` (CRC16 of the id, modulo 64).
    let bucket_key = "pulse:{agents:6}:state";

    let reporter = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut retries = 0;
            for n in 0..REPORTS {
                let status = if n % 2 == 0 { CheckStatus::Fail } else { CheckStatus::Ok };
                let report = report(&format!("r-{n}"), status)?;
                while let Err(error) = store.apply_report(&report, None).await {
                    ensure!(retries < 1000, "still failing: {error}");
                    retries += 1;
                }
            }
            anyhow::Ok(retries)
        })
    };
    // Some reports first, so that the move happens mid-stream.
    wait_until("the agent has reported", DEADLINE, || {
        let bus = bus.clone();
        async move {
            let reports = Channel::well_known(Channel::REPORTS);
            bus.history(&reports, Position::ZERO, 100).await.is_ok_and(|h| h.events.len() >= 20)
        }
    })
    .await?;
    let (from, to) = cluster.migrate_slot_of(bucket_key).await?;
    ensure!(from != to);
    reporter.await??;

    // Whatever a cut-off report left queued is published by the sweep.
    let reports = Channel::well_known(Channel::REPORTS);
    wait_until("every report is announced", DEADLINE, || {
        let (store, bus, reports) = (store.clone(), bus.clone(), reports.clone());
        async move {
            let _ = store.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await;
            bus.history(&reports, Position::ZERO, HISTORY).await.is_ok_and(|h| h.events.len() >= REPORTS)
        }
    })
    .await?;
    let announced = bus.history(&reports, Position::ZERO, HISTORY).await?.events;
    let mut ids: Vec<String> =
        announced.iter().map(|e| e.payload::<Report>().map(|r| r.report_id)).collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), REPORTS, "no report is announced twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), REPORTS, "every report is announced");
    for channel in [Channel::well_known(Channel::ALERTS), Channel::for_agent(&AgentId::parse("web-1")?)] {
        let alerts: Vec<Alert> = bus
            .history(&channel, Position::ZERO, HISTORY)
            .await?
            .events
            .iter()
            .filter(|e| e.event_type.as_str().starts_with("alert_"))
            .map(|e| e.payload::<Alert>())
            .collect::<Result<_, _>>()?;
        assert_eq!(alerts.len(), REPORTS, "{channel}: one alert event per report");
        for pair in alerts.chunks(2) {
            ensure!(pair[0].resolved_at.is_none() && pair[1].resolved_at.is_some(), "{channel}: {pair:#?}");
            assert_eq!(pair[0].alert_id, pair[1].alert_id, "{channel}: an alert resolves the one opened");
        }
    }
    ensure!(matches!(Layout::for_bus(&bus), Layout::Partitioned));
    Ok(())
}
