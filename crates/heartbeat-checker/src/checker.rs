//! The scan loop: find agents silent past the timeout and take them offline.

use std::sync::Arc;
use std::time::Duration;

use pulse_protocol::probe::AgentStatusChange;
use pulse_protocol::timestamp;
use pulse_runtime::Shutdown;
use pulse_store::{Store, StoreError};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Settings of the checker (`[checker]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckerSettings {
    /// An agent not heard from for this long goes offline. Default 5 minutes.
    #[serde(deserialize_with = "pulse_runtime::duration::deserialize")]
    pub timeout: Duration,
    /// How often to scan. An agent is announced offline no later than
    /// `timeout + scan_interval` after it was last heard from (while the
    /// store is reachable). Default 5 seconds.
    #[serde(deserialize_with = "pulse_runtime::duration::deserialize")]
    pub scan_interval: Duration,
    /// Agents taken offline per store call: bounds the work of one atomic
    /// step in Redis. A scan repeats batches until one is not full.
    /// Default 500.
    pub batch: usize,
    /// Longest wait between retries while the store is unavailable; retries
    /// start at 100 ms and double up to this, each with a random jitter of up
    /// to as much again (the shared schedule, `pulse_bus::backoff`). Default
    /// 10 seconds.
    #[serde(deserialize_with = "pulse_runtime::duration::deserialize")]
    pub max_backoff: Duration,
}

impl Default for CheckerSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5 * 60),
            scan_interval: Duration::from_secs(5),
            batch: 500,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the checker has done so far, for readiness and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckerStatus {
    /// Scans completed without error.
    pub scans: u64,
    /// Scans that failed.
    pub failures: u64,
    /// Agents this checker took offline.
    pub transitions: u64,
    /// The error of the latest scan, cleared by the next successful one.
    pub last_error: Option<String>,
}

/// First wait after a failed scan.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Takes agents that went silent offline, exactly once across any number of
/// replicas: the exactly-once part is [`Store::mark_silent_offline`]'s
/// compare-and-set, so replicas need no coordination of their own.
pub struct Checker {
    store: Arc<dyn Store>,
    settings: CheckerSettings,
    status: watch::Sender<CheckerStatus>,
}

impl Checker {
    pub fn new(store: Arc<dyn Store>, settings: CheckerSettings) -> Self {
        describe_metrics();
        Self { store, settings, status: watch::Sender::new(CheckerStatus::default()) }
    }

    /// Follows what the checker does; the value changes after every scan.
    pub fn status(&self) -> watch::Receiver<CheckerStatus> {
        self.status.subscribe()
    }

    /// One scan: takes every online agent last heard from more than
    /// `timeout` ago offline, in batches until a batch is not full, and
    /// returns the transitions this checker made (another replica may have
    /// made some of the others).
    pub async fn scan(&self) -> Result<Vec<AgentStatusChange>, StoreError> {
        let started = Instant::now();
        let timeout = chrono::TimeDelta::from_std(self.settings.timeout).unwrap_or(chrono::TimeDelta::MAX);
        // One deadline for the whole scan, so that it ends even while agents
        // keep going silent.
        let deadline = timestamp::now().checked_sub_signed(timeout).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let batch = self.settings.batch.max(1);
        let mut changes = Vec::new();
        loop {
            let made = self.store.mark_silent_offline(deadline, batch).await?;
            metrics::counter!("pulse_agent_transitions_total", "to" => "offline").increment(made.len() as u64);
            for change in &made {
                // `reason`, not `message`: JSON lines already carry the event's
                // text under `message`.
                tracing::info!(agent_id = %change.agent_id, reason = %change.message, "agent offline");
            }
            // Counted per batch: a scan cut short still made these.
            self.status.send_modify(|s| s.transitions += made.len() as u64);
            let full = made.len() >= batch;
            changes.extend(made);
            if !full {
                break;
            }
        }
        let counts = self.store.counts().await?;
        metrics::gauge!("pulse_agents", "status" => "online").set(counts.online as f64);
        metrics::gauge!("pulse_agents", "status" => "offline").set(counts.offline as f64);
        metrics::histogram!("pulse_heartbeat_scan_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(changes)
    }

    /// Scans every `scan_interval` until `shutdown`. While the store is
    /// unavailable, retries with capped exponential backoff, logging once
    /// when the outage starts and once when it ends; the first scan after
    /// it catches up with everything that went silent meanwhile.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.settings.scan_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut trouble: Option<Trouble> = None;
        loop {
            let retry_in = trouble.as_ref().filter(|t| t.unavailable).map(|t| t.retry);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick(), if retry_in.is_none() => {}
                () = tokio::time::sleep(retry_in.unwrap_or_default()), if retry_in.is_some() => {}
            }
            let result = tokio::select! {
                biased;
                // Stopping mid-scan loses nothing: each batch is atomic, and
                // the next scan by any replica finishes the work.
                () = shutdown.cancelled() => break,
                result = self.scan() => result,
            };
            match result {
                Ok(changes) => {
                    if let Some(t) = trouble.take() {
                        tracing::info!(
                            after = ?t.since.elapsed(),
                            caught_up = changes.len(),
                            "heartbeat checker is scanning again"
                        );
                        ticker.reset();
                    }
                    self.status.send_modify(|s| {
                        s.scans += 1;
                        s.last_error = None;
                    });
                }
                Err(error) => {
                    metrics::counter!("pulse_heartbeat_scan_failures_total").increment(1);
                    // With its sources: the store's error names what failed,
                    // its source why.
                    let message = pulse_bus::error_chain(&error);
                    let unavailable = error.is_unavailable();
                    match &mut trouble {
                        None => {
                            if unavailable {
                                tracing::warn!(error = %message, "store unavailable; heartbeat checker retrying with backoff");
                            } else {
                                tracing::error!(error = %message, "heartbeat scan failed; retrying at the next interval");
                            }
                            let mut delays = Box::new(pulse_bus::backoff(INITIAL_BACKOFF, self.settings.max_backoff));
                            let retry = delays.next().unwrap_or(INITIAL_BACKOFF);
                            trouble = Some(Trouble {
                                since: Instant::now(),
                                unavailable,
                                message: message.clone(),
                                retry,
                                delays,
                            });
                        }
                        Some(t) => {
                            // Log a new kind of failure, not every retry.
                            if t.message != message && !(t.unavailable && unavailable) {
                                tracing::error!(error = %message, "heartbeat scan failed");
                            }
                            t.unavailable = unavailable;
                            t.message = message.clone();
                            t.retry = t.delays.next().unwrap_or(self.settings.max_backoff);
                        }
                    }
                    self.status.send_modify(|s| {
                        s.failures += 1;
                        s.last_error = Some(message);
                    });
                }
            }
        }
        tracing::debug!("heartbeat checker stopped");
    }
}

/// Runs a [`Checker`] over `store` until `shutdown`.
pub async fn run(store: Arc<dyn Store>, settings: CheckerSettings, shutdown: Shutdown) {
    Checker::new(store, settings).run(shutdown).await
}

/// A run of failed scans.
struct Trouble {
    since: Instant,
    /// The latest failure was the store being unreachable (retry soon)
    /// rather than an error (retry at the next interval).
    unavailable: bool,
    message: String,
    /// Wait before the next retry while unavailable.
    retry: Duration,
    /// The waits after it.
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

fn describe_metrics() {
    metrics::describe_gauge!("pulse_agents", "Agents by status (online, offline), as of the latest scan.");
    metrics::describe_counter!(
        "pulse_agent_transitions_total",
        "Agents this checker took offline (label to=\"offline\")."
    );
    metrics::describe_histogram!(
        "pulse_heartbeat_scan_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of one scan for silent agents."
    );
    metrics::describe_counter!("pulse_heartbeat_scan_failures_total", "Scans that failed (store unavailable, errors).");
}
