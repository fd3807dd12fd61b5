//! `pulse-bench ingest`: how many probe reports one `pulse-ingest` takes.
//!
//! A lean HTTP/1.1 client (keep-alive connections, each with up to
//! `pipeline` requests in flight, request bytes written by hand) posts
//! reports from `agents` simulated agents as fast as ingest answers, for
//! `duration`. Every answer must be a 202; anything else, or a connection
//! error, is a failure. The load generator costs a few microseconds per
//! report, so on a small machine the CPU left is ingest's and Redis's.
//!
//! Besides the rate, it measures the CPU seconds ingest and Redis spent
//! (from `/proc/<pid>/stat`; Redis's pid comes from `INFO server`), per
//! report, and checks with Redis that every accepted report published its
//! `report_received` event (`entries-added` of the `reports` history).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procstat;

/// What to run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `host:port` of ingest.
    pub addr: String,
    /// An agent API key.
    pub api_key: String,
    /// Agents the reports are spread over (`bench-{n % agents}`).
    pub agents: u64,
    /// Keep-alive connections.
    pub connections: usize,
    /// Requests in flight per connection (HTTP/1.1 pipelining; 1: none).
    pub pipeline: usize,
    /// How long to post.
    pub duration: Duration,
    /// Reports per second at most (all connections together); `None`: as
    /// fast as ingest answers.
    pub rate: Option<f64>,
    /// Process id of ingest, for its CPU time.
    pub ingest_pid: Option<u32>,
    /// Redis, for its CPU time and the published-events check.
    pub redis_url: Option<String>,
    /// Key prefix of the Pulse installation in that Redis.
    pub prefix: String,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Reports posted.
    pub sent: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Answered otherwise, or lost with their connection.
    pub failures: u64,
    /// Seconds from the first post to the last answer.
    pub secs: f64,
    /// `accepted / secs`.
    pub reports_per_sec: f64,
    /// Median time from writing a request to reading its answer, ms.
    pub p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_ms: f64,
    /// Longest, ms.
    pub max_ms: f64,
    /// CPU µs ingest spent per accepted report.
    pub ingest_cpu_us_per_report: Option<f64>,
    /// CPU µs Redis spent per accepted report.
    pub redis_cpu_us_per_report: Option<f64>,
    /// CPU µs this load generator spent per report.
    pub loadgen_cpu_us_per_report: f64,
    /// `report_received` events added to the `reports` history during the
    /// run, by Redis's count: equal to `accepted` when every accepted report
    /// was published.
    pub events_published: Option<u64>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    failures: AtomicU64,
    seq: AtomicU64,
}

/// Runs the benchmark.
///
/// # Errors
///
/// When ingest cannot be reached at all, or Redis (when given) does not
/// answer.
pub async fn run(config: IngestConfig) -> anyhow::Result<IngestReport> {
    let redis = match &config.redis_url {
        Some(url) => Some(redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?),
        None => None,
    };
    let stream_key =
        pulse_bus::redis_lua::Keys::new(config.prefix.clone()).hist(&pulse_protocol::Channel::well_known("reports"));
    let redis_pid = match redis.clone() {
        Some(mut conn) => procstat::redis_pid(&mut conn).await?,
        None => None,
    };
    let added_before = match redis.clone() {
        Some(mut conn) => Some(entries_added(&mut conn, &stream_key).await?),
        None => None,
    };
    // Fails early and clearly when ingest is not there.
    TcpStream::connect(&config.addr).await.with_context(|| format!("cannot connect to ingest at {}", config.addr))?;

    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    let run_id = now_us;
    let ts = crate::publisher::report(0, 0, u64::try_from(now_us).unwrap_or(0), 1)["ts"]
        .as_str()
        .unwrap_or("2026-01-01T00:00:00.000Z")
        .to_owned();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(parking_lot::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let cpu = |pid: Option<u32>| pid.and_then(|pid| procstat::sample(Some(pid)).ok()).map(|s| s.cpu_secs);
    let (ingest_before, redis_before, self_before) =
        (cpu(config.ingest_pid), cpu(redis_pid), procstat::sample(None)?.cpu_secs);
    let started = Instant::now();
    // Each connection gets an equal share of the rate, if there is one.
    let interval = config.rate.map(|rate| Duration::from_secs_f64(config.connections as f64 / rate.max(1.0)));
    let mut tasks = Vec::new();
    for _ in 0..config.connections.max(1) {
        let conn = Connection {
            config: config.clone(),
            run_id,
            counters: counters.clone(),
            stop: stop.clone(),
            latencies: latencies.clone(),
            interval,
            ts: ts.clone(),
        };
        tasks.push(tokio::spawn(conn.run()));
    }
    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        if let Err(error) = task.await {
            eprintln!("a connection task failed: {error}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (ingest_after, redis_after, self_after) =
        (cpu(config.ingest_pid), cpu(redis_pid), procstat::sample(None)?.cpu_secs);
    let events_published = match (redis, added_before) {
        (Some(mut conn), Some(before)) => Some(entries_added(&mut conn, &stream_key).await?.saturating_sub(before)),
        _ => None,
    };

    let accepted = counters.accepted.load(Ordering::Relaxed);
    let per_report = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if accepted > 0 => Some((a - b) * 1e6 / accepted as f64),
        _ => None,
    };
    let latencies = latencies.lock();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    Ok(IngestReport {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted,
        failures: counters.failures.load(Ordering::Relaxed),
        secs,
        reports_per_sec: accepted as f64 / secs.max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: latencies.max() as f64 / 1000.0,
        ingest_cpu_us_per_report: per_report(ingest_before, ingest_after),
        redis_cpu_us_per_report: per_report(redis_before, redis_after),
        loadgen_cpu_us_per_report: (self_after - self_before) * 1e6 / accepted.max(1) as f64,
        events_published,
    })
}

/// `entries-added` of a stream (0 when it does not exist yet).
async fn entries_added(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> anyhow::Result<u64> {
    let info: redis::Value = match redis::cmd("XINFO").arg("STREAM").arg(key).query_async(conn).await {
        Ok(info) => info,
        Err(_) => return Ok(0),
    };
    let pairs: Vec<(redis::Value, redis::Value)> = match info {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(items) => items.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
        _ => return Ok(0),
    };
    for (name, value) in pairs {
        if matches!(&name, redis::Value::BulkString(b) if b == b"entries-added")
            && let redis::Value::Int(n) = value
        {
            return Ok(u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(0)
}

struct Connection {
    config: IngestConfig,
    run_id: u128,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    latencies: Arc<parking_lot::Mutex<hdrhistogram::Histogram<u64>>>,
    interval: Option<Duration>,
    /// The `ts` of every report: the start of the run.
    ts: String,
}

impl Connection {
    async fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(error) = self.session().await
                && !self.stop.load(Ordering::Relaxed)
            {
                eprintln!("ingest connection: {error:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// One keep-alive connection until the end of the run or an error.
    async fn session(&self) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(&self.config.addr).await?;
        stream.set_nodelay(true)?;
        let mut out = Vec::with_capacity(4096);
        let mut input = Vec::with_capacity(16 * 1024);
        let mut sent_at = std::collections::VecDeque::new();
        let mut pace = self.interval.map(|i| {
            let mut t = tokio::time::interval(i);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut local = Vec::new();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping && sent_at.is_empty() {
                break;
            }
            if !stopping {
                out.clear();
                while sent_at.len() < self.config.pipeline.max(1) {
                    if let Some(pace) = pace.as_mut() {
                        if !sent_at.is_empty() {
                            break;
                        }
                        pace.tick().await;
                    }
                    let seq = self.counters.seq.fetch_add(1, Ordering::Relaxed);
                    self.request(&mut out, seq)?;
                    sent_at.push_back(Instant::now());
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                }
            }
            // Read at least one answer.
            let outcome = match read_response(&mut stream, &mut input).await {
                Ok(status) => status,
                Err(error) => {
                    // Everything in flight on this connection is lost.
                    self.counters.failures.fetch_add(sent_at.len() as u64, Ordering::Relaxed);
                    return Err(error);
                }
            };
            let Some(sent) = sent_at.pop_front() else { bail!("an answer to no request") };
            local.push(sent.elapsed().as_micros() as u64);
            if outcome == 202 {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                if self.counters.failures.load(Ordering::Relaxed) <= 5 {
                    eprintln!("ingest answered {outcome}");
                }
            }
            if local.len() >= 256 {
                let mut h = self.latencies.lock();
                for us in local.drain(..) {
                    let _ = h.record(us.max(1));
                }
            }
        }
        let mut h = self.latencies.lock();
        for us in local.drain(..) {
            let _ = h.record(us.max(1));
        }
        Ok(())
    }

    /// Appends the HTTP request of report `seq` to `out`.
    fn request(&self, out: &mut Vec<u8>, seq: u64) -> anyhow::Result<()> {
        let now = &self.ts;
        let body = format!(
            r#"{{"report_id":"bench-{}-{seq}","agent_id":"bench-{}","ts":"{now}","checks":[{{"name":"bench","level":"L1","status":"ok","metrics":{{"bseq":{seq}}}}}]}}"#,
            self.run_id,
            seq % self.config.agents.max(1),
        );
        write!(
            out,
            "POST /api/v1/reports HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.config.addr,
            self.config.api_key,
            body.len()
        )?;
        Ok(())
    }
}

/// Reads one response from `stream` (bytes already read are in `buf`,
/// which keeps what follows it): its status code.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).context("no status code")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                read_more(stream, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        bail!("ingest closed the connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// The report as one line for people.
pub fn summary(report: &IngestReport) -> String {
    let us = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
    format!(
        "accepted {}/{} ({:.0}/s), failures {}, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; CPU per report: ingest {} µs, \
         redis {} µs, load generator {:.1} µs; events published {}",
        report.accepted,
        report.sent,
        report.reports_per_sec,
        report.failures,
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        us(report.ingest_cpu_us_per_report),
        us(report.redis_cpu_us_per_report),
        report.loadgen_cpu_us_per_report,
        report.events_published.map_or("–".to_owned(), |n| n.to_string()),
    )
}
