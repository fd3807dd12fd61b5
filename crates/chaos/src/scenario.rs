//! The scenarios: one fault each, injected into a fresh stack under load.
//!
//! A run: start the stack; connect the clients (spread over the gateways)
//! and wait until each has subscribed to every channel; start one publisher
//! per channel; after a warm-up, for each round: send some clients away (a
//! sleeping laptop: they resume from history later), inject the fault (and
//! what heals it, where something must), bring the clients back, and wait
//! until the services have recovered by themselves: every `/readyz` answers
//! 200 and every client has received an event published after the fault.
//! Then stop publishing, let the clients catch up, and account.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use crate::accounting::{self, Acknowledged, Republished, Seen, Verdict};
use crate::client::{self, Client, Wanted};
use crate::publisher::{self, PublishTarget, Publisher};
use crate::stack::{API_KEY, Stack, StackOptions};

/// A fault the suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `CLIENT KILL TYPE pubsub`: every pub/sub connection dropped.
    PubsubKill,
    /// Every existing connection between the gateways and Redis stops
    /// moving bytes but stays open (a partition; new connections work).
    PubsubFreeze,
    /// Redis killed and started again, empty (no persistence, a failover to
    /// an empty replica).
    RedisRestartEmpty,
    /// `CLIENT PAUSE 3000 WRITE`, what a managed failover does.
    WritePause,
    /// One gateway SIGKILLed (then restarted), then the other drained with
    /// SIGTERM (then restarted).
    GatewayKillDrain,
    /// Standalone `pulse` on its memory bus, restarted.
    StandaloneRestart,
}

impl Fault {
    /// Every fault, in the order the suite runs them.
    pub const ALL: [Self; 6] = [
        Self::PubsubKill,
        Self::PubsubFreeze,
        Self::RedisRestartEmpty,
        Self::WritePause,
        Self::GatewayKillDrain,
        Self::StandaloneRestart,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::PubsubKill => "pubsub-kill",
            Self::PubsubFreeze => "pubsub-freeze",
            Self::RedisRestartEmpty => "redis-restart-empty",
            Self::WritePause => "write-pause",
            Self::GatewayKillDrain => "gateway-kill-drain",
            Self::StandaloneRestart => "standalone-restart",
        }
    }

    /// The fault named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    fn standalone(self) -> bool {
        self == Self::StandaloneRestart
    }
}

/// How big and long a run is.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub stack: StackOptions,
    /// Channels, each with its own publisher.
    pub channels: usize,
    /// Events per second per channel.
    pub rate: f64,
    /// Clients, each subscribed to every channel.
    pub clients: usize,
    /// Of those, how many go away around each fault and resume after it.
    pub away: usize,
    /// Load before the first fault.
    pub warmup: Duration,
    /// Times the fault is injected.
    pub rounds: usize,
    /// Load between rounds (after recovery).
    pub between: Duration,
    /// Load after the last round.
    pub tail: Duration,
    /// How long away clients stay away before the fault.
    pub away_lead: Duration,
    /// Services must have recovered within this after each fault.
    pub recovery_deadline: Duration,
    /// Clients must have caught up within this after the last publish.
    pub drain_deadline: Duration,
    /// `write-pause`: publishers posting back-to-back, each to its own
    /// channel, as the pause begins, so that some are between steps of a
    /// publish when it does. Judged from the channels' histories.
    pub burst_publishers: usize,
    /// Publish with idempotency keys (off only to see the suite catch the
    /// duplicates a careless publisher's retries make).
    pub idempotency_keys: bool,
}

impl RunOptions {
    /// The short form `scripts/test` runs: each scenario about 15–25 s when
    /// it passes.
    pub fn short(stack: StackOptions) -> Self {
        Self {
            stack,
            channels: 2,
            rate: 10.0,
            clients: 6,
            away: 2,
            warmup: Duration::from_secs(2),
            rounds: 1,
            between: Duration::from_secs(2),
            tail: Duration::from_secs(2),
            away_lead: Duration::from_secs(1),
            recovery_deadline: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(20),
            burst_publishers: 32,
            idempotency_keys: true,
        }
    }

    /// The full form, by hand: more load, three rounds of each fault.
    pub fn full(stack: StackOptions) -> Self {
        Self {
            stack,
            channels: 4,
            rate: 25.0,
            clients: 16,
            away: 4,
            warmup: Duration::from_secs(5),
            rounds: 3,
            between: Duration::from_secs(5),
            tail: Duration::from_secs(5),
            away_lead: Duration::from_secs(2),
            recovery_deadline: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(30),
            burst_publishers: 64,
            idempotency_keys: true,
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub passed: bool,
    /// Events acknowledged with a 2xx, all channels.
    pub acknowledged: u64,
    /// Deliveries owed: acknowledged events × clients.
    pub owed: u64,
    pub delivered: u64,
    pub silent_losses: u64,
    pub told: u64,
    pub duplicate_deliveries: u64,
    /// Acknowledged or delivered events seen under two ids.
    pub duplicate_publishes: u64,
    /// Events republished by a retry after their history (and idempotency
    /// key) was lost: under ids of different epochs. Not a failure.
    pub republished_across_epochs: u64,
    pub out_of_order: u64,
    /// Delivered events whose publish was given up on.
    pub unacknowledged_delivered: u64,
    /// `recovered: false` and `gap` notices, all clients.
    pub notices: u64,
    /// Publishes given up after every retry.
    pub given_up: u64,
    /// Attempts that failed or answered 5xx/429 and were retried.
    pub retried_attempts: u64,
    /// 2xx answers with `duplicate: true`.
    pub duplicate_answers: u64,
    /// Per round, seconds until recovered (`None`: not within the deadline).
    pub recovery_secs: Vec<Option<f64>>,
    /// Client connections opened beyond the first ones.
    pub reconnects: u64,
    pub elapsed_secs: f64,
    /// Why it failed.
    pub failures: Vec<String>,
    /// Per client and channel, what went wrong.
    pub details: Vec<String>,
    /// Where the services' logs are.
    pub logs: PathBuf,
}

impl ScenarioReport {
    /// The one-line summary.
    pub fn line(&self) -> String {
        let recovered = if self.recovery_secs.is_empty() {
            "-".to_string()
        } else {
            self.recovery_secs
                .iter()
                .map(|r| r.map_or_else(|| "NO".to_string(), |s| format!("{s:.1}s")))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{:<20} {}  acked {}  delivered {}/{}  silent-losses {}  duplicate-deliveries {}  duplicate-publishes {}  \
             out-of-order {}  told {}  recovered {}  ({:.0}s)",
            self.name,
            if self.passed { "PASS" } else { "FAIL" },
            self.acknowledged,
            self.delivered,
            self.owed,
            self.silent_losses,
            self.duplicate_deliveries,
            self.duplicate_publishes,
            self.out_of_order,
            self.told,
            recovered,
            self.elapsed_secs,
        )
    }
}

/// Runs one scenario on a fresh stack. An `Err` means the run itself could
/// not be carried out (a service did not start).
pub async fn run(fault: Fault, options: &RunOptions) -> anyhow::Result<ScenarioReport> {
    let started = Instant::now();
    let mut stack_options = options.stack.clone();
    stack_options.dir = options.stack.dir.join(fault.name());
    let mut stack = if fault.standalone() {
        Stack::standalone(&stack_options).await?
    } else {
        Stack::distributed(&stack_options).await?
    };
    let outcome = drive(fault, options, &mut stack).await;
    stack.stop().await;
    let mut report = outcome?;
    report.name = fault.name().into();
    report.logs = stack_options.dir;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

struct Load {
    http: reqwest::Client,
    base: String,
    run: String,
    /// `write-pause`'s burst publishers, by channel (nobody subscribes).
    burst: Vec<(String, Publisher)>,
    idempotency_keys: bool,
    channels: Vec<String>,
    clients: Vec<Client>,
    publishers: Vec<Publisher>,
    publishing: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// Aborts the tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn drive(fault: Fault, options: &RunOptions, stack: &mut Stack) -> anyhow::Result<ScenarioReport> {
    let run_id = format!("{}-{}", fault.name(), std::process::id());
    let channels: Vec<String> = (0..options.channels.max(1)).map(|i| format!("chaos.{i}")).collect();
    let urls = stack.ws_urls();
    let clients: Vec<Client> =
        (0..options.clients.max(1)).map(|i| client::start(urls.clone(), i, channels.clone(), run_id.clone())).collect();
    // Should the run break off, nothing of its load outlives it.
    let mut tasks = AbortOnDrop(clients.iter().map(|c| c.task.abort_handle()).collect());
    pulse_testkit::wait_until("every client has subscribed", Duration::from_secs(60), || async {
        clients.iter().all(|c| c.state.subscribed.load(std::sync::atomic::Ordering::SeqCst))
    })
    .await?;

    let http = reqwest::Client::new();
    let (stop, stop_rx) = watch::channel(false);
    let base = stack.publish_base()?;
    let mut publishers = Vec::new();
    let mut publishing = Vec::new();
    for channel in &channels {
        let target = PublishTarget {
            base: base.clone(),
            api_key: API_KEY.into(),
            channel: channel.clone(),
            run: run_id.clone(),
            rate: options.rate,
            idempotency_keys: options.idempotency_keys,
        };
        let (publisher, task) = publisher::start(http.clone(), target, stop_rx.clone());
        tasks.0.push(task.abort_handle());
        publishers.push(publisher);
        publishing.push(task);
    }
    let burst = if fault == Fault::WritePause {
        (0..options.burst_publishers).map(|i| (format!("chaos.burst.{i}"), Publisher::new())).collect()
    } else {
        Vec::new()
    };
    let mut load = Load {
        http: http.clone(),
        base: base.clone(),
        run: run_id.clone(),
        burst,
        idempotency_keys: options.idempotency_keys,
        channels,
        clients,
        publishers,
        publishing,
        stop,
    };
    let mut report = ScenarioReport::default();
    tokio::time::sleep(options.warmup).await;

    let away: Vec<usize> = (0..load.clients.len()).rev().take(options.away.min(load.clients.len() - 1)).collect();
    for round in 0..options.rounds.max(1) {
        for &i in &away {
            load.clients[i].wanted.send_replace(Wanted::Away);
        }
        tokio::time::sleep(options.away_lead).await;
        inject(fault, stack, &load)
            .await
            .with_context(|| format!("injecting {} (round {})", fault.name(), round + 1))?;
        for &i in &away {
            load.clients[i].wanted.send_replace(Wanted::Connected);
        }
        let recovered = recovery(stack, &load, options.recovery_deadline).await;
        if let Err(why) = &recovered {
            report.failures.push(format!(
                "round {}: not recovered within {:?}: {why}",
                round + 1,
                options.recovery_deadline
            ));
        }
        report.recovery_secs.push(recovered.ok().map(|d| d.as_secs_f64()));
        if round + 1 < options.rounds {
            tokio::time::sleep(options.between).await;
        }
    }
    tokio::time::sleep(options.tail).await;

    // Stop publishing; the event in flight finishes (or is given up).
    load.stop.send_replace(true);
    for task in load.publishing.drain(..) {
        let _ = task.await;
    }
    let caught_up = pulse_testkit::wait_until("every client has the last event", options.drain_deadline, || async {
        load.clients.iter().all(|c| {
            load.channels.iter().zip(&load.publishers).all(|(ch, p)| c.state.high(ch) >= p.last_acknowledged())
        })
    })
    .await;
    if caught_up.is_err() {
        report.details.push(format!("clients still missing the last events after {:?}", options.drain_deadline));
    }
    for client in &load.clients {
        client.wanted.send_replace(Wanted::Stop);
    }
    for client in load.clients.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut client.task).await;
    }
    let mut histories = Vec::new();
    for channel in &load.channels {
        match history(&http, &base, channel, &run_id).await {
            Ok(log) => histories.push(log),
            Err(err) => {
                report
                    .details
                    .push(format!("{channel}: history not read ({err:#}); duplicates judged from clients only"));
                histories.push(Vec::new());
            }
        }
    }
    account(&load, &histories, &mut report);
    for (channel, publisher) in &load.burst {
        match history(&http, &base, channel, &run_id).await {
            Ok(log) => account_burst(channel, publisher, &log, &mut report),
            Err(err) => report.failures.push(format!("{channel}: history not read: {err:#}")),
        }
    }
    conclude(&mut report);
    let not_ready = stack.not_ready().await;
    if !not_ready.is_empty() {
        report.failures.push(format!("not ready at the end: {}", not_ready.join(", ")));
    }
    // Failures found before the counts (recovery) come first.
    report.passed = report.failures.is_empty();
    Ok(report)
}

async fn inject(fault: Fault, stack: &mut Stack, load: &Load) -> anyhow::Result<()> {
    match fault {
        Fault::PubsubKill => {
            let killed = stack.redis()?.kill_pubsub_clients().await?;
            anyhow::ensure!(killed > 0, "no pub/sub connection to kill");
        }
        Fault::PubsubFreeze => {
            // For good: the old links never come back (the partitioned
            // primary); new connections work.
            for proxy in &stack.proxies {
                proxy.freeze();
            }
        }
        Fault::RedisRestartEmpty => {
            stack.redis.as_mut().context("no Redis")?.restart().await?;
        }
        Fault::WritePause => {
            // Publishers posting back-to-back as the pause begins.
            let (halt, halted) = watch::channel(false);
            let mut bursting = Vec::new();
            for (channel, publisher) in &load.burst {
                let target = PublishTarget {
                    base: load.base.clone(),
                    api_key: API_KEY.into(),
                    channel: channel.clone(),
                    run: load.run.clone(),
                    rate: 0.0,
                    idempotency_keys: load.idempotency_keys,
                };
                let (publisher, http, halted) = (publisher.clone(), load.http.clone(), halted.clone());
                bursting.push(tokio::spawn(async move {
                    while !*halted.borrow() {
                        publisher.publish_next(&http, &target).await;
                    }
                }));
            }
            let _guard = AbortOnDrop(bursting.iter().map(tokio::task::JoinHandle::abort_handle).collect());
            tokio::time::sleep(Duration::from_millis(300)).await;
            let paused = Instant::now();
            let _: String = stack.redis()?.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]).await?;
            halt.send_replace(true);
            // Each finishes the publish in flight (retrying past the pause).
            for task in bursting {
                let _ = task.await;
            }
            tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed())).await;
        }
        Fault::GatewayKillDrain => {
            let gateway = |c: &Client| c.state.gateway.load(std::sync::atomic::Ordering::SeqCst);
            stack.gateways[0].kill().await?;
            // Its clients resume on the other gateway.
            pulse_testkit::wait_until("clients of the killed gateway moved", Duration::from_secs(30), || async {
                load.clients.iter().all(|c| {
                    *c.wanted.borrow() != Wanted::Connected
                        || (gateway(c) == 1 && c.state.subscribed.load(std::sync::atomic::Ordering::SeqCst))
                })
            })
            .await?;
            stack.gateways[0].start().await?;
            // Drain the other: its clients resume on the restarted one.
            let exited = stack.gateways[1].terminate(Duration::from_secs(20)).await?;
            anyhow::ensure!(exited, "gateway-1 did not exit within 20 s of SIGTERM");
            stack.gateways[1].start().await?;
        }
        Fault::StandaloneRestart => {
            let pulse = stack.standalone.as_mut().context("no standalone")?;
            let exited = pulse.terminate(Duration::from_secs(20)).await?;
            anyhow::ensure!(exited, "pulse did not exit within 20 s of SIGTERM");
            pulse.start().await?;
        }
    }
    Ok(())
}

/// Waits until every service is ready and every client has received, on
/// every channel, an event published after now. Returns how long it took,
/// or what was still wrong at the deadline.
async fn recovery(stack: &Stack, load: &Load, deadline: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    // The event in flight may have been published before the fault ended.
    let marks: Vec<u64> = load.publishers.iter().map(|p| p.next_number() + 1).collect();
    loop {
        let not_ready = stack.not_ready().await;
        let behind = load
            .clients
            .iter()
            .filter(|c| load.channels.iter().zip(&marks).any(|(ch, &mark)| c.state.high(ch) < mark))
            .count();
        if not_ready.is_empty() && behind == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= deadline {
            let mut why = Vec::new();
            if !not_ready.is_empty() {
                why.push(format!("not ready: {}", not_ready.join(", ")));
            }
            if behind > 0 {
                why.push(format!("{behind} of {} clients got no new event", load.clients.len()));
            }
            return Err(why.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The load's events in `channel`'s history as ingest serves it now
/// (`GET /api/v1/channels/{channel}/history`, page by page from the start):
/// one more witness of a duplicate publish.
async fn history(http: &reqwest::Client, base: &str, channel: &str, run: &str) -> anyhow::Result<Vec<Seen>> {
    #[derive(serde::Deserialize)]
    struct Page {
        events: Vec<serde_json::Value>,
        next: String,
    }
    let mut seen = Vec::new();
    let mut after = "0-0".to_string();
    for _ in 0..1000 {
        let url = format!("{base}/api/v1/channels/{channel}/history");
        let page: Page = http
            .get(&url)
            .query(&[("after", after.as_str()), ("limit", "1000")])
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page.events.is_empty() || page.next == after {
            break;
        }
        for event in &page.events {
            let tick = event.get("data").and_then(|d| serde_json::from_value::<publisher::Tick>(d.clone()).ok());
            if let (Some(id), Some(tick)) = (event.get("id").and_then(serde_json::Value::as_str), tick)
                && tick.run == run
            {
                seen.push(Seen::Event { n: tick.n, id: id.to_string() });
            }
        }
        after = page.next;
    }
    Ok(seen)
}

fn account(load: &Load, histories: &[Vec<Seen>], report: &mut ScenarioReport) {
    let mut totals = Verdict::default();
    for ((channel, publisher), history) in load.channels.iter().zip(&load.publishers).zip(histories) {
        let outcome = publisher.outcome.lock();
        let acknowledged: &Acknowledged = &outcome.acknowledged;
        report.acknowledged += acknowledged.len() as u64;
        report.given_up += outcome.given_up;
        report.retried_attempts += outcome.retried_attempts;
        report.duplicate_answers += outcome.duplicate_answers;
        if outcome.rejected > 0 {
            report.failures.push(format!(
                "{channel}: {} publishes rejected ({})",
                outcome.rejected,
                outcome.first_rejection.as_deref().unwrap_or("")
            ));
        }
        let logs: Vec<Vec<Seen>> =
            load.clients.iter().map(|c| c.state.seen.lock().get(channel).cloned().unwrap_or_default()).collect();
        for (i, log) in logs.iter().enumerate() {
            let v = accounting::verdict(acknowledged, log);
            if !v.is_truthful() {
                report.details.push(format!(
                    "client {i} on {channel}: {} silent losses (n {}), {} duplicate deliveries, {} out of order, \
                     {} told, {} notices",
                    v.silent.len(),
                    summarize(&v.silent),
                    v.duplicate_deliveries,
                    v.out_of_order,
                    v.told,
                    v.notices,
                ));
            }
            totals.add(&v);
        }
        let witnesses = logs.iter().map(Vec::as_slice).chain([history.as_slice()]);
        let found = accounting::duplicate_publishes(acknowledged, witnesses);
        count_republished(channel, &found, report);
    }
    report.owed = totals.acknowledged;
    report.delivered = totals.delivered;
    report.told = totals.told;
    report.silent_losses = totals.silent.len() as u64;
    report.duplicate_deliveries = totals.duplicate_deliveries;
    report.out_of_order = totals.out_of_order;
    report.unacknowledged_delivered = totals.unacknowledged;
    report.notices = totals.notices;
    report.reconnects = load
        .clients
        .iter()
        .map(|c| c.state.connections.load(std::sync::atomic::Ordering::SeqCst).saturating_sub(1))
        .sum();
}

/// A burst channel, from its history: every acknowledged event in it once.
/// One missing is lost for good and nobody is told (a resume would answer
/// `recovered: true`): a silent loss.
fn account_burst(channel: &str, publisher: &Publisher, history: &[Seen], report: &mut ScenarioReport) {
    let outcome = publisher.outcome.lock();
    let acknowledged = &outcome.acknowledged;
    report.acknowledged += acknowledged.len() as u64;
    report.given_up += outcome.given_up;
    report.retried_attempts += outcome.retried_attempts;
    report.duplicate_answers += outcome.duplicate_answers;
    let present: std::collections::HashSet<u64> =
        history.iter().filter_map(|s| if let Seen::Event { n, .. } = s { Some(*n) } else { None }).collect();
    let missing: Vec<u64> = acknowledged.keys().copied().filter(|n| !present.contains(n)).collect();
    if !missing.is_empty() {
        report.silent_losses += missing.len() as u64;
        report.details.push(format!(
            "{channel}: {} acknowledged events not in history (n {})",
            missing.len(),
            summarize(&missing)
        ));
    }
    let found = accounting::duplicate_publishes(acknowledged, [history]);
    count_republished(channel, &found, report);
}

fn count_republished(channel: &str, found: &Republished, report: &mut ScenarioReport) {
    report.duplicate_publishes += found.twice.len() as u64;
    report.republished_across_epochs += found.across_epochs.len() as u64;
    if !found.twice.is_empty() {
        let shown: BTreeMap<_, _> = found.twice.iter().take(5).collect();
        report.details.push(format!("{channel}: {} events published twice, e.g. {shown:?}", found.twice.len()));
    }
}

/// The failures the counts make.
fn conclude(report: &mut ScenarioReport) {
    if report.acknowledged == 0 {
        report.failures.push("no publish was acknowledged".into());
    }
    if report.silent_losses > 0 {
        report.failures.push(format!("{} silent losses", report.silent_losses));
    }
    if report.duplicate_deliveries > 0 {
        report.failures.push(format!("{} duplicate deliveries", report.duplicate_deliveries));
    }
    if report.duplicate_publishes > 0 {
        report.failures.push(format!("{} duplicate publishes", report.duplicate_publishes));
    }
    if report.out_of_order > 0 {
        report.failures.push(format!("{} deliveries out of order", report.out_of_order));
    }
}

/// `1-4, 9, 12-13` for a sorted list of numbers (at most 8 ranges shown).
pub fn summarize(ns: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &n in ns {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => ranges.push((n, n)),
        }
    }
    let mut parts: Vec<String> =
        ranges.iter().take(8).map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    if ranges.len() > 8 {
        parts.push("…".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()), Some(fault));
        }
        assert_eq!(Fault::parse("nope"), None);
    }

    #[test]
    fn summarizes_numbers_as_ranges() {
        assert_eq!(summarize(&[1, 2, 3, 4, 9, 12, 13]), "1-4, 9, 12-13");
        assert_eq!(summarize(&[]), "");
        let many: Vec<u64> = (0..20).map(|i| i * 2).collect();
        assert!(summarize(&many).ends_with('…'));
    }
}
