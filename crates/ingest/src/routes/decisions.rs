//! `POST /api/v1/decisions`: an L2 decision from the deciding component,
//! published as `decision_made` on `decisions` and on `agent:{id}` of each
//! agent it names.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use pulse_protocol::probe::Decision;
use pulse_protocol::{Channel, EventDraft, EventType};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, BackendError, InputError};
use crate::extract::{Json, PublisherKey, TraceParent};
use crate::observe::record_published;
use crate::routes::publish::PublishedRef;
use crate::routes::shared::{publish_once, validate_id};
use crate::state::IngestState;

/// The longest `decision_id` accepted.
pub const MAX_DECISION_ID_LEN: usize = 128;

/// The answer to an accepted decision (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionAccepted {
    pub decision_id: String,
    /// The same `decision_id` was published before (within the idempotency
    /// TTL) to every channel: nothing was published this time.
    pub duplicate: bool,
    /// Where the decision is, in order (for a duplicate, where it was
    /// published the first time).
    pub events: Vec<PublishedRef>,
}

/// `decisions`, then `agent:{id}` of each agent named, each once, with the
/// field that named it.
fn channels_of(decision: &Decision) -> Vec<(Channel, Option<String>)> {
    let mut channels = vec![(Channel::well_known(Channel::DECISIONS), None)];
    for (i, agent_id) in decision.agent_ids.iter().enumerate() {
        let channel = Channel::for_agent(agent_id);
        if !channels.iter().any(|(c, _)| *c == channel) {
            channels.push((channel, Some(format!("agent_ids[{i}]"))));
        }
    }
    channels
}

pub(crate) async fn post_decision(
    PublisherKey(caller): PublisherKey,
    state: web::Data<IngestState>,
    trace: TraceParent,
    Json(decision): Json<Decision>,
) -> Result<HttpResponse, ApiError> {
    validate_id("decision_id", &decision.decision_id, MAX_DECISION_ID_LEN)?;
    let max = state.settings().max_batch_events;
    if decision.agent_ids.len() > max {
        return Err(InputError::unprocessable(
            "too_many_agents",
            "agent_ids",
            format!("the decision names {} agents; at most {max} are allowed", decision.agent_ids.len()),
        )
        .into());
    }
    if decision.action.trim().is_empty() {
        return Err(InputError::invalid("action", "action is empty").into());
    }
    let channels = channels_of(&decision);
    for (channel, field) in &channels {
        caller.check_write(channel, field.as_deref())?;
    }
    let draft = EventDraft::from_payload(EventType::DECISION_MADE, &decision)
        .map_err(|e| BackendError::Unexpected(anyhow::Error::new(e).context("serialising a decision")))?
        .with_trace(trace.0);

    // The decision id is the idempotency key, per channel: a retried
    // decision is published once to each, and a retry after a partial
    // failure publishes only what is missing.
    let started = Instant::now();
    let mut events = Vec::with_capacity(channels.len());
    let mut published = 0;
    for (channel, _) in channels {
        let key = format!("decision:{}:{channel}", decision.decision_id);
        let publication = publish_once(&state, &channel, draft.clone(), &key).await?;
        if !publication.duplicate {
            published += 1;
        }
        events.push(PublishedRef { channel, id: publication.id });
    }
    record_published("decision", published, started.elapsed());
    tracing::info!(decision_id = %decision.decision_id, key = %caller.name, published, "decision accepted");
    Ok(HttpResponse::Accepted().json(DecisionAccepted {
        decision_id: decision.decision_id,
        duplicate: published == 0,
        events,
    }))
}
