//! Helpers more than one route uses.

use pulse_protocol::{Channel, Event, EventDraft};

use crate::error::{BackendError, InputError, with_deadline};
use crate::state::IngestState;

/// An id that ends up in a Redis key or an idempotency key: 1 to `max`
/// printable characters, no spaces.
pub(crate) fn validate_id(field: &str, id: &str, max: usize) -> Result<(), InputError> {
    if id.is_empty() {
        return Err(InputError::invalid(field, format!("{field} is empty")));
    }
    if id.chars().count() > max {
        return Err(InputError::invalid(field, format!("{field} is longer than {max} characters")));
    }
    if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(InputError::invalid(
            field,
            format!("{field} contains {c:?}; spaces and control characters are not allowed"),
        ));
    }
    Ok(())
}

/// Releases an idempotency key after the work it guarded failed. Best
/// effort: if the store is away too, the key expires with its TTL.
pub(crate) async fn release(state: &IngestState, key: &str) {
    let store = state.store();
    if let Err(err) = with_deadline(
        state.settings().backend_timeout,
        "releasing an idempotency key",
        store.release_idempotency_key(key),
    )
    .await
    {
        tracing::warn!(%key, error = %err, "could not release an idempotency key; it expires with its TTL");
    }
}

/// Publishes each draft to its channel, in order, stopping at the first
/// failure.
pub(crate) async fn publish_all(
    state: &IngestState,
    drafts: Vec<(Channel, EventDraft)>,
) -> Result<Vec<Event>, BackendError> {
    let mut events = Vec::with_capacity(drafts.len());
    for (channel, draft) in drafts {
        let event = with_deadline(
            state.settings().backend_timeout,
            "publishing an event",
            state.bus().publish(&channel, draft),
        )
        .await?;
        events.push(event);
    }
    Ok(events)
}
