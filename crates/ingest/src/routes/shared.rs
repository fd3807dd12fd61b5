//! Helpers more than one route uses.

use pulse_bus::Publication;
use pulse_protocol::{Channel, EventDraft};

use crate::error::{BackendError, InputError, backend};
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

/// Publishes `draft` to `channel` once per idempotency `key` (within
/// `ingest.idempotency_ttl`): the key is decided by the bus in the same
/// atomic step as the append, so a retry with the same key after any
/// failure never publishes twice.
pub(crate) async fn publish_once(
    state: &IngestState,
    channel: &Channel,
    draft: EventDraft,
    key: &str,
) -> Result<Publication, BackendError> {
    let ttl = state.settings().idempotency_ttl;
    backend("publishing an event", state.bus().publish_once(channel, draft, key, ttl)).await
}
