//! `POST /api/v1/heartbeats`: an agent with nothing to report is alive.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use pulse_protocol::probe::{AgentStatus, HealthStatus};
use pulse_protocol::{AgentId, Channel};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, backend};
use crate::extract::{AgentKey, Json, TraceParent};
use crate::observe::record_published;
use crate::state::IngestState;

/// The body of `POST /heartbeats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub agent_id: AgentId,
    /// When the agent sent it; defaults to now. The store never lets it run
    /// ahead of its own clock.
    #[serde(default, with = "pulse_protocol::timestamp::option", skip_serializing_if = "Option::is_none")]
    pub ts: Option<DateTime<Utc>>,
}

/// The answer to an accepted heartbeat (202): the agent's state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAccepted {
    pub agent_id: AgentId,
    pub status: AgentStatus,
    pub health: HealthStatus,
    #[serde(with = "pulse_protocol::timestamp")]
    pub last_seen: DateTime<Utc>,
}

pub(crate) async fn post_heartbeat(
    AgentKey(caller): AgentKey,
    state: web::Data<IngestState>,
    trace: TraceParent,
    Json(heartbeat): Json<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.check_write(&Channel::for_agent(&heartbeat.agent_id), Some("agent_id"))?;
    let ts = heartbeat.ts.unwrap_or_else(pulse_protocol::timestamp::now);

    let started = Instant::now();
    let outcome =
        backend("applying a heartbeat", state.store().apply_heartbeat(&heartbeat.agent_id, ts, trace.0)).await?;
    record_published("heartbeat", outcome.events.len(), started.elapsed());
    tracing::debug!(agent_id = %heartbeat.agent_id, key = %caller.name, "heartbeat accepted");
    let state = outcome.state;
    Ok(HttpResponse::Accepted().json(HeartbeatAccepted {
        agent_id: state.agent_id,
        status: state.status,
        health: state.health,
        last_seen: state.last_seen,
    }))
}
