//! `POST /api/v1/publish`: any backend publishes events of its own types to
//! the channels its key may write.
//!
//! Two forms: one event (`{"channel", "type", "data", "idempotency_key"?}`)
//! or a batch (`{"events": [...]}`). A batch is validated whole before
//! anything is published, then published in order. An event with an
//! `idempotency_key` is published once per key and publisher within
//! `ingest.idempotency_ttl`; retrying a batch that failed half-way is safe
//! for exactly those events.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use pulse_protocol::{Channel, EventDraft, EventType, Position};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, BackendError, InputError, backend, parse_body};
use crate::extract::{Json, PublisherKey, TraceParent};
use crate::observe::record_published;
use crate::routes::shared::{publish_once, validate_id};
use crate::state::IngestState;

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: Channel,
    /// Any valid event type except the reserved control types.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The event's data; `null` when absent.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Publish at most once per key (and publisher key, and channel) within
    /// the TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The batch form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    events: Vec<PublishRequest>,
}

/// Where one event went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRef {
    pub channel: Channel,
    /// The event's position in its channel (`<epoch>:<ms>-<seq>`).
    pub id: Position,
}

/// What became of one event of a publish request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub channel: Channel,
    /// The event's position; for a duplicate, the position the first
    /// publish with the same idempotency key was given.
    pub id: Position,
    /// The idempotency key was used before: nothing was published.
    pub duplicate: bool,
}

/// The answer to a batch (202): one result per event, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPublished {
    pub results: Vec<Published>,
}

/// Checks one event and the caller's right to its channel; `at` is the
/// event's path in the body (`""` or `events[3].`).
fn validate(request: &PublishRequest, caller: &Caller, at: &str) -> Result<(), ApiError> {
    if let Some(key) = &request.idempotency_key {
        validate_id(&format!("{at}idempotency_key"), key, MAX_IDEMPOTENCY_KEY_LEN)?;
    }
    caller.check_write(&request.channel, Some(&format!("{at}channel")))?;
    Ok(())
}

pub(crate) async fn post_publish(
    PublisherKey(caller): PublisherKey,
    state: web::Data<IngestState>,
    trace: TraceParent,
    Json(body): Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let is_batch = body.as_object().is_some_and(|o| o.contains_key("events"));
    let (requests, is_batch) = if is_batch {
        let batch: BatchRequest = parse_body(body)?;
        let max = state.settings().max_batch_events;
        if batch.events.is_empty() {
            return Err(InputError::unprocessable("empty_batch", "events", "the batch has no events").into());
        }
        if batch.events.len() > max {
            return Err(InputError::unprocessable(
                "too_many_events",
                "events",
                format!("the batch has {} events; at most {max} are allowed", batch.events.len()),
            )
            .into());
        }
        for (i, request) in batch.events.iter().enumerate() {
            validate(request, &caller, &format!("events[{i}]."))?;
        }
        (batch.events, true)
    } else {
        let request: PublishRequest = parse_body(body)?;
        validate(&request, &caller, "")?;
        (vec![request], false)
    };

    let started = Instant::now();
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        results.push(publish_one(&state, &caller, request, trace.0.clone()).await?);
    }
    let published = results.iter().filter(|r| !r.duplicate).count();
    record_published("publish", published, started.elapsed());
    tracing::info!(key = %caller.name, events = results.len(), published, "publish accepted");
    let response = if is_batch {
        HttpResponse::Accepted().json(BatchPublished { results })
    } else {
        HttpResponse::Accepted().json(&results[0])
    };
    Ok(response)
}

async fn publish_one(
    state: &IngestState,
    caller: &Caller,
    request: PublishRequest,
    trace: Option<String>,
) -> Result<Published, BackendError> {
    let draft = EventDraft::new(request.event_type, request.data).with_trace(trace);
    match &request.idempotency_key {
        Some(key) => {
            // Keys are per publisher (two backends may pick the same key)
            // and per channel (a key names one event of one channel).
            let key = format!("publish:{}:{}:{key}", caller.name, request.channel);
            let publication = publish_once(state, &request.channel, draft, &key).await?;
            Ok(Published { channel: request.channel, id: publication.id, duplicate: publication.duplicate })
        }
        None => {
            let event = backend("publishing an event", state.bus().publish(&request.channel, draft)).await?;
            Ok(Published { channel: event.channel, id: event.id, duplicate: false })
        }
    }
}
