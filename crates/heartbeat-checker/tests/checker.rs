//! The checker over real stores: Redis (each test with its own
//! `redis-server`) and memory. Outcomes are counted on the bus, never timed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::TimeDelta;
use pulse_bus::{Bus, MemoryBus, MemoryBusConfig, RedisBus, RedisBusConfig};
use pulse_heartbeat_checker::{Checker, CheckerSettings, CheckerStatus};
use pulse_protocol::probe::{AgentStatus, AgentStatusChange};
use pulse_protocol::{AgentId, Channel, Position, timestamp};
use pulse_runtime::Shutdown;
use pulse_store::{Layout, MemoryStore, RedisStore, Store, StoreSettings};
use pulse_testkit::{DEADLINE, RedisCluster, RedisServer, wait_until};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const HISTORY: usize = 100_000;

/// Short settings: agents silent for 1 s go offline, scans every 100 ms.
fn quick() -> CheckerSettings {
    CheckerSettings {
        timeout: Duration::from_secs(1),
        scan_interval: Duration::from_millis(100),
        batch: 20,
        max_backoff: Duration::from_millis(400),
    }
}

/// A store and bus on `server`, as one replica of a service would have.
async fn redis_replica(server: &RedisServer) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    redis_replica_in(server, Layout::Single).await
}

/// The same, with the store in `layout`.
async fn redis_replica_in(server: &RedisServer, layout: Layout) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    replica_at(server.url(), "pulse:", layout).await
}

async fn replica_at(url: String, prefix: &str, layout: Layout) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    let bus = RedisBus::connect(RedisBusConfig {
        url,
        prefix: prefix.into(),
        history_len: HISTORY,
        pool_size: 4,
        ..RedisBusConfig::default()
    })
    .await?;
    Ok((Arc::new(RedisStore::with_layout(bus.clone(), StoreSettings::default(), layout)), Arc::new(bus)))
}

/// Where a test's replicas keep their data: a `redis-server` of its own,
/// or a Redis Cluster (under a key prefix of the test's own when shared).
enum Place {
    Server(RedisServer, Layout),
    Cluster(Arc<RedisCluster>, String),
}

impl Place {
    async fn server(layout: Layout) -> anyhow::Result<Self> {
        Ok(Self::Server(RedisServer::start().await?, layout))
    }

    async fn shared_cluster() -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!("c{}:", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Ok(Self::Cluster(RedisCluster::shared().await?, prefix))
    }

    fn prefix(&self) -> &str {
        match self {
            Self::Server(..) => "pulse:",
            Self::Cluster(_, prefix) => prefix,
        }
    }

    /// A store and bus as one replica of a service would have: on a
    /// cluster, with the layout the store picks for itself.
    async fn replica(&self) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
        match self {
            Self::Server(server, layout) => redis_replica_in(server, *layout).await,
            Self::Cluster(cluster, prefix) => {
                let bus = RedisBus::connect(RedisBusConfig {
                    url: cluster.url(),
                    prefix: prefix.clone(),
                    history_len: HISTORY,
                    pool_size: 4,
                    ..RedisBusConfig::default()
                })
                .await?;
                ensure!(bus.is_cluster());
                Ok((Arc::new(RedisStore::new(bus.clone(), StoreSettings::default())), Arc::new(bus)))
            }
        }
    }

    /// Runs a command about `key` where `key` lives.
    async fn cmd<T: redis::FromRedisValue>(&self, key: &str, args: &[&str]) -> anyhow::Result<T> {
        match self {
            Self::Server(server, _) => server.cmd(args).await,
            Self::Cluster(cluster, _) => cluster.cmd(cluster.master_of(key).await?, args).await,
        }
    }
}

/// A checker running in the background until `shutdown`.
fn spawn_checker(
    store: Arc<dyn Store>,
    settings: CheckerSettings,
    shutdown: &Shutdown,
) -> (watch::Receiver<CheckerStatus>, JoinHandle<()>) {
    let checker = Checker::new(store, settings);
    let status = checker.status();
    (status, tokio::spawn(checker.run(shutdown.clone())))
}

fn id(name: &str) -> AgentId {
    AgentId::parse(name).expect("test agent ids are valid")
}

/// Offline announcements on `agents`, by agent.
async fn offline_announcements(bus: &dyn Bus) -> anyhow::Result<HashMap<AgentId, Vec<AgentStatusChange>>> {
    let history = bus.history(&Channel::well_known(Channel::AGENTS), Position::ZERO, HISTORY).await?;
    ensure!(!history.truncated, "history was truncated");
    let mut by_agent: HashMap<AgentId, Vec<AgentStatusChange>> = HashMap::new();
    for event in history.events {
        let change: AgentStatusChange = event.payload()?;
        if change.new_status == AgentStatus::Offline {
            by_agent.entry(change.agent_id.clone()).or_default().push(change);
        }
    }
    Ok(by_agent)
}

/// Waits until the store counts `offline` offline agents and none online.
async fn wait_all_offline(store: &Arc<dyn Store>, offline: u64) -> anyhow::Result<()> {
    wait_until(&format!("{offline} agents are offline"), DEADLINE, || {
        let store = store.clone();
        async move { store.counts().await.is_ok_and(|c| c.online == 0 && c.offline == offline) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_announced_once_and_not_early() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, bus) = redis_replica(&server).await?;
    let shutdown = Shutdown::new();
    let (_, checker) = spawn_checker(store.clone(), quick(), &shutdown);

    let heard = store.apply_heartbeat(&id("web-1"), timestamp::now(), None).await?.state.last_seen;
    wait_all_offline(&store, 1).await?;

    let announced = offline_announcements(bus.as_ref()).await?;
    let changes = announced.get(&id("web-1")).context("web-1 was announced")?;
    assert_eq!(changes.len(), 1, "announced once: {changes:?}");
    let silent_for = changes[0].ts - heard;
    ensure!(silent_for >= TimeDelta::seconds(1), "announced after {silent_for}, before the 1 s timeout");
    let state = store.agent(&id("web-1")).await?.context("web-1 is known")?;
    assert_eq!(state.status, AgentStatus::Offline);
    let on_agent_channel = bus.history(&Channel::for_agent(&id("web-1")), Position::ZERO, 100).await?.events;
    assert_eq!(on_agent_channel.len(), 2, "online, then offline, on agent:web-1");

    shutdown.trigger();
    checker.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkers_announce_each_transition_exactly_once() -> anyhow::Result<()> {
    checkers_announce_each_transition_exactly_once(Place::server(Layout::Single).await?).await
}

/// The same with agents in buckets and events through the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkers_announce_each_transition_exactly_once_partitioned() -> anyhow::Result<()> {
    checkers_announce_each_transition_exactly_once(Place::server(Layout::Partitioned).await?).await
}

/// The same on a Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkers_announce_each_transition_exactly_once_on_a_cluster() -> anyhow::Result<()> {
    checkers_announce_each_transition_exactly_once(Place::shared_cluster().await?).await
}

async fn checkers_announce_each_transition_exactly_once(place: Place) -> anyhow::Result<()> {
    const AGENTS: usize = 300;
    let shutdown = Shutdown::new();
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (store, _) = place.replica().await?;
        let (status, task) = spawn_checker(store, quick(), &shutdown);
        statuses.push(status);
        tasks.push(task);
    }
    let (store, bus) = place.replica().await?;
    for n in 0..AGENTS {
        store.apply_heartbeat(&id(&format!("agent-{n}")), timestamp::now(), None).await?;
    }
    wait_all_offline(&store, AGENTS as u64).await?;
    // The checkers' own counts add up to one transition per agent (a
    // checker may still be reading the reply of its last batch).
    wait_until("the checkers count every transition", DEADLINE, || {
        let total: u64 = statuses.iter().map(|s| s.borrow().transitions).sum();
        async move { total >= AGENTS as u64 }
    })
    .await?;
    shutdown.trigger();
    for task in tasks {
        task.await?;
    }

    let announced = offline_announcements(bus.as_ref()).await?;
    assert_eq!(announced.len(), AGENTS, "every agent was announced");
    let repeated: Vec<_> = announced.iter().filter(|(_, changes)| changes.len() != 1).collect();
    ensure!(repeated.is_empty(), "announced more than once: {repeated:?}");
    let by_checkers: u64 = statuses.iter().map(|s| s.borrow().transitions).sum();
    assert_eq!(by_checkers, AGENTS as u64, "no transition was made twice");
    Ok(())
}

/// A process that stopped between a change and its publish (here: its
/// publish failed and it went away) leaves the events in the outbox; a
/// running checker publishes them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_publishes_events_a_stopped_process_left_behind() -> anyhow::Result<()> {
    checker_publishes_events_left_behind(Place::server(Layout::Partitioned).await?).await
}

/// The same on a Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_checker_publishes_events_a_stopped_process_left_behind() -> anyhow::Result<()> {
    checker_publishes_events_left_behind(Place::shared_cluster().await?).await
}

async fn checker_publishes_events_left_behind(place: Place) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let (checker_store, bus) = place.replica().await?;
    let settings = CheckerSettings { timeout: Duration::from_secs(3600), ..quick() };
    let (mut status, checker) = spawn_checker(checker_store, settings, &shutdown);

    let (ingest, _) = place.replica().await?;
    // Every publish on `agents` fails while its history key has the wrong type.
    let agents = Channel::well_known(Channel::AGENTS);
    let hist = pulse_bus::redis_lua::Keys::new(place.prefix()).hist(&agents);
    let _: () = place.cmd(&hist, &["SET", &hist, "not a stream"]).await?;
    ensure!(ingest.apply_heartbeat(&id("web-1"), timestamp::now(), None).await.is_err(), "the publish failed");
    drop(ingest);
    let _: u64 = place.cmd(&hist, &["DEL", &hist]).await?;

    wait_until("the checker publishes the left-behind event", DEADLINE, || {
        let (bus, agents) = (bus.clone(), agents.clone());
        async move { bus.history(&agents, Position::ZERO, 10).await.is_ok_and(|h| !h.events.is_empty()) }
    })
    .await?;
    // Later scans publish nothing more.
    let scans = status.borrow().scans;
    pulse_testkit::within("two more scans", DEADLINE, status.wait_for(|s| s.scans >= scans + 2)).await??;
    shutdown.trigger();
    checker.await?;
    let on_agents = bus.history(&agents, Position::ZERO, 10).await?.events;
    let on_agent = bus.history(&Channel::for_agent(&id("web-1")), Position::ZERO, 10).await?.events;
    assert_eq!((on_agents.len(), on_agent.len()), (1, 1), "published once on each channel");
    assert_eq!(on_agents[0].payload::<AgentStatusChange>()?.new_status, AgentStatus::Online);
    Ok(())
}

/// Waits until every replica of the cluster has every write its master
/// has: Redis replicates asynchronously, and a failover loses what the
/// replica had not received yet.
async fn wait_replicated(cluster: &RedisCluster) -> anyhow::Result<()> {
    wait_until("the replicas are in sync", DEADLINE, || async {
        let Ok(masters) = cluster.masters().await else { return false };
        for master in masters {
            let Ok(info) = cluster.cmd::<String>(master, &["INFO", "replication"]).await else { return false };
            let offset = info.lines().find_map(|l| l.strip_prefix("master_repl_offset:")).map(str::trim);
            let replica = info
                .lines()
                .find(|l| l.starts_with("slave0:"))
                .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")));
            if offset.is_none() || offset != replica {
                return false;
            }
        }
        true
    })
    .await
}

/// A master of the cluster dies while checkers scan: the buckets and
/// channels it served are unavailable until its replica takes over, the
/// events of the agents taken offline meanwhile wait in their outboxes, and
/// in the end every agent is announced offline exactly once, on `agents`
/// and on its own channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_master_failing_over_loses_no_transition_and_repeats_none() -> anyhow::Result<()> {
    const AGENTS: usize = 100;
    let cluster = Arc::new(RedisCluster::start().await?);
    let place = Place::Cluster(cluster.clone(), "pulse:".into());
    let shutdown = Shutdown::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, _) = place.replica().await?;
        tasks.push(spawn_checker(store, quick(), &shutdown).1);
    }
    let (store, bus) = place.replica().await?;
    for n in 0..AGENTS {
        store.apply_heartbeat(&id(&format!("agent-{n}")), timestamp::now(), None).await?;
    }
    wait_replicated(&cluster).await?;
    // The master of `agents`: every offline announcement goes there.
    let agents = Channel::well_known(Channel::AGENTS);
    cluster.kill_master_of(&pulse_bus::redis_lua::Keys::new("pulse:").hist(&agents)).await?;

    wait_all_offline(&store, AGENTS as u64).await?;
    wait_until("every agent is announced offline", DEADLINE, || {
        let bus = bus.clone();
        async move { offline_announcements(bus.as_ref()).await.is_ok_and(|a| a.len() == AGENTS) }
    })
    .await?;
    shutdown.trigger();
    for task in tasks {
        task.await?;
    }
    let announced = offline_announcements(bus.as_ref()).await?;
    let repeated: Vec<_> = announced.iter().filter(|(_, changes)| changes.len() != 1).collect();
    ensure!(repeated.is_empty(), "announced more than once: {repeated:?}");
    for n in 0..AGENTS {
        let channel = Channel::for_agent(&id(&format!("agent-{n}")));
        let events = bus.history(&channel, Position::ZERO, 10).await?.events;
        let statuses: Vec<AgentStatus> =
            events.iter().map(|e| e.payload::<AgentStatusChange>().map(|c| c.new_status)).collect::<Result<_, _>>()?;
        assert_eq!(statuses, vec![AgentStatus::Online, AgentStatus::Offline], "{channel}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_heard_from_just_before_the_deadline_is_not_flipped() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, bus) = redis_replica(&server).await?;
    let timeout = Duration::from_secs(3600);
    let checker = Checker::new(store.clone(), CheckerSettings { timeout, ..quick() });
    let hour = TimeDelta::hours(1);
    // The checker's deadline is its own now minus an hour: one agent was
    // last heard a minute inside it, the other a minute past it.
    store.apply_heartbeat(&id("in-time"), timestamp::now() - hour + TimeDelta::minutes(1), None).await?;
    store.apply_heartbeat(&id("too-late"), timestamp::now() - hour - TimeDelta::minutes(1), None).await?;

    let changes = checker.scan().await?;
    assert_eq!(changes.iter().map(|c| c.agent_id.as_str()).collect::<Vec<_>>(), vec!["too-late"]);
    let state = store.agent(&id("in-time")).await?.context("known")?;
    assert_eq!(state.status, AgentStatus::Online);
    ensure!(checker.scan().await?.is_empty(), "nothing left to do");
    assert_eq!(offline_announcements(bus.as_ref()).await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_work_through_many_batches() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let (store, bus) = redis_replica(&server).await?;
    let checker = Checker::new(store.clone(), CheckerSettings { batch: 7, ..quick() });
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    for n in 0..50 {
        store.apply_heartbeat(&id(&format!("agent-{n}")), long_ago, None).await?;
    }
    assert_eq!(checker.scan().await?.len(), 50, "one scan takes batch after batch until none is full");
    assert_eq!(offline_announcements(bus.as_ref()).await?.len(), 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_announces_nothing_twice_and_loses_nothing() -> anyhow::Result<()> {
    pulse_runtime::init_test_logging();
    const AGENTS: usize = 60;
    let mut server = RedisServer::start().await?;
    let shutdown = Shutdown::new();
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, _) = redis_replica(&server).await?;
        let (status, task) = spawn_checker(store, quick(), &shutdown);
        statuses.push(status);
        tasks.push(task);
    }
    let (store, bus) = redis_replica(&server).await?;
    let seed = |first: usize, count: usize, ts| {
        let store = store.clone();
        async move {
            for n in first..first + count {
                store.apply_heartbeat(&id(&format!("agent-{n}")), ts, None).await?;
            }
            anyhow::Ok(())
        }
    };

    // Before: agents go silent and are announced.
    seed(0, AGENTS, timestamp::now()).await?;
    wait_all_offline(&store, AGENTS as u64).await?;
    let before = offline_announcements(bus.as_ref()).await?;
    assert_eq!(before.len(), AGENTS);
    ensure!(before.values().all(|changes| changes.len() == 1), "announced once before the restart");

    // Redis goes away: every checker notices, none gives up.
    server.stop()?;
    for status in &mut statuses {
        let failing = |s: &CheckerStatus| s.last_error.is_some();
        pulse_testkit::within("a checker sees the outage", DEADLINE, status.wait_for(failing)).await??;
    }

    // Redis is back, empty (nothing is saved). Agents report again, half of
    // them already silent for longer than the timeout: the checkers catch
    // up with those as soon as they reconnect.
    server.restart().await?;
    wait_until("the store answers again", DEADLINE, || {
        let store = store.clone();
        async move { store.check().await.is_ok() }
    })
    .await?;
    seed(0, AGENTS / 2, timestamp::now() - TimeDelta::minutes(10)).await?;
    seed(AGENTS / 2, AGENTS / 2, timestamp::now()).await?;
    wait_all_offline(&store, AGENTS as u64).await?;
    for status in &mut statuses {
        let healthy = |s: &CheckerStatus| s.last_error.is_none();
        pulse_testkit::within("a checker scans again", DEADLINE, status.wait_for(healthy)).await??;
    }
    shutdown.trigger();
    for task in tasks {
        task.await?;
    }

    let after = offline_announcements(bus.as_ref()).await?;
    assert_eq!(after.len(), AGENTS, "every agent was announced after the restart");
    let repeated: Vec<_> = after.iter().filter(|(_, changes)| changes.len() != 1).collect();
    ensure!(repeated.is_empty(), "announced more than once: {repeated:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_runs_the_same_checker_over_memory() -> anyhow::Result<()> {
    let bus = MemoryBus::new(MemoryBusConfig { history_len: HISTORY });
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(bus.clone(), StoreSettings::default()));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(pulse_heartbeat_checker::run(store.clone(), quick(), shutdown.clone()));
    for n in 0..30 {
        store.apply_heartbeat(&id(&format!("agent-{n}")), timestamp::now(), None).await?;
    }
    wait_all_offline(&store, 30).await?;
    shutdown.trigger();
    task.await?;
    let announced = offline_announcements(&bus).await?;
    assert_eq!(announced.len(), 30);
    ensure!(announced.values().all(|changes| changes.len() == 1));
    Ok(())
}

#[tokio::test]
async fn stops_promptly_on_shutdown() -> anyhow::Result<()> {
    let bus = MemoryBus::new(MemoryBusConfig { history_len: 10 });
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(bus, StoreSettings::default()));
    let shutdown = Shutdown::new();
    let slow = CheckerSettings { scan_interval: Duration::from_secs(3600), ..quick() };
    let (mut status, task) = spawn_checker(store, slow, &shutdown);
    pulse_testkit::within("the first scan", DEADLINE, status.wait_for(|s| s.scans == 1)).await??;
    shutdown.trigger();
    pulse_testkit::within("the checker stops between scans", DEADLINE, task).await??;
    Ok(())
}

/// A writer the test reads back: the log lines the service would print.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Lines {
    type Writer = Lines;
    fn make_writer(&'w self) -> Lines {
        self.clone()
    }
}

/// Log pipelines keep one of two equal keys: the "agent offline" JSON line
/// has exactly one `message`, and the store's text under another key.
#[tokio::test]
async fn the_offline_log_line_has_one_message_key() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;

    let lines = Lines::default();
    let subscriber =
        tracing_subscriber::registry().with(pulse_runtime::log_layer(pulse_runtime::LogFormat::Json, lines.clone()));
    let _default = tracing::subscriber::set_default(subscriber);

    let store: Arc<dyn Store> =
        Arc::new(MemoryStore::new(MemoryBus::new(MemoryBusConfig::default()), StoreSettings::default()));
    let long_ago = timestamp::now() - TimeDelta::minutes(10);
    store.apply_heartbeat(&id("quiet-1"), long_ago, None).await?;
    let changes = Checker::new(store, quick()).scan().await?;
    assert_eq!(changes.len(), 1, "{changes:?}");

    let text = String::from_utf8(lines.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone())?;
    let line = text.lines().find(|l| l.contains("agent offline")).context("an agent offline line")?;
    // serde_json keeps the last of repeated keys, so count them in the text.
    assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
    let json: serde_json::Value = serde_json::from_str(line)?;
    assert_eq!(json["fields"]["message"], "agent offline", "{line}");
    assert_eq!(json["fields"]["agent_id"], "quiet-1", "{line}");
    assert_eq!(json["fields"]["reason"], changes[0].message.as_str(), "{line}");
    Ok(())
}
