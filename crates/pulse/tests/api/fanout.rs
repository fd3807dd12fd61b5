//! Standalone on Redis under fan-out load: ingest's Redis calls must not
//! wait behind the writes to browsers that share its workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pulse_ingest::settings::{ApiKeySettings, Role};
use pulse_runtime::Secret;
use pulse_testkit::{RedisServer, WsClient};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::helpers::{DEADLINE, settings, spawn};

const PUBLISHER_KEY: &str = "test-publisher-key";
/// Browsers subscribed to the loaded channel, each reading as fast as it can.
const BROWSERS: usize = 500;
/// Publishes, how many at once, and the padding of each event's data:
/// together far more than two workers can fan out at the pace they arrive.
const PUBLISHES: usize = 1_500;
const IN_FLIGHT: usize = 64;
const PAD: usize = 8_192;

/// Every publish made while browsers keep the workers busy is accepted.
/// Before the bus and store ran on a runtime of their own, Redis's answers
/// waited behind the fan-out on the same workers until the deadline fired,
/// and about a quarter of these publishes were answered 503.
///
/// A load test: it saturates the machine on purpose, and on a machine that
/// is saturated already the kernel can starve Redis itself past the
/// deadline. Run it alone: `cargo test -p pulse --test api -- --ignored fanout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: saturates the machine; run alone with --ignored"]
async fn standalone_on_redis_accepts_every_publish_while_fan_out_is_busy() {
    let redis = RedisServer::start().await.unwrap();
    let mut s = settings();
    s.use_redis(&redis.url());
    s.ingest.api_keys.push(ApiKeySettings {
        name: "test-publisher".into(),
        key: Secret::new(PUBLISHER_KEY),
        role: Role::Publisher,
        channels: None,
    });
    let pulse = spawn(s).await.unwrap();

    let received = Arc::new(AtomicU64::new(0));
    let mut browsers = JoinSet::new();
    for _ in 0..BROWSERS {
        let client = pulse.subscriber(&["load"]).await.unwrap();
        browsers.spawn(read_everything(client, received.clone()));
    }

    let url = pulse.url("/api/v1/publish");
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut publishes = JoinSet::new();
    let data = "x".repeat(PAD);
    for seq in 0..PUBLISHES {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (http, url) = (pulse.http.clone(), url.clone());
        let body = serde_json::json!({"channel": "load", "type": "load", "data": {"seq": seq, "pad": data}});
        publishes.spawn(async move {
            let answer = http.post(&url).bearer_auth(PUBLISHER_KEY).json(&body).send().await;
            drop(permit);
            match answer {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("{}: {}", response.status(), response.text().await.unwrap_or_default())),
                Err(err) => Some(format!("no answer: {err}")),
            }
        });
    }
    let mut refused = Vec::new();
    while let Some(outcome) = publishes.join_next().await {
        refused.extend(outcome.unwrap());
    }
    assert!(refused.is_empty(), "{} of {PUBLISHES} publishes refused, the first: {:?}", refused.len(), refused.first());
    // The load was real: the browsers got the events.
    assert!(received.load(Ordering::Relaxed) >= PUBLISHES as u64, "{received:?}");
    browsers.abort_all();
    pulse.stop().await.unwrap();
}

/// Reads and drops frames until the connection ends or goes quiet.
async fn read_everything(mut client: WsClient, received: Arc<AtomicU64>) {
    while client.recv_text(DEADLINE).await.is_ok() {
        received.fetch_add(1, Ordering::Relaxed);
    }
}
