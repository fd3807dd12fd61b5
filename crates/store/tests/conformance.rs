//! One behaviour, every store: every test here runs against `MemoryStore`
//! on a `MemoryBus`, against `RedisStore` on a `RedisBus` with its own
//! `redis-server` in both key layouts (one set of keys; hash-tagged buckets
//! with an outbox, as on a cluster), and against `RedisStore` on a Redis
//! Cluster of six nodes (shared by this binary's tests, each under a key
//! prefix of its own). Events are counted on the bus itself (history), not
//! taken from what the store says it published.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use pulse_bus::{Bus, MemoryBus, MemoryBusConfig, RedisBus, RedisSettings};
use pulse_protocol::probe::{
    AgentState, AgentStatus, AgentStatusChange, Alert, AlertState, CheckResult, CheckStatus, HealthStatus, Level,
    Report,
};
use pulse_protocol::{AgentId, Channel, Event, Position, timestamp};
use pulse_store::{Layout, MemoryStore, RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisCluster, RedisServer, wait_until};

/// A store, the bus it publishes on, and the Redis behind both (if any).
struct Fixture {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    redis: Option<RedisServer>,
    /// Kept alive for the test.
    _cluster: Option<Arc<RedisCluster>>,
}

const HISTORY: usize = 100_000;

async fn memory(settings: StoreSettings) -> anyhow::Result<Fixture> {
    let bus = MemoryBus::new(MemoryBusConfig { history_len: HISTORY });
    let store = Arc::new(MemoryStore::new(bus.clone(), settings));
    Ok(Fixture { store, bus: Arc::new(bus), redis: None, _cluster: None })
}

async fn redis(settings: StoreSettings) -> anyhow::Result<Fixture> {
    redis_with_deadline(settings, RedisSettings::default().request_timeout).await
}

/// A Redis fixture whose calls time out after `request_timeout`.
async fn redis_with_deadline(settings: StoreSettings, request_timeout: Duration) -> anyhow::Result<Fixture> {
    redis_in_layout(settings, request_timeout, Layout::Single).await
}

/// The partitioned layout (buckets and outbox) on one `redis-server`.
async fn partitioned(settings: StoreSettings) -> anyhow::Result<Fixture> {
    redis_in_layout(settings, RedisSettings::default().request_timeout, Layout::Partitioned).await
}

async fn redis_in_layout(
    settings: StoreSettings,
    request_timeout: Duration,
    layout: Layout,
) -> anyhow::Result<Fixture> {
    let server = RedisServer::start().await?;
    let bus = RedisBus::connect(RedisSettings {
        url: server.url(),
        prefix: "pulse:".into(),
        history_len: HISTORY,
        pool_size: 8,
        request_timeout,
        ..RedisSettings::default()
    })
    .await?;
    let store = RedisStore::with_layout(bus.clone(), settings, layout);
    Ok(Fixture { store: Arc::new(store), bus: Arc::new(bus), redis: Some(server), _cluster: None })
}

/// The store as a service on a Redis Cluster has it: the layout it picks
/// for itself.
async fn cluster(settings: StoreSettings) -> anyhow::Result<Fixture> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cluster = RedisCluster::shared().await?;
    let bus = RedisBus::connect(RedisSettings {
        url: cluster.url(),
        prefix: format!("t{}:", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        history_len: HISTORY,
        pool_size: 8,
        ..RedisSettings::default()
    })
    .await?;
    ensure!(bus.is_cluster(), "the bus sees a cluster");
    let store = RedisStore::new(bus.clone(), settings);
    ensure!(store.layout() == Layout::Partitioned, "on a cluster the store spreads agents over buckets");
    Ok(Fixture { store: Arc::new(store), bus: Arc::new(bus), redis: None, _cluster: Some(cluster) })
}

/// Runs each listed behaviour against every store with default settings.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() -> anyhow::Result<()> {
                super::$name(super::memory(Default::default()).await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() -> anyhow::Result<()> {
                super::$name(super::redis(Default::default()).await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn partitioned() -> anyhow::Result<()> {
                super::$name(super::partitioned(Default::default()).await?).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() -> anyhow::Result<()> {
                super::$name(super::cluster(Default::default()).await?).await
            }
        }
    )*};
}

conformance!(
    report_updates_state_and_publishes_in_order,
    duplicate_report_changes_nothing,
    l3_failure_opens_one_alert_until_it_recovers,
    concurrent_reports_of_one_agent_open_one_alert,
    silent_agents_go_offline_exactly_once_with_concurrent_callers,
    only_agents_seen_before_the_deadline_are_flipped,
    offline_agent_comes_back_online,
    heartbeat_registers_unknown_agents,
    idempotency_keys_are_claimed_once,
    open_alerts_are_listed_newest_first,
    agents_heard_from_during_a_scan_are_never_left_offline,
);

fn id(name: &str) -> AgentId {
    AgentId::parse(name).expect("test agent ids are valid")
}

fn check(name: &str, level: Level, status: CheckStatus) -> CheckResult {
    CheckResult {
        name: name.into(),
        level,
        status,
        message: Some(format!("{name}: {status:?}")),
        metrics: Default::default(),
    }
}

fn report(agent: &str, report_id: &str, checks: Vec<CheckResult>) -> Report {
    Report { report_id: report_id.into(), agent_id: id(agent), ts: timestamp::now(), checks }
}

fn disk(status: CheckStatus) -> CheckResult {
    check("disk:/var", Level::L3, status)
}

impl Fixture {
    /// Every event of `channel`, oldest first, read back from the bus.
    async fn history(&self, channel: &str) -> anyhow::Result<Vec<Event>> {
        let history = self.bus.history(&Channel::parse(channel)?, Position::ZERO, HISTORY).await?;
        ensure!(!history.truncated, "history of {channel} was truncated");
        Ok(history.events)
    }

    async fn count(&self, channel: &str, event_type: &str) -> anyhow::Result<usize> {
        Ok(self.history(channel).await?.iter().filter(|e| e.event_type.as_str() == event_type).count())
    }

    async fn offline_events(&self, channel: &str) -> anyhow::Result<Vec<AgentStatusChange>> {
        let mut changes = Vec::new();
        for event in self.history(channel).await? {
            if event.event_type.as_str() == "agent_status_changed" {
                let change: AgentStatusChange = event.payload()?;
                if change.new_status == AgentStatus::Offline {
                    changes.push(change);
                }
            }
        }
        Ok(changes)
    }

    async fn state(&self, agent: &str) -> anyhow::Result<AgentState> {
        self.store.agent(&id(agent)).await?.with_context(|| format!("agent {agent} is unknown"))
    }

    /// Registers `agent` online, last seen at `ts`.
    async fn seen_at(&self, agent: &str, ts: DateTime<Utc>) -> anyhow::Result<()> {
        self.store.apply_heartbeat(&id(agent), ts, None).await?;
        Ok(())
    }
}

fn summary(events: &[Event]) -> Vec<(String, String)> {
    events.iter().map(|e| (e.event_type.to_string(), e.channel.to_string())).collect()
}

async fn report_updates_state_and_publishes_in_order(f: Fixture) -> anyhow::Result<()> {
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string();
    let mut checks = vec![disk(CheckStatus::Fail), check("load", Level::L1, CheckStatus::Ok)];
    checks[1].metrics.insert("load1".into(), 0.123_456_789_012_345_67);
    let report = report("web-1", "r-1", checks);
    let outcome = f.store.apply_report(&report, Some(trace.clone())).await?;

    ensure!(!outcome.duplicate);
    let state = outcome.state.context("a new report returns the state")?;
    assert_eq!((state.status, state.health), (AgentStatus::Online, HealthStatus::Critical));
    assert_eq!(state.last_report_id.as_deref(), Some("r-1"));
    assert_eq!(state.checks, report.checks, "checks are kept exactly, metrics included");
    assert_eq!(f.state("web-1").await?, state);
    assert_eq!(f.store.agents().await?, vec![state.clone()]);

    let expected: Vec<(String, String)> = [
        ("agent_status_changed", "agents"),
        ("agent_status_changed", "agent:web-1"),
        ("report_received", "reports"),
        ("report_received", "agent:web-1"),
        ("alert_triggered", "alerts"),
        ("alert_triggered", "agent:web-1"),
    ]
    .iter()
    .map(|(t, c)| (t.to_string(), c.to_string()))
    .collect();
    assert_eq!(summary(&outcome.events), expected);
    assert!(outcome.events.iter().all(|e| e.trace.as_deref() == Some(trace.as_str())), "every event carries the trace");

    // What the store returned is what the bus holds, ids included.
    let mut on_bus = Vec::new();
    for channel in ["agents", "reports", "alerts"] {
        on_bus.extend(f.history(channel).await?);
    }
    let agent_channel = f.history("agent:web-1").await?;
    assert_eq!(summary(&agent_channel).len(), 3);
    for event in &outcome.events {
        ensure!(on_bus.contains(event) || agent_channel.contains(event), "{event:?} is not on the bus");
    }
    let received: Report = f.history("reports").await?[0].payload()?;
    assert_eq!(received, report, "report_received carries the report");

    let alerts = f.store.alerts().await?;
    assert_eq!(alerts.open.len(), 1);
    assert_eq!(alerts.open[0].check, "disk:/var");
    assert_eq!(alerts.open[0].message.as_deref(), Some("disk:/var: Fail"));
    let counts = f.store.counts().await?;
    assert_eq!((counts.online, counts.offline), (1, 0));
    f.store.check().await?;
    Ok(())
}

async fn duplicate_report_changes_nothing(f: Fixture) -> anyhow::Result<()> {
    let first = report("web-1", "r-1", vec![disk(CheckStatus::Fail)]);
    f.store.apply_report(&first, None).await?;
    let state = f.state("web-1").await?;
    let before: Vec<usize> = futures_util::future::try_join_all(
        ["agents", "reports", "alerts", "agent:web-1"].map(|c| async { f.history(c).await.map(|h| h.len()) }),
    )
    .await?;

    // A retry, even one whose body differs, is the same report.
    let retry = report("web-1", "r-1", vec![disk(CheckStatus::Ok)]);
    for _ in 0..3 {
        let outcome = f.store.apply_report(&retry, None).await?;
        ensure!(outcome.duplicate, "a retried report is a duplicate");
        ensure!(outcome.events.is_empty() && outcome.state.is_none());
    }
    let after: Vec<usize> = futures_util::future::try_join_all(
        ["agents", "reports", "alerts", "agent:web-1"].map(|c| async { f.history(c).await.map(|h| h.len()) }),
    )
    .await?;
    assert_eq!(before, after, "a duplicate publishes nothing");
    assert_eq!(f.state("web-1").await?, state, "a duplicate changes nothing");
    assert_eq!(f.store.alerts().await?.open.len(), 1, "the alert stays open");
    Ok(())
}

async fn l3_failure_opens_one_alert_until_it_recovers(f: Fixture) -> anyhow::Result<()> {
    let apply = |report_id: &str, checks| {
        let report = report("web-1", report_id, checks);
        let store = f.store.clone();
        async move { store.apply_report(&report, None).await }
    };
    let outcome = apply("r-1", vec![disk(CheckStatus::Fail), check("cpu", Level::L2, CheckStatus::Fail)]).await?;
    let triggered: Vec<&Event> = outcome.events.iter().filter(|e| e.event_type.as_str() == "alert_triggered").collect();
    assert_eq!(triggered.len(), 2, "on `alerts` and `agent:web-1`; L2 failures raise none");
    let opened: Alert = triggered[0].payload()?;

    for n in 2..5 {
        let outcome = apply(&format!("r-{n}"), vec![disk(CheckStatus::Fail)]).await?;
        ensure!(outcome.events.iter().all(|e| e.event_type.as_str() == "report_received"), "no second alert");
    }
    apply("r-5", vec![disk(CheckStatus::Warn)]).await?;
    apply("r-6", vec![check("other", Level::L3, CheckStatus::Ok)]).await?;
    assert_eq!(f.count("alerts", "alert_triggered").await?, 1);
    assert_eq!(f.count("alerts", "alert_resolved").await?, 0, "warn and other checks resolve nothing");
    assert_eq!(f.store.alerts().await?.open, vec![opened.clone()]);

    let outcome = apply("r-7", vec![disk(CheckStatus::Ok)]).await?;
    let resolved: Alert = outcome
        .events
        .iter()
        .find(|e| e.event_type.as_str() == "alert_resolved")
        .context("a passing check resolves its alert")?
        .payload()?;
    assert_eq!(resolved.alert_id, opened.alert_id);
    assert_eq!(resolved.state, AlertState::Resolved);
    ensure!(resolved.resolved_at.is_some());
    let view = f.store.alerts().await?;
    ensure!(view.open.is_empty(), "{view:?}");
    assert_eq!(view.recent, vec![resolved.clone()]);
    assert_eq!(f.state("web-1").await?.health, HealthStatus::Healthy);

    apply("r-8", vec![disk(CheckStatus::Ok)]).await?;
    assert_eq!(f.count("alerts", "alert_resolved").await?, 1, "resolved once");

    // Failing again opens a new alert with a new id.
    tokio::time::sleep(Duration::from_millis(2)).await; // ids carry the opening millisecond
    let outcome = apply("r-9", vec![disk(CheckStatus::Fail)]).await?;
    let reopened: Alert =
        outcome.events.iter().find(|e| e.event_type.as_str() == "alert_triggered").context("reopened")?.payload()?;
    assert_ne!(reopened.alert_id, opened.alert_id);
    assert_eq!(f.count("alerts", "alert_triggered").await?, 2);
    assert_eq!(f.count("agent:web-1", "alert_triggered").await?, 2);
    assert_eq!(f.count("agent:web-1", "alert_resolved").await?, 1);
    Ok(())
}

async fn concurrent_reports_of_one_agent_open_one_alert(f: Fixture) -> anyhow::Result<()> {
    let tasks: Vec<_> = (0..24)
        .map(|n| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store.apply_report(&report("web-1", &format!("r-{n}"), vec![disk(CheckStatus::Fail)]), None).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    assert_eq!(f.count("alerts", "alert_triggered").await?, 1, "racing reports raise the alert once");
    assert_eq!(f.count("reports", "report_received").await?, 24, "every report is announced");
    assert_eq!(f.count("agents", "agent_status_changed").await?, 1, "first sight is announced once");
    assert_eq!(f.store.alerts().await?.open.len(), 1);
    Ok(())
}

async fn silent_agents_go_offline_exactly_once_with_concurrent_callers(f: Fixture) -> anyhow::Result<()> {
    const AGENTS: usize = 200;
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    for n in 0..AGENTS {
        f.seen_at(&format!("agent-{n}"), long_ago).await?;
    }
    let deadline = timestamp::now() - TimeDelta::minutes(5);
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let changes = store.mark_silent_offline(deadline, 25).await?;
                    if changes.is_empty() {
                        return Ok::<_, pulse_store::StoreError>(mine);
                    }
                    mine.extend(changes);
                }
            })
        })
        .collect();
    let mut changed = Vec::new();
    for caller in callers {
        changed.extend(caller.await??);
    }

    let unique: HashSet<AgentId> = changed.iter().map(|c| c.agent_id.clone()).collect();
    assert_eq!(changed.len(), AGENTS, "each transition is returned to exactly one caller");
    assert_eq!(unique.len(), AGENTS);
    let announced = f.offline_events("agents").await?;
    assert_eq!(announced.len(), AGENTS, "each transition is announced exactly once");
    assert_eq!(announced.iter().map(|c| c.agent_id.clone()).collect::<HashSet<_>>(), unique);
    assert_eq!(f.offline_events("agent:agent-7").await?.len(), 1);
    let change = &announced[0];
    assert_eq!((change.old_status, change.health), (AgentStatus::Online, HealthStatus::Unknown));
    ensure!(change.message.starts_with("no report or heartbeat for 10m"), "{}", change.message);

    let counts = f.store.counts().await?;
    assert_eq!((counts.online, counts.offline), (0, AGENTS as u64));
    let state = f.state("agent-0").await?;
    assert_eq!((state.status, state.health, state.last_seen), (AgentStatus::Offline, HealthStatus::Unknown, long_ago));
    ensure!(f.store.mark_silent_offline(deadline, 25).await?.is_empty(), "offline agents are not flipped again");
    Ok(())
}

async fn only_agents_seen_before_the_deadline_are_flipped(f: Fixture) -> anyhow::Result<()> {
    let deadline = timestamp::now() - TimeDelta::seconds(60);
    f.seen_at("before", deadline - TimeDelta::milliseconds(1)).await?;
    f.seen_at("at", deadline).await?;
    f.seen_at("after", deadline + TimeDelta::milliseconds(1)).await?;
    // Silent once, then heard from again just in time.
    f.seen_at("back", deadline - TimeDelta::seconds(30)).await?;
    f.seen_at("back", deadline + TimeDelta::milliseconds(1)).await?;
    f.store.apply_report(&report("reported", "r-1", vec![]), None).await?;

    let changes = f.store.mark_silent_offline(deadline, 100).await?;
    assert_eq!(changes.iter().map(|c| c.agent_id.as_str()).collect::<Vec<_>>(), vec!["before"]);
    for agent in ["at", "after", "back", "reported"] {
        assert_eq!(f.state(agent).await?.status, AgentStatus::Online, "{agent} was seen in time");
    }
    assert_eq!(f.offline_events("agents").await?.len(), 1);
    Ok(())
}

async fn agents_heard_from_during_a_scan_are_never_left_offline(f: Fixture) -> anyhow::Result<()> {
    const AGENTS: usize = 100;
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    for n in 0..AGENTS {
        f.seen_at(&format!("agent-{n}"), long_ago).await?;
    }
    let deadline = timestamp::now() - TimeDelta::minutes(1);
    // Half the fleet is heard from while two scanners run: large batches and
    // concurrent heartbeats make a heartbeat between a scanner's read and its
    // compare-and-set likely.
    let scanners: Vec<_> = (0..2)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                while !store.mark_silent_offline(deadline, 25).await?.is_empty() {}
                Ok::<_, pulse_store::StoreError>(())
            })
        })
        .collect();
    let heartbeats: Vec<_> = (0..4)
        .map(|part| {
            let store = f.store.clone();
            tokio::spawn(async move {
                for n in (part..AGENTS / 2).step_by(4) {
                    store.apply_heartbeat(&id(&format!("agent-{n}")), timestamp::now(), None).await?;
                }
                Ok::<_, pulse_store::StoreError>(())
            })
        })
        .collect();
    for task in scanners.into_iter().chain(heartbeats) {
        task.await??;
    }

    for n in 0..AGENTS {
        let agent = format!("agent-{n}");
        let state = f.state(&agent).await?;
        let last: AgentStatusChange =
            f.history(&format!("agent:{agent}")).await?.last().context("events")?.payload()?;
        assert_eq!(last.new_status, state.status, "{agent}: the latest announcement matches the state");
        if n < AGENTS / 2 {
            assert_eq!(state.status, AgentStatus::Online, "{agent} was heard from");
        } else {
            assert_eq!(state.status, AgentStatus::Offline, "{agent} stayed silent");
            ensure!(state.last_seen < deadline);
        }
    }
    let counts = f.store.counts().await?;
    assert_eq!((counts.online, counts.offline), ((AGENTS / 2) as u64, (AGENTS / 2) as u64));
    Ok(())
}

async fn offline_agent_comes_back_online(f: Fixture) -> anyhow::Result<()> {
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    f.seen_at("web-1", long_ago).await?;
    f.seen_at("web-2", long_ago).await?;
    f.store.mark_silent_offline(timestamp::now(), 10).await?;

    let outcome = f.store.apply_report(&report("web-1", "r-1", vec![disk(CheckStatus::Fail)]), None).await?;
    let change: AgentStatusChange = outcome.events.first().context("an event")?.payload()?;
    assert_eq!((change.old_status, change.new_status), (AgentStatus::Offline, AgentStatus::Online));
    assert_eq!(change.health, HealthStatus::Critical);
    assert_eq!(f.state("web-1").await?.status, AgentStatus::Online);

    let outcome = f.store.apply_heartbeat(&id("web-2"), timestamp::now(), None).await?;
    assert_eq!(outcome.state.status, AgentStatus::Online);
    assert_eq!(
        summary(&outcome.events),
        vec![
            ("agent_status_changed".to_string(), "agents".to_string()),
            ("agent_status_changed".to_string(), "agent:web-2".to_string()),
        ]
    );
    // Online agents stay online without announcements.
    let outcome = f.store.apply_heartbeat(&id("web-2"), timestamp::now(), None).await?;
    ensure!(outcome.events.is_empty());

    let online: Vec<AgentStatusChange> = f
        .history("agents")
        .await?
        .iter()
        .map(|e| e.payload::<AgentStatusChange>())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|c| c.new_status == AgentStatus::Online)
        .collect();
    assert_eq!(online.len(), 4, "first sight of both, and both coming back");
    let counts = f.store.counts().await?;
    assert_eq!((counts.online, counts.offline), (2, 0));
    // Back online, they can go silent again.
    ensure!(f.store.mark_silent_offline(timestamp::now() + TimeDelta::seconds(1), 10).await?.len() == 2);
    Ok(())
}

async fn heartbeat_registers_unknown_agents(f: Fixture) -> anyhow::Result<()> {
    let outcome = f.store.apply_heartbeat(&id("new-1"), timestamp::now() + TimeDelta::hours(1), None).await?;
    assert_eq!((outcome.state.status, outcome.state.health), (AgentStatus::Online, HealthStatus::Unknown));
    ensure!(outcome.state.last_seen <= timestamp::now(), "a heartbeat from the future counts as now");
    assert_eq!(outcome.events.len(), 2);
    let change: AgentStatusChange = outcome.events[0].payload()?;
    assert_eq!(change.message, "first heartbeat");
    assert_eq!(f.state("new-1").await?, outcome.state);
    Ok(())
}

async fn idempotency_keys_are_claimed_once(f: Fixture) -> anyhow::Result<()> {
    let hour = Duration::from_secs(3600);
    ensure!(f.store.claim_idempotency_key("k-1", hour).await?);
    ensure!(!f.store.claim_idempotency_key("k-1", hour).await?, "a held key cannot be claimed again");
    ensure!(f.store.claim_idempotency_key("k-2", hour).await?, "keys are independent");
    f.store.release_idempotency_key("k-1").await?;
    ensure!(f.store.claim_idempotency_key("k-1", hour).await?, "a released key can be claimed");
    f.store.release_idempotency_key("never-claimed").await?;

    ensure!(f.store.claim_idempotency_key("short", Duration::from_millis(50)).await?);
    let store = f.store.clone();
    wait_until("the short claim expires", DEADLINE, || {
        let store = store.clone();
        async move { store.claim_idempotency_key("short", hour).await.unwrap_or(false) }
    })
    .await?;
    Ok(())
}

async fn open_alerts_are_listed_newest_first(f: Fixture) -> anyhow::Result<()> {
    for agent in ["a-1", "a-2", "a-3"] {
        f.store.apply_report(&report(agent, &format!("{agent}-r1"), vec![disk(CheckStatus::Fail)]), None).await?;
        tokio::time::sleep(Duration::from_millis(2)).await; // distinct opening times
    }
    let open = f.store.alerts().await?.open;
    assert_eq!(open.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), vec!["a-3", "a-2", "a-1"]);
    Ok(())
}

/// Both stores: resolved alerts beyond the configured number are dropped,
/// and a report id is forgotten after the dedupe TTL.
async fn settings_bound_what_is_kept(f: Fixture) -> anyhow::Result<()> {
    for n in 0..3 {
        let agent = format!("a-{n}");
        f.store.apply_report(&report(&agent, &format!("{agent}-1"), vec![disk(CheckStatus::Fail)]), None).await?;
        f.store.apply_report(&report(&agent, &format!("{agent}-2"), vec![disk(CheckStatus::Ok)]), None).await?;
    }
    let recent = f.store.alerts().await?.recent;
    assert_eq!(recent.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), vec!["a-2", "a-1"]);

    let again = report("a-0", "a-0-1", vec![]);
    let store = f.store.clone();
    wait_until("the report id is forgotten", DEADLINE, || {
        let (store, again) = (store.clone(), again.clone());
        async move { store.apply_report(&again, None).await.is_ok_and(|o| !o.duplicate) }
    })
    .await?;
    Ok(())
}

fn small_settings() -> StoreSettings {
    StoreSettings { recent_alerts: 2, dedupe_ttl: Duration::from_millis(100), ..Default::default() }
}

#[tokio::test]
async fn memory_settings_bound_what_is_kept() -> anyhow::Result<()> {
    settings_bound_what_is_kept(memory(small_settings()).await?).await
}

#[tokio::test]
async fn redis_settings_bound_what_is_kept() -> anyhow::Result<()> {
    settings_bound_what_is_kept(redis(small_settings()).await?).await
}

#[tokio::test]
async fn partitioned_settings_bound_what_is_kept() -> anyhow::Result<()> {
    settings_bound_what_is_kept(partitioned(small_settings()).await?).await
}

#[tokio::test]
async fn cluster_settings_bound_what_is_kept() -> anyhow::Result<()> {
    settings_bound_what_is_kept(cluster(small_settings()).await?).await
}

#[tokio::test]
async fn redis_away_is_unavailable_and_recovers() -> anyhow::Result<()> {
    let mut f = redis(StoreSettings::default()).await?;
    f.store.apply_report(&report("web-1", "r-1", vec![]), None).await?;
    let server = f.redis.as_mut().context("redis fixture")?;
    server.stop()?;

    let store = &f.store;
    let errors = [
        store.apply_report(&report("web-1", "r-2", vec![]), None).await.err(),
        store.apply_heartbeat(&id("web-1"), timestamp::now(), None).await.err(),
        store.mark_silent_offline(timestamp::now(), 10).await.err(),
        store.agents().await.err(),
        store.alerts().await.err(),
        store.counts().await.err(),
        store.claim_idempotency_key("k", Duration::from_secs(1)).await.err(),
        store.check().await.err(),
    ];
    for (n, error) in errors.into_iter().enumerate() {
        let error = error.with_context(|| format!("call {n} succeeded with Redis down"))?;
        ensure!(error.is_unavailable(), "call {n}: {error}");
    }

    server.restart().await?;
    let store = f.store.clone();
    wait_until("the store works again", DEADLINE, || {
        let store = store.clone();
        async move { store.check().await.is_ok() }
    })
    .await?;
    let outcome = f.store.apply_report(&report("web-1", "r-3", vec![]), None).await?;
    ensure!(!outcome.duplicate && outcome.state.is_some());
    Ok(())
}

/// A burst of reports on a store that has no connection yet (a fresh
/// process, or the first requests after Redis came back) opens one Redis
/// connection for the thread, not one per report in flight.
#[tokio::test]
async fn redis_a_burst_of_reports_opens_one_connection() -> anyhow::Result<()> {
    let f = redis(StoreSettings::default()).await?;
    let server = f.redis.as_ref().context("redis fixture")?;
    let before = total_connections(server).await?;
    let reports = (0..64).map(|n| report(&format!("burst-{n}"), &format!("r-{n}"), vec![]));
    let outcomes = futures_util::future::join_all(reports.map(|r| {
        let store = f.store.clone();
        async move { store.apply_report(&r, None).await }
    }))
    .await;
    for outcome in outcomes {
        ensure!(!outcome?.duplicate);
    }
    let opened = total_connections(server).await? - before - 1;
    ensure!(opened == 1, "64 reports on one thread opened {opened} connections");
    Ok(())
}

/// Connections Redis has accepted so far (`INFO stats`), this query's own
/// included.
async fn total_connections(server: &RedisServer) -> anyhow::Result<u64> {
    let info: String = server.cmd(&["INFO", "stats"]).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .context("no total_connections_received in INFO stats")?
        .trim()
        .parse()
        .context("total_connections_received")
}

/// Two replicas (two stores on one Redis) racing on one agent: within a
/// process an agent's changes take turns, across processes the
/// compare-and-set decides, and every rule still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_racing_on_one_agent_open_one_alert() -> anyhow::Result<()> {
    let f = redis(StoreSettings::default()).await?;
    let server = f.redis.as_ref().context("redis fixture")?;
    let other_bus = RedisBus::connect(RedisSettings {
        url: server.url(),
        prefix: "pulse:".into(),
        history_len: HISTORY,
        pool_size: 8,
        ..RedisSettings::default()
    })
    .await?;
    let replicas: [Arc<dyn Store>; 2] =
        [f.store.clone(), Arc::new(RedisStore::new(other_bus, StoreSettings::default()))];
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let store = replicas[n % 2].clone();
            tokio::spawn(async move {
                store.apply_report(&report("web-1", &format!("r-{n}"), vec![disk(CheckStatus::Fail)]), None).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    assert_eq!(f.count("alerts", "alert_triggered").await?, 1, "racing replicas raise the alert once");
    assert_eq!(f.count("reports", "report_received").await?, 48, "every report is announced");
    assert_eq!(f.count("agents", "agent_status_changed").await?, 1, "first sight is announced once");
    assert_eq!(f.store.alerts().await?.open.len(), 1);
    Ok(())
}

#[tokio::test]
async fn redis_unreadable_agents_do_not_block_the_scan() -> anyhow::Result<()> {
    let f = redis(StoreSettings::default()).await?;
    let server = f.redis.as_ref().context("redis fixture")?;
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    f.seen_at("good", long_ago).await?;
    // Older than every real agent, so the scan meets them first.
    let old = (long_ago - TimeDelta::minutes(1)).timestamp_millis().to_string();
    let _: u64 = server.cmd(&["ZADD", "pulse:agents:seen", &old, "garbage"]).await?;
    let _: u64 = server.cmd(&["HSET", "pulse:agents", "garbage", "{not json"]).await?;
    let _: u64 = server.cmd(&["ZADD", "pulse:agents:seen", &old, "missing"]).await?;

    let changes = f.store.mark_silent_offline(timestamp::now(), 2).await?;
    ensure!(changes.is_empty(), "unreadable entries are not announced: {changes:?}");
    let changes = f.store.mark_silent_offline(timestamp::now(), 2).await?;
    assert_eq!(changes.iter().map(|c| c.agent_id.as_str()).collect::<Vec<_>>(), vec!["good"]);
    let left: u64 = server.cmd(&["ZCARD", "pulse:agents:seen"]).await?;
    assert_eq!(left, 0, "unreadable entries left the online index");
    assert_eq!(f.offline_events("agents").await?.len(), 1);

    // Lists leave unreadable entries out; the agent alone is an error.
    assert_eq!(f.store.agents().await?.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), vec!["good"]);
    let err = f.store.agent(&id("garbage")).await.err().context("unreadable state is an error")?;
    ensure!(matches!(err, pulse_store::StoreError::Corrupt { .. }), "{err}");
    let _: u64 = server.cmd(&["HSET", "pulse:alerts:open", "garbage/disk:/var", "[]"]).await?;
    ensure!(f.store.alerts().await?.open.is_empty());

    // The agent's next report replaces what could not be read.
    let outcome = f.store.apply_report(&report("garbage", "r-1", vec![disk(CheckStatus::Fail)]), None).await?;
    ensure!(outcome.events.iter().any(|e| e.event_type.as_str() == "alert_triggered"));
    assert_eq!(f.state("garbage").await?.status, AgentStatus::Online);
    assert_eq!(f.store.alerts().await?.open.len(), 1);
    Ok(())
}

#[tokio::test]
async fn redis_keys_are_as_documented() -> anyhow::Result<()> {
    let f = redis(StoreSettings::default()).await?;
    let server = f.redis.as_ref().context("redis fixture")?;
    f.store.apply_report(&report("web-1", "r-1", vec![disk(CheckStatus::Fail)]), None).await?;
    f.store.apply_report(&report("web-2", "r-2", vec![disk(CheckStatus::Fail)]), None).await?;
    f.store.apply_report(&report("web-2", "r-3", vec![disk(CheckStatus::Ok)]), None).await?;
    f.store.claim_idempotency_key("k", Duration::from_secs(60)).await?;

    let state: String = server.cmd(&["HGET", "pulse:agents", "web-1"]).await?;
    assert_eq!(serde_json::from_str::<AgentState>(&state)?, f.state("web-1").await?);
    let seen: f64 = server.cmd(&["ZSCORE", "pulse:agents:seen", "web-1"]).await?;
    assert_eq!(seen as i64, f.state("web-1").await?.last_seen.timestamp_millis());
    let open: String = server.cmd(&["HGET", "pulse:alerts:open", "web-1/disk:/var"]).await?;
    assert_eq!(serde_json::from_str::<Alert>(&open)?.agent_id.as_str(), "web-1");
    let recent: Vec<String> = server.cmd(&["LRANGE", "pulse:alerts:recent", "0", "-1"]).await?;
    assert_eq!(recent.len(), 1);
    for key in ["pulse:dedupe:r-1", "pulse:idem:k"] {
        let ttl: i64 = server.cmd(&["PTTL", key]).await?;
        ensure!(ttl > 0, "{key} has a TTL ({ttl})");
    }
    Ok(())
}

#[tokio::test]
async fn redis_that_hangs_is_unavailable() -> anyhow::Result<()> {
    let f = redis_with_deadline(StoreSettings::default(), Duration::from_millis(300)).await?;
    let server = f.redis.as_ref().context("redis fixture")?;
    f.store.check().await?;
    // A script that keeps Redis busy for 2 s: every other client waits.
    let busy = "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
                repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 2000000 return 1";
    let mut conn = server.client()?.get_multiplexed_async_connection().await?;
    let hang = tokio::spawn(async move { redis::cmd("EVAL").arg(busy).arg(0).query_async::<i64>(&mut conn).await });
    let store = f.store.clone();
    wait_until("a call times out as unavailable", DEADLINE, || {
        let store = store.clone();
        async move { store.agents().await.is_err_and(|e| e.is_unavailable()) }
    })
    .await?;
    // The busy client's own connection times out too; only Redis coming
    // back matters.
    let _ = hang.await?;
    wait_until("the store answers again", DEADLINE, || {
        let store = store.clone();
        async move { store.check().await.is_ok() }
    })
    .await?;
    Ok(())
}
