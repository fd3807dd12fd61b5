//! `POST /api/v1/decisions`: an L2 decision from the deciding component,
//! published as `decision_made` on `decisions` and on `agent:{id}` of each
//! agent it names.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use pulse_protocol::probe::Decision;
use pulse_protocol::{Channel, EventDraft, EventType};
use serde::{Deserialize, Serialize};

use crate::auth::PublisherKey;
use crate::error::{ApiError, BackendError, InputError, parse_body, with_deadline};
use crate::observe::{TraceParent, record_published};
use crate::routes::publish::PublishedRef;
use crate::routes::shared::{publish_all, release, validate_id};
use crate::state::IngestState;

/// The longest `decision_id` accepted.
pub const MAX_DECISION_ID_LEN: usize = 128;

/// The answer to an accepted decision (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionAccepted {
    pub decision_id: String,
    /// The same `decision_id` was published before (within the idempotency
    /// TTL): nothing was published this time.
    pub duplicate: bool,
    /// Where the decision was published, in order.
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
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let decision: Decision = parse_body(body.into_inner())?;
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

    let settings = state.settings();
    // The decision id is the idempotency key: a retried decision is
    // published once.
    let key = format!("decision:{}", decision.decision_id);
    let claimed = with_deadline(
        settings.backend_timeout,
        "claiming a decision id",
        state.store().claim_idempotency_key(&key, settings.idempotency_ttl),
    )
    .await?;
    if !claimed {
        return Ok(HttpResponse::Accepted().json(DecisionAccepted {
            decision_id: decision.decision_id,
            duplicate: true,
            events: Vec::new(),
        }));
    }

    let started = Instant::now();
    let drafts = channels.into_iter().map(|(channel, _)| (channel, draft.clone())).collect();
    let published = match publish_all(&state, drafts).await {
        Ok(published) => published,
        Err(err) => {
            // Let a retry publish it.
            release(&state, &key).await;
            return Err(err.into());
        }
    };
    record_published("decision", published.len(), started.elapsed());
    tracing::info!(decision_id = %decision.decision_id, key = %caller.name, "decision published");
    Ok(HttpResponse::Accepted().json(DecisionAccepted {
        decision_id: decision.decision_id,
        duplicate: false,
        events: published.into_iter().map(|e| PublishedRef { channel: e.channel, id: e.id }).collect(),
    }))
}
