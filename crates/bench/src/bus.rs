//! `pulse-bench bus`: how many events a second the Redis bus takes, on one
//! Redis or on a Redis Cluster.
//!
//! `tasks` concurrent publishers call [`Bus::publish`] on channels
//! `bench-0` … `bench-{channels - 1}` (round robin) for `duration`, through
//! one [`RedisBus`], exactly as ingest publishes: each publish is one
//! script call that appends to the channel's history and publishes the
//! live copy. On a cluster the channels' hash slots spread them over the
//! masters, so the rate measured against clusters of 1, 2, 3 … masters
//! shows how publishing scales with shards (`scripts/bench-cluster`).
//!
//! Besides the rate it reports the CPU seconds each Redis process spent
//! per event (pids from `INFO server` of every node given), and how evenly
//! the events spread over the nodes (their `XADD` call counts).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use pulse_bus::{Bus, RedisBus, RedisSettings};
use pulse_protocol::{Channel, EventDraft, EventType};
use serde::Serialize;

use crate::procstat;

/// What to run.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `redis.url` of the bus: one URL, or a comma-separated list of
    /// cluster nodes.
    pub redis_url: String,
    /// Every node whose CPU is measured (`redis://host:port`): the
    /// masters of a cluster, or the one Redis.
    pub nodes: Vec<String>,
    /// Concurrent publishers.
    pub tasks: usize,
    /// Channels published to, round robin.
    pub channels: usize,
    /// Bytes of padding in each event's data.
    pub pad: usize,
    /// Buses that subscribe to every channel, as that many gateways with
    /// clients on every channel would: each event is also sent to each of
    /// them, which is part of Redis's cost per event.
    pub subscribers: usize,
    /// How long to publish.
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BusReport {
    /// Events the bus acknowledged.
    pub published: u64,
    /// Publishes that failed.
    pub failures: u64,
    /// Events the subscribing buses received, all together (ideally
    /// `published × subscribers`; short when the run ends with events in
    /// flight, or a link fell behind).
    pub received: u64,
    /// Gaps the subscribing buses reported (events they could not fill
    /// from history after their link to Redis was replaced).
    pub gaps: u64,
    /// Seconds of publishing.
    pub secs: f64,
    /// `published / secs`.
    pub events_per_sec: f64,
    /// Per measured node: its address, the CPU µs it spent per event of
    /// the whole run, and the share of the run's appends it took.
    pub nodes: Vec<NodeShare>,
    /// CPU µs this load generator spent per event.
    pub loadgen_cpu_us_per_event: f64,
}

/// One Redis node's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeShare {
    pub node: String,
    pub cpu_us_per_event: f64,
    /// `XADD` calls on this node during the run, over `published`.
    pub share: f64,
}

struct NodeProbe {
    url: String,
    pid: u32,
    cpu_secs: f64,
    xadds: u64,
}

async fn node_stats(url: &str) -> anyhow::Result<(u32, u64)> {
    let client = redis::Client::open(url).with_context(|| format!("node {url}"))?;
    let mut conn = client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to {url}"))?;
    let pid = procstat::redis_pid(&mut conn).await?.context("INFO server has no process_id")?;
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    Ok((pid, xadd_calls(&stats)))
}

/// `calls=` of `cmdstat_xadd` in `INFO commandstats` (scripts' commands
/// are counted there too).
fn xadd_calls(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_xadd:"))
        .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Runs one measurement.
///
/// # Errors
///
/// Connecting to the bus or to a node fails, or a node's `INFO` cannot be
/// read.
pub async fn run(config: BusConfig) -> anyhow::Result<BusReport> {
    let bus = Arc::new(
        RedisBus::connect(RedisSettings {
            url: config.redis_url.clone(),
            pool_size: config.tasks.clamp(1, 64),
            ..RedisSettings::default()
        })
        .await
        .context("connecting the bus")?,
    );
    let mut probes = Vec::new();
    for url in &config.nodes {
        let (pid, xadds) = node_stats(url).await?;
        probes.push(NodeProbe { url: url.clone(), pid, cpu_secs: procstat::sample(Some(pid))?.cpu_secs, xadds });
    }
    let channels: Arc<[Channel]> = (0..config.channels.max(1))
        .map(|i| Channel::parse(&format!("bench-{i}")))
        .collect::<Result<_, _>>()
        .context("channel names")?;
    let event_type = EventType::parse("bench").context("event type")?;
    let data = serde_json::json!({ "pad": "x".repeat(config.pad) });
    let received = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(AtomicU64::new(0));
    let mut listeners = Vec::new();
    for _ in 0..config.subscribers {
        let listener = RedisBus::connect(RedisSettings { url: config.redis_url.clone(), ..RedisSettings::default() })
            .await
            .context("connecting a subscribing bus")?;
        let mut subscription = listener.subscription();
        for channel in channels.iter() {
            subscription.subscribe(channel).await.with_context(|| format!("subscribing to {channel}"))?;
        }
        let (received, gaps) = (received.clone(), gaps.clone());
        listeners.push(tokio::spawn(async move {
            let _listener = listener;
            while let Some(message) = subscription.next().await {
                let counter = match message {
                    pulse_bus::BusMessage::Event(_) => &received,
                    pulse_bus::BusMessage::Gap { .. } => &gaps,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let published = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loadgen_before = procstat::sample(None)?.cpu_secs;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..config.tasks.max(1) {
        let (bus, channels, data, event_type) = (bus.clone(), channels.clone(), data.clone(), event_type.clone());
        let (published, failures, stop) = (published.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = task;
            while !stop.load(Ordering::Relaxed) {
                let channel = &channels[next % channels.len()];
                next += 1;
                match bus.publish(channel, EventDraft::new(event_type.clone(), data.clone())).await {
                    Ok(_) => published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.context("a publisher panicked")?;
    }
    let secs = started.elapsed().as_secs_f64();
    // Let the subscribers take what is still in flight before counting.
    let expected = published.load(Ordering::Relaxed) * config.subscribers as u64;
    let settle = Instant::now();
    while received.load(Ordering::Relaxed) < expected && settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for listener in &listeners {
        listener.abort();
    }
    let loadgen = procstat::sample(None)?.cpu_secs - loadgen_before;
    let published = published.load(Ordering::Relaxed);
    let per_event = |cpu: f64| if published == 0 { 0.0 } else { cpu * 1e6 / published as f64 };
    let mut nodes = Vec::new();
    for probe in &probes {
        let (_, xadds) = node_stats(&probe.url).await?;
        let cpu = procstat::sample(Some(probe.pid))?.cpu_secs - probe.cpu_secs;
        nodes.push(NodeShare {
            node: probe.url.clone(),
            cpu_us_per_event: per_event(cpu),
            share: if published == 0 { 0.0 } else { xadds.saturating_sub(probe.xadds) as f64 / published as f64 },
        });
    }
    Ok(BusReport {
        published,
        failures: failures.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        gaps: gaps.load(Ordering::Relaxed),
        secs,
        events_per_sec: published as f64 / secs,
        nodes,
        loadgen_cpu_us_per_event: per_event(loadgen),
    })
}

/// One line per run, for the terminal.
pub fn summary(report: &BusReport) -> String {
    let nodes: Vec<String> = report
        .nodes
        .iter()
        .map(|n| format!("{} {:.1} µs/event, {:.0} % of appends", n.node, n.cpu_us_per_event, n.share * 100.0))
        .collect();
    format!(
        "{:.0} events/s ({} published, {} failed, {} received by subscribers, {} gaps, {:.1} s); load generator {:.1} µs/event; nodes: {}",
        report.events_per_sec,
        report.published,
        report.failures,
        report.received,
        report.gaps,
        report.secs,
        report.loadgen_cpu_us_per_event,
        nodes.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xadd_calls_and_info_fields() {
        let stats =
            "# Commandstats\r\ncmdstat_get:calls=3,usec=1\r\ncmdstat_xadd:calls=1234,usec=99,usec_per_call=0.08\r\n";
        assert_eq!(xadd_calls(stats), 1234);
        assert_eq!(xadd_calls("# Commandstats\r\n"), 0);
        assert_eq!(procstat::info_field("redis_version:7.0.15\r\nprocess_id:4242\r\n", "process_id"), Some(4242));
    }
}
