//! `pulse-soak`: connection churn against a gateway for minutes, checking
//! that nothing accumulates.
//!
//! Runs the distributed stack of the fault suite (private redis-server,
//! ingest, two gateways, two checkers) with a publisher on channel `soak`.
//! Clients churn against the first gateway at a steady rate: connect,
//! subscribe resuming from the last position any client saw (`since`),
//! read for a moment, close. The gateway process's resident memory,
//! threads and open files (from `/proc/PID`) are sampled while idle after a
//! warm-up (the baseline) and again after the churn; the run fails unless
//! they are back within the tolerances. Prints one line per minute, then
//! the figures. Run by `scripts/soak`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use pulse_chaos::publisher::{self, PublishTarget};
use pulse_chaos::stack::{API_KEY, Stack, StackOptions, find_bin_dir};
use tokio_tungstenite::tungstenite::Message;

/// Churns connections against a gateway and checks it returns to baseline.
#[derive(Parser)]
struct Cli {
    /// How long to churn, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// New connections per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Events per second published on the churned channel.
    #[arg(long, default_value_t = 20.0)]
    publish_rate: f64,
    /// Directory of the Pulse binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the services' logs go.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Growth of resident memory tolerated over the baseline, in MiB.
    #[arg(long, default_value_t = 32)]
    rss_tolerance_mib: u64,
}

/// One look at the gateway process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    threads: u64,
    fds: u64,
}

impl Sample {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).context("reading /proc/PID/fd")?.count() as u64;
        Ok(Self { rss_kib: field("VmRSS:"), threads: field("Threads:"), fds })
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {:.1} MiB, {} threads, {} open files", self.rss_kib as f64 / 1024.0, self.threads, self.fds)
    }
}

#[derive(Default)]
struct Counts {
    sessions: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
    resumed: AtomicU64,
}

/// One client's life: connect, subscribe from `since`, read ~1 s, close.
async fn session(url: String, since: Arc<Mutex<Option<String>>>, counts: Arc<Counts>) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let from = since.lock().clone();
    let mut subscribe = serde_json::json!({"type": "subscribe", "channel": "soak"});
    if let Some(from) = &from {
        subscribe["since"] = serde_json::Value::String(from.clone());
        counts.resumed.fetch_add(1, Ordering::Relaxed);
    }
    ws.send(Message::text(subscribe.to_string())).await?;
    let until = tokio::time::Instant::now() + Duration::from_millis(500 + rand_ms());
    loop {
        let next = match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(None) => anyhow::bail!("closed by the gateway"),
            Ok(Some(frame)) => frame?,
        };
        if let Message::Text(text) = next {
            let value: serde_json::Value = serde_json::from_str(&text)?;
            if value["channel"] == "soak"
                && let Some(id) = value["id"].as_str()
            {
                counts.events.fetch_add(1, Ordering::Relaxed);
                *since.lock() = Some(id.to_owned());
            }
        }
    }
    ws.close(None).await?;
    // Read until the gateway's close arrives, as a browser does.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while ws.next().await.is_some() {} }).await;
    Ok(())
}

/// 0–999 ms, so lives overlap unevenly.
fn rand_ms() -> u64 {
    u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())) % 1000
}

/// Churns at `rate` per second for `length`; returns when every session ended.
async fn churn(url: &str, rate: f64, length: Duration, since: &Arc<Mutex<Option<String>>>, counts: &Arc<Counts>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let (url, since, counts) = (url.to_owned(), since.clone(), counts.clone());
        tasks.spawn(async move {
            match session(url, since, counts.clone()).await {
                Ok(()) => counts.sessions.fetch_add(1, Ordering::Relaxed),
                Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits for the gateway to settle after churn (closes linger up to 2 s).
async fn settled(pid: u32) -> anyhow::Result<Sample> {
    tokio::time::sleep(Duration::from_secs(8)).await;
    Sample::of(pid)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let bin_dir = find_bin_dir(cli.bin_dir.as_deref())?;
    let dir =
        cli.logs.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("pulse-soak-{}", std::process::id())));
    let options = StackOptions { bin_dir, dir: dir.clone(), log_level: "warn".into() };
    let stack = Stack::distributed(&options).await?;
    let gateway = stack.gateways.first().context("no gateway")?;
    let pid = gateway.pid().context("the gateway has no pid")?;
    let url = gateway.ws_url();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let target = PublishTarget {
        base: stack.publish_base()?,
        api_key: API_KEY.into(),
        channel: "soak".into(),
        run: format!("soak-{}", std::process::id()),
        rate: cli.publish_rate,
        idempotency_keys: true,
    };
    let (publisher, publishing) = publisher::start(reqwest::Client::new(), target, stop_rx);

    let since = Arc::new(Mutex::new(None));
    let counts = Arc::new(Counts::default());
    println!("soak: warming up for 30 s ({} connections/s)", cli.rate);
    churn(&url, cli.rate, Duration::from_secs(30), &since, &counts).await;
    let start = settled(pid).await?;
    println!("soak: baseline  {start}");

    let started = Instant::now();
    let total = Duration::from_secs_f64(cli.minutes * 60.0);
    let mut minute = 0;
    while started.elapsed() < total {
        let left = total.saturating_sub(started.elapsed()).min(Duration::from_secs(60));
        churn(&url, cli.rate, left, &since, &counts).await;
        minute += 1;
        println!(
            "soak: minute {minute}: {}  sessions {} (failed {}, resumed {}), events read {}",
            Sample::of(pid)?,
            counts.sessions.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
            counts.resumed.load(Ordering::Relaxed),
            counts.events.load(Ordering::Relaxed),
        );
    }
    let end = settled(pid).await?;
    let _ = stop_tx.send(true);
    let _ = publishing.await;
    println!("soak: end       {end}");

    let sessions = counts.sessions.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let rss_grown_kib = end.rss_kib.saturating_sub(start.rss_kib);
    let mut problems = Vec::new();
    if rss_grown_kib > cli.rss_tolerance_mib * 1024 {
        problems.push(format!(
            "RSS grew by {:.1} MiB (tolerance {} MiB)",
            rss_grown_kib as f64 / 1024.0,
            cli.rss_tolerance_mib
        ));
    }
    if end.fds > start.fds + 8 {
        problems.push(format!("open files {} → {}", start.fds, end.fds));
    }
    if end.threads > start.threads + 2 {
        problems.push(format!("threads {} → {}", start.threads, end.threads));
    }
    // A few failures are the churn racing the per-connection limits; many
    // are a broken gateway.
    if failed * 100 > sessions.max(1) {
        problems.push(format!("{failed} of {} sessions failed", sessions + failed));
    }
    println!(
        "soak: {:.1} min, {sessions} sessions ({failed} failed, {} resumed), {} events read, {} published; \
         RSS {:+.1} MiB, threads {:+}, open files {:+}",
        cli.minutes,
        counts.resumed.load(Ordering::Relaxed),
        counts.events.load(Ordering::Relaxed),
        publisher.last_acknowledged(),
        (end.rss_kib as f64 - start.rss_kib as f64) / 1024.0,
        end.threads as i64 - start.threads as i64,
        end.fds as i64 - start.fds as i64,
    );
    stack.stop().await;
    if problems.is_empty() {
        println!("soak: back to baseline");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(true)
    } else {
        println!("soak: FAILED: {} (logs in {})", problems.join("; "), dir.display());
        Ok(false)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pulse-soak: {err:#}");
            ExitCode::from(2)
        }
    }
}
