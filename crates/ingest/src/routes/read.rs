//! The read API dashboards call for their first paint: `GET /agents`,
//! `GET /agents/{agent_id}`, `GET /alerts`.
//!
//! A token sees what its channel claims grant: the whole fleet with `agents`
//! (for agents) or `alerts` (for alerts), otherwise the agents whose
//! `agent:{id}` channel it may read.

use actix_web::{HttpResponse, web};
use pulse_protocol::probe::{AgentState, Alert};
use pulse_protocol::{AgentId, Channel};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, Reader};
use crate::error::{ApiError, InputError, backend, error_response};
use crate::state::IngestState;

/// `GET /agents`: every agent the reader may see, ordered by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentsList {
    pub agents: Vec<AgentState>,
}

/// `GET /alerts`: open alerts and recently resolved ones, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsList {
    pub open: Vec<Alert>,
    pub recent: Vec<Alert>,
}

/// Whether `reader` may see `agent_id` given the fleet channel `fleet`.
fn may_see(reader: &Reader, fleet: &Channel, agent_id: &AgentId) -> bool {
    reader.may_read(fleet) || reader.may_read(&Channel::for_agent(agent_id))
}

pub(crate) async fn get_agents(reader: Reader, state: web::Data<IngestState>) -> Result<HttpResponse, ApiError> {
    let agents = backend("listing agents", state.store().agents()).await?;
    let fleet = Channel::well_known(Channel::AGENTS);
    let agents = agents.into_iter().filter(|a| may_see(&reader, &fleet, &a.agent_id)).collect();
    Ok(HttpResponse::Ok().json(AgentsList { agents }))
}

pub(crate) async fn get_agent(
    reader: Reader,
    state: web::Data<IngestState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let agent_id = AgentId::parse(&path).map_err(|e| InputError::invalid("agent_id", e.to_string()))?;
    let fleet = Channel::well_known(Channel::AGENTS);
    if !may_see(&reader, &fleet, &agent_id) {
        return Err(AuthError::ChannelForbidden {
            channel: Channel::for_agent(&agent_id),
            field: Some("agent_id".into()),
        }
        .into());
    }
    let agent = backend("reading an agent", state.store().agent(&agent_id)).await?;
    Ok(match agent {
        Some(agent) => HttpResponse::Ok().json(agent),
        None => error_response(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no agent {agent_id} is known"),
            Some("agent_id".into()),
        ),
    })
}

pub(crate) async fn get_alerts(reader: Reader, state: web::Data<IngestState>) -> Result<HttpResponse, ApiError> {
    let view = backend("listing alerts", state.store().alerts()).await?;
    let fleet = Channel::well_known(Channel::ALERTS);
    let visible = |alerts: Vec<Alert>| alerts.into_iter().filter(|a| may_see(&reader, &fleet, &a.agent_id)).collect();
    Ok(HttpResponse::Ok().json(AlertsList { open: visible(view.open), recent: visible(view.recent) }))
}
