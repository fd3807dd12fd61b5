//! The partitioned layout's outbox, on a real `redis-server` and on a Redis
//! Cluster: a change whose events could not be published when it was made
//! has them published later, exactly once and in order, by whoever comes
//! next (the agent's next change, or the heartbeat checker's sweep), and
//! racing processes keep each agent's events in order. Events are read back
//! from the bus.

use std::sync::Arc;

use anyhow::{Context, ensure};
use chrono::TimeDelta;
use pulse_bus::redis_lua::Keys;
use pulse_bus::{Bus, RedisBus, RedisSettings};
use pulse_protocol::probe::{AgentStatus, Alert, CheckResult, CheckStatus, Level, Report};
use pulse_protocol::{AgentId, Channel, Event, Position, timestamp};
use pulse_store::{Layout, RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisCluster, RedisServer, wait_until};

const HISTORY: usize = 100_000;

/// Where the processes of a test keep their data: a `redis-server` of the
/// test's own, or the cluster shared by this binary's tests under a key
/// prefix of the test's own.
struct Target {
    redis: Redis,
    prefix: String,
}

enum Redis {
    Server(RedisServer),
    Cluster(Arc<RedisCluster>),
}

impl Target {
    async fn server() -> anyhow::Result<Self> {
        Ok(Self { redis: Redis::Server(RedisServer::start().await?), prefix: "pulse:".into() })
    }

    async fn cluster() -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!("o{}:", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Ok(Self { redis: Redis::Cluster(RedisCluster::shared().await?), prefix })
    }

    /// One process's store and bus (partitioned layout).
    async fn replica(&self) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
        let url = match &self.redis {
            Redis::Server(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
        };
        let bus = RedisBus::connect(RedisSettings {
            url,
            prefix: self.prefix.clone(),
            history_len: HISTORY,
            pool_size: 4,
            ..RedisSettings::default()
        })
        .await?;
        let store = RedisStore::with_layout(bus.clone(), StoreSettings::default(), Layout::Partitioned);
        Ok((Arc::new(store), Arc::new(bus)))
    }

    /// Runs a command about `key` where `key` lives.
    async fn cmd<T: redis::FromRedisValue>(&self, key: &str, args: &[&str]) -> anyhow::Result<T> {
        match &self.redis {
            Redis::Server(server) => server.cmd(args).await,
            Redis::Cluster(cluster) => cluster.cmd(cluster.master_of(key).await?, args).await,
        }
    }

    /// Entries waiting in every outbox.
    async fn queued(&self) -> anyhow::Result<u64> {
        let pattern = format!("{}{{agents:*}}:outbox", self.prefix);
        let mut total = 0;
        for key in self.keys(&pattern).await? {
            total += self.cmd::<u64>(&key, &["XLEN", &key]).await?;
        }
        Ok(total)
    }

    /// Keys matching `pattern`, on every node.
    async fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        match &self.redis {
            Redis::Server(server) => server.cmd(&["KEYS", pattern]).await,
            Redis::Cluster(cluster) => {
                let mut keys = Vec::new();
                for master in cluster.masters().await? {
                    keys.extend(cluster.cmd::<Vec<String>>(master, &["KEYS", pattern]).await?);
                }
                Ok(keys)
            }
        }
    }

    /// The key of `channel`'s history stream.
    fn hist_key(&self, channel: &str) -> anyhow::Result<String> {
        Ok(Keys::new(self.prefix.clone()).hist(&Channel::parse(channel)?))
    }

    /// Makes every publish on `channel` fail (its history key has the
    /// wrong type) until [`unblock`](Self::unblock) runs.
    async fn block(&self, channel: &str) -> anyhow::Result<()> {
        let key = self.hist_key(channel)?;
        let _: () = self.cmd(&key, &["SET", &key, "not a stream"]).await?;
        Ok(())
    }

    async fn unblock(&self, channel: &str) -> anyhow::Result<()> {
        let key = self.hist_key(channel)?;
        let _: u64 = self.cmd(&key, &["DEL", &key]).await?;
        Ok(())
    }
}

/// Runs each listed test on its own `redis-server` and on the cluster.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() -> anyhow::Result<()> {
                super::$name(super::Target::server().await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() -> anyhow::Result<()> {
                super::$name(super::Target::cluster().await?).await
            }
        }
    )*};
}

on_both!(
    events_left_behind_are_published_once_by_the_sweep,
    the_next_change_publishes_what_an_earlier_one_left_behind_first,
    racing_processes_keep_each_agents_events_in_order,
    a_quiet_outbox_costs_the_sweep_nothing,
);

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

async fn events_left_behind_are_published_once_by_the_sweep(target: Target) -> anyhow::Result<()> {
    let (store, bus) = target.replica().await?;
    target.block("reports").await?;

    // The change is made; its `reports` event cannot be published, its
    // events on the other channels are.
    let err = store.apply_report(&report("web-1", "r-1", CheckStatus::Fail), None).await.err();
    let err = err.context("a change whose events could not all be published says so")?;
    ensure!(err.is_unavailable(), "{err}");
    assert_eq!(store.agent(&id("web-1")).await?.context("the change was made")?.status, AgentStatus::Online);
    assert_eq!(target.queued().await?, 1, "the events wait in the outbox");
    assert_eq!(history(bus.as_ref(), "agent:web-1").await?.len(), 3);
    // The process that made the change is gone.
    drop(store);
    target.unblock("reports").await?;

    // Another process's checker sweep publishes what was left, once.
    let (sweeper, _) = target.replica().await?;
    wait_until("the sweep publishes the left-behind events", DEADLINE, || {
        let (sweeper, bus) = (sweeper.clone(), bus.clone());
        async move {
            let _ = sweeper.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await;
            history(bus.as_ref(), "reports").await.is_ok_and(|events| !events.is_empty())
        }
    })
    .await?;
    sweeper.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await?;
    assert_eq!(target.queued().await?, 0, "the outbox is empty");
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

async fn the_next_change_publishes_what_an_earlier_one_left_behind_first(target: Target) -> anyhow::Result<()> {
    let (store, bus) = target.replica().await?;
    target.block("alerts").await?;
    target.block("agent:web-1").await?;
    ensure!(store.apply_report(&report("web-1", "r-1", CheckStatus::Fail), None).await.is_err());
    drop(store);
    target.unblock("alerts").await?;
    target.unblock("agent:web-1").await?;

    // The agent's next report, handled by another process, publishes the
    // first report's events before its own, on every channel.
    let (other, _) = target.replica().await?;
    let outcome = other.apply_report(&report("web-1", "r-2", CheckStatus::Ok), None).await?;
    assert_eq!(types(&outcome.events), vec!["report_received", "report_received", "alert_resolved", "alert_resolved"]);
    assert_eq!(target.queued().await?, 0);
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
async fn racing_processes_keep_each_agents_events_in_order(target: Target) -> anyhow::Result<()> {
    const REPORTS: usize = 100;
    let (first, bus) = target.replica().await?;
    let (second, _) = target.replica().await?;
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
    assert_eq!(target.queued().await?, 0, "everything was published");
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

async fn a_quiet_outbox_costs_the_sweep_nothing(target: Target) -> anyhow::Result<()> {
    let (store, _) = target.replica().await?;
    store.apply_heartbeat(&id("web-1"), timestamp::now(), None).await?;
    assert_eq!(target.queued().await?, 0, "published changes leave nothing queued");
    let pending = target.keys(&format!("{}{{agents:*}}:pending", target.prefix)).await?;
    ensure!(pending.is_empty(), "no agent is marked pending: {pending:?}");
    ensure!(store.mark_silent_offline(timestamp::now() - TimeDelta::hours(1), 10).await?.is_empty());
    Ok(())
}
