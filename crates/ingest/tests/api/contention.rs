//! A report that keeps losing the race for its agent's state.
//!
//! The Redis store applies a report with a compare-and-set. Changes of one
//! agent take turns within one ingest process, but another process (a second
//! replica, the heartbeat checker) can still change the agent between the
//! store's read and its write; after `max_attempts` such losses the store
//! gives up with `StoreError::Contention`. That is transient: the probe is
//! told to retry later. A store that always loses shows the answer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_bus::{Bus, MemoryBus, MemoryBusConfig};
use pulse_protocol::AgentId;
use pulse_protocol::probe::{AgentState, AgentStatusChange, Report};
use pulse_store::{
    AgentCounts, AlertsView, HeartbeatOutcome, MemoryStore, ReportOutcome, Store, StoreError, StoreSettings,
};
use reqwest::StatusCode;

use crate::helpers::{disk_failing, error_of, report, spawn_app_on};

/// A memory store whose reports always lose the race.
struct Contended(MemoryStore);

#[async_trait]
impl Store for Contended {
    async fn apply_report(&self, report: &Report, _trace: Option<String>) -> Result<ReportOutcome, StoreError> {
        Err(StoreError::Contention { agent_id: report.agent_id.to_string(), attempts: 16 })
    }

    async fn apply_heartbeat(
        &self,
        agent_id: &AgentId,
        ts: DateTime<Utc>,
        trace: Option<String>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.0.apply_heartbeat(agent_id, ts, trace).await
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        self.0.agents().await
    }

    async fn agent(&self, agent_id: &AgentId) -> Result<Option<AgentState>, StoreError> {
        self.0.agent(agent_id).await
    }

    async fn alerts(&self) -> Result<AlertsView, StoreError> {
        self.0.alerts().await
    }

    async fn mark_silent_offline(
        &self,
        deadline: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AgentStatusChange>, StoreError> {
        self.0.mark_silent_offline(deadline, limit).await
    }

    async fn claim_idempotency_key(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.0.claim_idempotency_key(key, ttl).await
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<(), StoreError> {
        self.0.release_idempotency_key(key).await
    }

    async fn counts(&self) -> Result<AgentCounts, StoreError> {
        self.0.counts().await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.0.check().await
    }
}

#[tokio::test]
async fn a_report_that_keeps_losing_the_race_gets_503_with_retry_after() {
    let bus = MemoryBus::new(MemoryBusConfig { history_len: 100 });
    let store = Contended(MemoryStore::new(bus.clone(), StoreSettings::default()));
    let app = spawn_app_on(Arc::new(bus) as Arc<dyn Bus>, Arc::new(store)).await;

    let response = app.post_report(&report("web-1", "r-1", disk_failing())).await;
    assert_eq!(response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()).as_deref(), Some("2"));
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    assert!(app.all_events().await.is_empty(), "nothing was published");
    // The service itself is fine: it stays ready.
    assert_eq!(app.readyz().await, StatusCode::OK);
}
