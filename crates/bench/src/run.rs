//! A benchmark run: open the clients, publish at a rate, drain, account.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use pulse_protocol::Channel;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::accounting::SeqSet;
use crate::client::{self, ClientOutcome, Shared, Target};
use crate::procstat::{self, PeakSampler, ProcSample};
use crate::publisher::Publisher;

/// In [`Layout::PerClient`], one event in this many goes to the shared channel.
pub const SHARED_EVERY: u64 = 100;

/// Which channels clients subscribe to and where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Every client on one channel; every event to it.
    Single(Channel),
    /// Client `i` on `{prefix}{i}` plus `shared`. One event in
    /// [`SHARED_EVERY`] goes to `shared` (index `clients`), the others to
    /// the agent channels in turn (`seq % clients`).
    PerClient { prefix: String, shared: Channel },
}

impl Layout {
    fn channels_of(&self, client: usize) -> anyhow::Result<Vec<Channel>> {
        Ok(match self {
            Self::Single(c) => vec![c.clone()],
            Self::PerClient { prefix, shared } => vec![Channel::parse(&format!("{prefix}{client}"))?, shared.clone()],
        })
    }

    /// Index of the channel event `seq` goes to (`clients` = the shared one).
    fn target_of(&self, seq: u64, clients: usize) -> usize {
        match self {
            Self::Single(_) => 0,
            Self::PerClient { .. } if seq % SHARED_EVERY == SHARED_EVERY - 1 => clients,
            Self::PerClient { .. } => (seq % clients.max(1) as u64) as usize,
        }
    }

    fn channel_at(&self, index: usize, clients: usize) -> anyhow::Result<Channel> {
        Ok(match self {
            Self::Single(c) => c.clone(),
            Self::PerClient { shared, .. } if index == clients => shared.clone(),
            Self::PerClient { prefix, .. } => Channel::parse(&format!("{prefix}{index}"))?,
        })
    }

    /// Whether client `client` should receive event `seq`.
    fn expects(&self, client: usize, seq: u64, clients: usize) -> bool {
        match self {
            Self::Single(_) => true,
            Self::PerClient { .. } => {
                let t = self.target_of(seq, clients);
                t == client || t == clients
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Gateway WebSocket URLs; clients are spread over them round-robin.
    pub urls: Vec<String>,
    pub clients: usize,
    pub layout: Layout,
    /// Events per second, all channels together.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Padding bytes in each event's data.
    pub pad: usize,
    /// After publishing, how long to wait for the last deliveries.
    pub drain: Duration,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    /// Bind clients to 127.0.x.y source addresses.
    pub spread_sources: bool,
    /// Measure this process's CPU and memory (the gateway).
    pub server_pid: Option<u32>,
    /// Idle mode: only hold the connections this long, publish nothing.
    pub idle_hold: Option<Duration>,
    /// Publishes in flight at once.
    pub max_in_flight: usize,
    /// Subscribe after `welcome` (off: bare connections, for what a
    /// connection costs before any subscription).
    pub subscribe: bool,
}

impl RunConfig {
    pub fn new(url: &str, clients: usize, channel: Channel) -> Self {
        Self {
            urls: vec![url.to_string()],
            clients,
            layout: Layout::Single(channel),
            rate: 100.0,
            duration: Duration::from_secs(1),
            pad: 0,
            drain: Duration::from_secs(5),
            connect_concurrency: 256,
            spread_sources: false,
            server_pid: None,
            idle_hold: None,
            max_in_flight: 64,
            subscribe: true,
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUsage {
    pub before_connect: ProcSample,
    pub after_connect: ProcSample,
    pub end: ProcSample,
    /// Highest RSS sampled during the run (every 100 ms), bytes.
    pub peak_rss_bytes: u64,
    /// RSS added by the connections, per connection, bytes.
    pub rss_per_connection_bytes: f64,
    /// CPU seconds from the first publish to the end of the drain.
    pub cpu_secs_publishing: f64,
    /// Those CPU seconds per delivered event, microseconds.
    pub cpu_us_per_delivery: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub clients: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub first_connect_error: Option<String>,
    pub connect_secs: f64,
    pub connect_time: Percentiles,
    pub rate: f64,
    pub duration_secs: f64,
    /// Publishes that succeeded / failed.
    pub published: u64,
    pub publish_errors: u64,
    pub first_publish_error: Option<String>,
    /// Seconds publishing actually took (behind schedule if longer than duration).
    pub publish_secs: f64,
    /// Deliveries owed to the connected clients for the published events.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Events a client got for a channel it did not subscribe to.
    pub misrouted: u64,
    /// Deliveries per second, from the first publish to the last delivery
    /// (or the end of the drain).
    pub delivered_per_sec: f64,
    pub latency: Percentiles,
    /// Clients closed by the server during the run, and with which codes.
    pub closed_by_server: u64,
    pub close_codes: Vec<(u16, u64)>,
    pub client_errors: u64,
    pub server: Option<ServerUsage>,
    /// This load generator's CPU seconds over the run.
    pub loadgen_cpu_secs: f64,
    pub loadgen_peak_rss_bytes: u64,
}

/// How long deliveries must pause before a run with failed publishes ends.
const QUIET: Duration = Duration::from_millis(500);

/// Raises this process's open-file limit as far as allowed.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

struct Opened {
    index: usize,
    outcome: tokio::task::JoinHandle<ClientOutcome>,
}

/// Runs one benchmark. `publisher` may be `None` only in idle mode.
pub async fn run(config: &RunConfig, publisher: Option<Publisher>) -> anyhow::Result<RunReport> {
    raise_nofile();
    anyhow::ensure!(!config.urls.is_empty(), "no gateway URL");
    let mut targets = Vec::new();
    for url in &config.urls {
        targets.push(Target::resolve(url).await?);
    }
    let own_start = procstat::sample(None).unwrap_or_default();
    let own_peak = PeakSampler::start(None, Duration::from_millis(250));
    let sample_server = || config.server_pid.map(|pid| procstat::sample(Some(pid))).transpose();
    let before_connect = sample_server()?;
    let server_peak = config.server_pid.map(|pid| PeakSampler::start(Some(pid), Duration::from_millis(100)));

    // Connect everyone.
    let shared = Shared::new(config.clients);
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let mut connecting = JoinSet::new();
    let connect_started = Instant::now();
    for i in 0..config.clients {
        let target = targets[i % targets.len()].clone();
        let source = config.spread_sources.then(|| client::source_ip(i));
        let channels = if config.subscribe { config.layout.channels_of(i)? } else { Vec::new() };
        let gate = gate.clone();
        let shared = shared.clone();
        let stop = stop_rx.clone();
        connecting.spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = client::open(&target, source, &channels).await;
            drop(permit);
            opened.map(|(ws, set, took)| {
                let outcome = tokio::spawn(client::receive(i, ws, set, shared, stop));
                (Opened { index: i, outcome }, took)
            })
        });
    }
    let mut opened = Vec::with_capacity(config.clients);
    let mut connect_hist = client::histogram();
    let mut connect_failures = 0;
    let mut first_connect_error = None;
    while let Some(joined) = connecting.join_next().await {
        match joined.context("connect task")? {
            Ok((o, took)) => {
                connect_hist.saturating_record((took.as_micros() as u64).max(1));
                opened.push(o);
            }
            Err(e) => {
                connect_failures += 1;
                first_connect_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    opened.sort_by_key(|o| o.index);
    // Let the server settle (allocators, subscriptions) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_connect = sample_server()?;

    let mut report = RunReport {
        clients: config.clients,
        connected: opened.len(),
        connect_failures,
        first_connect_error,
        connect_secs,
        connect_time: Percentiles::of(&connect_hist),
        rate: config.rate,
        duration_secs: config.duration.as_secs_f64(),
        ..RunReport::default()
    };

    let mut published = SeqSet::new();
    let mut cpu_before_publish = after_connect;
    let publish_started = Instant::now();
    let mut last_delivery = publish_started;
    if let Some(hold) = config.idle_hold {
        tokio::time::sleep(hold).await;
    } else {
        let publisher = publisher.context("no publisher")?;
        cpu_before_publish = sample_server()?;
        let publish_started = Instant::now();
        let (ok, errors, first_error) = publish_all(config, &publisher, &mut published).await?;
        report.published = ok;
        report.publish_errors = errors;
        report.first_publish_error = first_error;
        report.publish_secs = publish_started.elapsed().as_secs_f64();
        report.expected = expected_deliveries(config, &opened, &published);
        let drain_until = Instant::now() + config.drain;
        let mut last_seen = shared.received();
        last_delivery = Instant::now();
        // A publish that timed out may still have gone through, so the
        // count can reach `expected` while owed events are in flight: with
        // failed publishes, stop only once deliveries have also gone quiet.
        let settled = |seen: u64, since_last: Duration| {
            seen >= report.expected && (report.publish_errors == 0 || since_last >= QUIET)
        };
        while Instant::now() < drain_until && !settled(last_seen, last_delivery.elapsed()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now_seen = shared.received();
            if now_seen != last_seen {
                last_delivery = Instant::now();
                last_seen = now_seen;
            }
        }
    }
    let end = sample_server()?;
    let peak_rss = server_peak.map(PeakSampler::stop).unwrap_or(0);

    let _ = stop_tx.send(true);
    let mut codes = std::collections::BTreeMap::<u16, u64>::new();
    for o in opened {
        let outcome = o.outcome.await.context("client task")?;
        let i = o.index;
        report.delivered += outcome.set.unique();
        report.duplicates += outcome.set.duplicates();
        if config.idle_hold.is_none() {
            let layout = &config.layout;
            let clients = config.clients;
            report.lost += (0..report.published + report.publish_errors)
                .filter(|&s| published.contains(s) && layout.expects(i, s, clients) && !outcome.set.contains(s))
                .count() as u64;
            report.misrouted += outcome.set.unexpected(|s| layout.expects(i, s, clients));
        }
        if let Some(code) = outcome.closed_by_server {
            report.closed_by_server += 1;
            *codes.entry(code).or_default() += 1;
        } else if outcome.error.is_some() {
            report.client_errors += 1;
        }
    }
    report.close_codes = codes.into_iter().collect();
    let elapsed = last_delivery.duration_since(publish_started).as_secs_f64();
    if elapsed > 0.0 {
        report.delivered_per_sec = report.delivered as f64 / elapsed;
    }
    report.latency = Percentiles::of(&shared.latency.lock());

    if let (Some(before), Some(after), Some(end), Some(start)) =
        (before_connect, after_connect, end, cpu_before_publish)
    {
        let cpu = end.cpu_secs - start.cpu_secs;
        let per_conn = if report.connected > 0 {
            (after.rss_bytes as f64 - before.rss_bytes as f64) / report.connected as f64
        } else {
            0.0
        };
        report.server = Some(ServerUsage {
            before_connect: before,
            after_connect: after,
            end,
            peak_rss_bytes: peak_rss.max(after.rss_bytes).max(end.rss_bytes),
            rss_per_connection_bytes: per_conn,
            cpu_secs_publishing: cpu,
            cpu_us_per_delivery: if report.delivered > 0 { cpu * 1e6 / report.delivered as f64 } else { 0.0 },
        });
    }
    let own_end = procstat::sample(None).unwrap_or_default();
    report.loadgen_cpu_secs = own_end.cpu_secs - own_start.cpu_secs;
    report.loadgen_peak_rss_bytes = own_peak.stop().max(own_end.rss_bytes);
    Ok(report)
}

fn expected_deliveries(config: &RunConfig, opened: &[Opened], published: &SeqSet) -> u64 {
    match &config.layout {
        Layout::Single(_) => published.unique() * opened.len() as u64,
        Layout::PerClient { .. } => {
            let connected: std::collections::HashSet<usize> = opened.iter().map(|o| o.index).collect();
            let clients = config.clients;
            let mut n = 0;
            let total = (config.rate * config.duration.as_secs_f64()).round() as u64;
            for seq in (0..total).filter(|&s| published.contains(s)) {
                let t = config.layout.target_of(seq, clients);
                n += if t == clients { connected.len() as u64 } else { u64::from(connected.contains(&t)) };
            }
            n
        }
    }
}

/// Publishes `rate × duration` events on schedule, at most `max_in_flight`
/// at once. Returns (succeeded, failed, first error).
async fn publish_all(
    config: &RunConfig,
    publisher: &Publisher,
    published: &mut SeqSet,
) -> anyhow::Result<(u64, u64, Option<String>)> {
    let total = (config.rate * config.duration.as_secs_f64()).round() as u64;
    let mut channels = Vec::new();
    let distinct = match config.layout {
        Layout::Single(_) => 1,
        Layout::PerClient { .. } => config.clients + 1,
    };
    for index in 0..distinct {
        channels.push(config.layout.channel_at(index, config.clients)?);
    }
    let channels = Arc::new(channels);
    let start = tokio::time::Instant::now();
    let mut in_flight: JoinSet<(u64, anyhow::Result<()>)> = JoinSet::new();
    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut record = |done: (u64, anyhow::Result<()>), published: &mut SeqSet| match done.1 {
        Ok(()) => {
            published.insert(done.0);
            ok += 1;
        }
        Err(e) => {
            failed += 1;
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    };
    for seq in 0..total {
        let due = start + Duration::from_secs_f64(seq as f64 / config.rate);
        tokio::time::sleep_until(due).await;
        while in_flight.len() >= config.max_in_flight.max(1) {
            if let Some(done) = in_flight.join_next().await {
                record(done.context("publish task")?, published);
            }
        }
        while let Some(done) = in_flight.try_join_next() {
            record(done.context("publish task")?, published);
        }
        let publisher = publisher.clone();
        let channels = channels.clone();
        let channel_index = config.layout.target_of(seq, config.clients);
        let pad = config.pad;
        in_flight.spawn(async move {
            let result = publisher.publish(&channels[channel_index], seq, client::now_us(), pad).await;
            (seq, result)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        record(done.context("publish task")?, published);
    }
    Ok((ok, failed, first_error))
}
