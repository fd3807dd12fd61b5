//! The fleet: one task per simulated agent, posting its reports to
//! `POST /api/v1/reports` on a schedule, retrying with the same `report_id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use pulse_protocol::probe::Report;
use pulse_runtime::Shutdown;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::agent::SimAgent;

/// Attempts after the first for one report (timeouts, 5xx, 429, no
/// connection). The same `report_id` is sent each time, so a report that
/// did arrive is not counted twice by Pulse.
pub const MAX_RETRIES: u32 = 4;
/// Wait before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// What a fleet simulates and where it posts.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Pulse's address, such as `http://127.0.0.1:8080` (no trailing path).
    pub base_url: String,
    /// An API key with the `agent` role, sent as `Authorization: Bearer`.
    pub api_key: String,
    /// Number of agents.
    pub agents: usize,
    /// How often each agent reports.
    pub interval: Duration,
    /// Chance per report that a healthy agent starts failing an L3 check
    /// (which raises an alert; it recovers a few reports later).
    pub l3_failure_rate: f64,
    /// How many agents (the last ones) stop reporting after `silent_after`,
    /// so that the heartbeat checker takes them offline.
    pub silent_agents: usize,
    /// When the silent agents stop.
    pub silent_after: Duration,
    /// A key with the `publisher` role: when set, the fleet also posts a
    /// decision (`POST /api/v1/decisions`) when an L3 failure starts, as the
    /// deciding component would.
    pub publisher_key: Option<String>,
    /// Seed of the simulation: the same seed gives the same fleet.
    pub seed: u64,
    /// Longest wait for one HTTP answer before retrying.
    pub request_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".to_owned(),
            api_key: "demo-agent-key".to_owned(),
            agents: 30,
            interval: Duration::from_secs(2),
            l3_failure_rate: 0.02,
            silent_agents: 1,
            silent_after: Duration::from_secs(20),
            publisher_key: None,
            seed: 1,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a running fleet; read them any time with
/// [`snapshot`](Self::snapshot).
#[derive(Debug, Default)]
pub struct FleetStats {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    l3_failures: AtomicU64,
    decisions: AtomicU64,
    silenced: AtomicU64,
}

/// A copy of [`FleetStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Reports generated and posted (each once, however many retries).
    pub sent: u64,
    /// Answered 2xx as new reports.
    pub accepted: u64,
    /// Answered 2xx as duplicates: a retry of a report that had arrived.
    pub duplicates: u64,
    /// Extra attempts after timeouts, 5xx, 429 or connection errors.
    pub retries: u64,
    /// Refused with a 4xx (bad key, invalid report): not retried.
    pub rejected: u64,
    /// Given up after every retry failed.
    pub failed: u64,
    /// L3 failures started and reported (each raises an alert, resolved on
    /// recovery): counted once the report that starts one is answered, and
    /// then always followed by its decision, even during shutdown.
    pub l3_failures: u64,
    /// Decisions posted and accepted (with a publisher key).
    pub decisions: u64,
    /// Agents that went silent on purpose.
    pub silenced: u64,
}

impl std::fmt::Display for FleetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reports sent, {} accepted, {} duplicates, {} retries, {} rejected, {} failed; {} L3 failures, {} decisions, {} agents silent",
            self.sent,
            self.accepted,
            self.duplicates,
            self.retries,
            self.rejected,
            self.failed,
            self.l3_failures,
            self.decisions,
            self.silenced
        )
    }
}

impl FleetStats {
    pub fn snapshot(&self) -> FleetSummary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FleetSummary {
            sent: get(&self.sent),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            retries: get(&self.retries),
            rejected: get(&self.rejected),
            failed: get(&self.failed),
            l3_failures: get(&self.l3_failures),
            decisions: get(&self.decisions),
            silenced: get(&self.silenced),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How posting one report ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    Accepted {
        duplicate: bool,
    },
    /// A 4xx other than 429: retrying would not help.
    Rejected {
        status: u16,
        body: String,
    },
    /// Every attempt failed; the last error.
    Failed(String),
}

/// A simulated fleet of Probe agents.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: FleetConfig,
    url: String,
    decisions_url: String,
    client: reqwest::Client,
    stats: Arc<FleetStats>,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.interval.is_zero(), "the report interval must be more than zero");
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.l3_failure_rate),
            "the L3 failure rate is a probability between 0 and 1, not {}",
            config.l3_failure_rate
        );
        let client = reqwest::Client::builder().timeout(config.request_timeout).build()?;
        let base = config.base_url.trim_end_matches('/');
        let url = format!("{base}/api/v1/reports");
        let decisions_url = format!("{base}/api/v1/decisions");
        Ok(Self { inner: Arc::new(Inner { config, url, decisions_url, client, stats: Arc::default() }) })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<FleetStats> {
        self.inner.stats.clone()
    }

    /// Runs every agent until `shutdown` (silent agents stop earlier), then
    /// returns the totals. Agents start spread over one interval, so the
    /// load is even.
    pub async fn run(self, shutdown: Shutdown) -> FleetSummary {
        let config = &self.inner.config;
        // Report ids must differ from those of an earlier run with the same
        // seed, which the store may still remember as duplicates.
        let run = format!("{:x}", Utc::now().timestamp_millis());
        tracing::info!(
            agents = config.agents,
            interval = ?config.interval,
            l3_failure_rate = config.l3_failure_rate,
            silent_agents = config.silent_agents,
            url = %self.inner.url,
            "probe fleet starting"
        );
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for index in 0..config.agents {
            let agent = SimAgent::new(index, config.seed, &run, config.l3_failure_rate);
            let silent = index >= config.agents.saturating_sub(config.silent_agents);
            let offset = config.interval.mul_f64(index as f64 / config.agents as f64);
            tasks.spawn(self.clone().run_agent(agent, started + offset, silent, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
        let summary = self.inner.stats.snapshot();
        tracing::info!(%summary, "probe fleet stopped");
        summary
    }

    async fn run_agent(self, mut agent: SimAgent, start: Instant, silent: bool, shutdown: Shutdown) {
        let config = &self.inner.config;
        let stats = &self.inner.stats;
        let mut ticker = tokio::time::interval_at(start, config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let silent_at = start + config.silent_after;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if silent && Instant::now() >= silent_at {
                tracing::info!(agent_id = %agent.id(), "agent goes silent (simulated outage)");
                bump(&stats.silenced);
                return;
            }
            let was_failing = agent.failing_check().is_some();
            let report = agent.next_report(Utc::now());
            let new_failure = agent.failing_check().filter(|_| !was_failing);
            bump(&stats.sent);
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.post(&report) => outcome,
            };
            if let Some(check) = new_failure {
                tracing::debug!(agent_id = %agent.id(), check, "simulated L3 failure starts");
                bump(&stats.l3_failures);
            }
            if let (Some(check), Some(key)) = (new_failure, &config.publisher_key) {
                let decision =
                    crate::agent::decision_for(agent.id(), check, format!("{}-decision", report.report_id), Utc::now());
                // Not cut short by shutdown: a failure once reported gets
                // its decision (one request; its retries are bounded), so
                // the counts agree whenever the fleet stops.
                match self.post_json(&self.inner.decisions_url, key, &decision, &decision.decision_id).await {
                    PostOutcome::Accepted { .. } => bump(&stats.decisions),
                    other => tracing::warn!(agent_id = %agent.id(), outcome = ?other, "decision not accepted"),
                }
            }
            match outcome {
                PostOutcome::Accepted { duplicate: false } => bump(&stats.accepted),
                PostOutcome::Accepted { duplicate: true } => bump(&stats.duplicates),
                PostOutcome::Rejected { status, body } => {
                    bump(&stats.rejected);
                    tracing::warn!(agent_id = %agent.id(), status, %body, "report refused");
                }
                PostOutcome::Failed(error) => {
                    bump(&stats.failed);
                    tracing::warn!(agent_id = %agent.id(), %error, "report not delivered");
                }
            }
        }
    }

    /// Posts one report, retrying timeouts, 5xx, 429 and connection errors
    /// with the same body (and so the same `report_id`) up to
    /// [`MAX_RETRIES`] times.
    pub async fn post(&self, report: &Report) -> PostOutcome {
        self.post_json(&self.inner.url, &self.inner.config.api_key, report, &report.report_id).await
    }

    /// Posts `body` to `url` with `key`, retrying as [`post`](Self::post)
    /// does; `id` names it in logs.
    async fn post_json(&self, url: &str, key: &str, body: &impl serde::Serialize, id: &str) -> PostOutcome {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let error = match self.post_once(url, key, body).await {
                Ok(outcome) => return outcome,
                Err(error) => error,
            };
            if attempt >= MAX_RETRIES {
                return PostOutcome::Failed(error);
            }
            attempt += 1;
            bump(&self.inner.stats.retries);
            tracing::debug!(id, attempt, %error, "retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// One attempt: `Err` means it is worth retrying.
    async fn post_once(&self, url: &str, key: &str, body: &impl serde::Serialize) -> Result<PostOutcome, String> {
        let response =
            self.inner.client.post(url).bearer_auth(key).json(body).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let duplicate = body.get("duplicate").and_then(serde_json::Value::as_bool).unwrap_or(false);
            return Ok(PostOutcome::Accepted { duplicate });
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(format!("HTTP {status}"));
        }
        let body = response.text().await.unwrap_or_default();
        Ok(PostOutcome::Rejected { status: status.as_u16(), body })
    }
}
