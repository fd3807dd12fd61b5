//! A careful publisher: one per channel, posting to ingest's publish API at
//! a steady rate, one event after another, each with its own idempotency
//! key, retrying with the same key on 5xx, 408, 409, 425, 429, timeouts and
//! connection errors (bounded), and recording what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::accounting::Acknowledged;

/// The event type of every load event.
pub const EVENT_TYPE: &str = "chaos.tick";

/// Attempts per event before the publisher gives up on it.
pub const MAX_ATTEMPTS: u32 = 10;

/// Longest wait for one attempt's answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The data of a load event: who published it and its number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The run, so that events of another run are never counted.
    pub run: String,
    /// The publisher's number of this event on its channel, from 1.
    pub n: u64,
}

/// What one channel's publisher did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Acknowledged events.
    pub acknowledged: Acknowledged,
    /// Events given up on after [`MAX_ATTEMPTS`] (they may still have been
    /// published).
    pub given_up: u64,
    /// Answers that invited a retry (5xx, 429) and failed attempts
    /// (timeouts, connection errors).
    pub retried_attempts: u64,
    /// 2xx answers saying `duplicate: true` (a retry of a publish that had
    /// gone through).
    pub duplicate_answers: u64,
    /// Answers that are the publisher's fault (4xx other than 429): the run
    /// is broken, not the server.
    pub rejected: u64,
    /// The first rejection, for the report.
    pub first_rejection: Option<String>,
}

/// A publisher of one channel.
#[derive(Clone)]
pub struct Publisher {
    /// What it did so far.
    pub outcome: Arc<Mutex<Outcome>>,
    /// The number the next event will get.
    pub next: Arc<AtomicU64>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}

impl Publisher {
    /// A publisher that has published nothing yet.
    pub fn new() -> Self {
        Self { outcome: Arc::default(), next: Arc::new(AtomicU64::new(1)) }
    }

    /// Publishes the next event now (with its retries), as the steady
    /// publisher does on each tick.
    pub async fn publish_next(&self, http: &reqwest::Client, target: &PublishTarget) {
        let url = format!("{}/api/v1/publish", target.base.trim_end_matches('/'));
        let n = self.next.load(Ordering::SeqCst);
        publish_one(http, &url, target, n, self).await;
        self.next.store(n + 1, Ordering::SeqCst);
    }

    /// The highest acknowledged number, 0 if none.
    pub fn last_acknowledged(&self) -> u64 {
        self.outcome.lock().acknowledged.keys().next_back().copied().unwrap_or(0)
    }

    /// Numbers from this one on are published after now.
    pub fn next_number(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
}

#[derive(Serialize)]
struct Request<'a> {
    channel: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a Tick,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

#[derive(Deserialize)]
struct Published {
    id: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

/// Where and how fast to publish.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    /// Base URL of ingest (or standalone), `http://127.0.0.1:PORT`.
    pub base: String,
    pub api_key: String,
    pub channel: String,
    pub run: String,
    /// Events per second.
    pub rate: f64,
    /// Send an idempotency key (a careful publisher does; without one, a
    /// retry after an unknown outcome may publish twice, which the suite
    /// then reports).
    pub idempotency_keys: bool,
}

/// Starts publishing until `stop` turns true; the task ends once the event
/// in flight is acknowledged or given up.
pub fn start(
    http: reqwest::Client,
    target: PublishTarget,
    stop: watch::Receiver<bool>,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let publisher = Publisher::new();
    let task = tokio::spawn(run(http, target, publisher.clone(), stop));
    (publisher, task)
}

async fn run(http: reqwest::Client, target: PublishTarget, publisher: Publisher, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / target.rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *stop.borrow() {
            return;
        }
        publisher.publish_next(&http, &target).await;
    }
}

async fn publish_one(http: &reqwest::Client, url: &str, target: &PublishTarget, n: u64, publisher: &Publisher) {
    let tick = Tick { run: target.run.clone(), n };
    let key = format!("{}.{}.{n}", target.run, target.channel);
    let body = Request {
        channel: &target.channel,
        kind: EVENT_TYPE,
        data: &tick,
        idempotency_key: target.idempotency_keys.then_some(key.as_str()),
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = http.post(url).bearer_auth(&target.api_key).timeout(ATTEMPT_TIMEOUT).json(&body).send().await;
        let mut retry_after = None;
        match sent {
            Ok(response) if response.status().is_success() => {
                // A cut body leaves the outcome unknown: ask again.
                if let Ok(published) = response.json::<Published>().await {
                    let mut outcome = publisher.outcome.lock();
                    outcome.duplicate_answers += u64::from(published.duplicate);
                    outcome.acknowledged.insert(n, published.id);
                    return;
                }
            }
            Ok(response) => {
                let status = response.status();
                if status.is_client_error() && !retryable(status) {
                    let text = response.text().await.unwrap_or_default();
                    let mut outcome = publisher.outcome.lock();
                    outcome.rejected += 1;
                    outcome.first_rejection.get_or_insert_with(|| format!("{status}: {text}"));
                    return;
                }
                retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok());
            }
            Err(_) => {}
        }
        publisher.outcome.lock().retried_attempts += 1;
        // Back off, but not as long as Retry-After asks: the run measures
        // what a retry does, and a fault lasts seconds.
        let backoff = Duration::from_millis(100 * u64::from(attempt)).min(Duration::from_secs(1));
        let asked = retry_after.map_or(Duration::ZERO, |s| Duration::from_secs_f64(s.clamp(0.0, 1.0)));
        tokio::time::sleep(backoff.max(asked)).await;
    }
    publisher.outcome.lock().given_up += 1;
}

/// 4xx answers that say "not now" rather than "never": a timeout, a key
/// whose first attempt is still in flight, too early, too many.
fn retryable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 425 | 429)
}
