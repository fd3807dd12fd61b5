//! Where `refresh` snapshots come from.
//!
//! State channels (`agents`, `alerts`) are answered from the store; any
//! other channel with its latest events from the bus.

use std::sync::Arc;

use async_trait::async_trait;
use pulse_protocol::Channel;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("state is unavailable: {0}")]
pub struct SnapshotError(pub String);

/// The current state of a channel, for `refresh`.
#[async_trait]
pub trait SnapshotSource: Send + Sync + 'static {
    /// The channel's state as JSON, or `None` if this source does not keep
    /// state for it (then the channel's latest events are sent).
    async fn snapshot(&self, channel: &Channel) -> Result<Option<serde_json::Value>, SnapshotError>;
}

/// A source with no state: every snapshot is the channel's latest events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoState;

#[async_trait]
impl SnapshotSource for NoState {
    async fn snapshot(&self, _channel: &Channel) -> Result<Option<serde_json::Value>, SnapshotError> {
        Ok(None)
    }
}

/// Shared snapshot source.
pub type Snapshots = Arc<dyn SnapshotSource>;

/// Answers `refresh`: the head offset first, then the state (or the latest
/// events), so events after `offset` that the client also receives live are
/// at worst applied twice, never missed.
pub(crate) async fn take(gw: &crate::Gateway, channel: &Channel) -> pulse_protocol::ControlMessage {
    use pulse_protocol::{ControlMessage, ErrorCode};
    let unavailable = |what: String| ControlMessage::Error {
        code: ErrorCode::Unavailable,
        message: format!("cannot take a snapshot now: {what}; try again"),
        channel: Some(channel.clone()),
    };
    let offset = match gw.bus().head(channel).await {
        Ok(offset) => offset,
        Err(err) => return unavailable(err.to_string()),
    };
    let data = match gw.snapshots().snapshot(channel).await {
        Ok(Some(data)) => data,
        Ok(None) => match gw.bus().latest(channel, gw.settings().gateway.snapshot_events).await {
            Ok(events) => serde_json::to_value(events).unwrap_or_default(),
            Err(err) => return unavailable(err.to_string()),
        },
        Err(err) => return unavailable(err.to_string()),
    };
    ControlMessage::Snapshot { channel: channel.clone(), offset, data }
}

/// Snapshots from the [`pulse_store::Store`]: `agents` (every agent's
/// state), `alerts` (`{"open": [...], "recent": [...]}`) and `agent:{id}`
/// (that agent's state, or `null`).
#[derive(Clone)]
pub struct StoreSnapshots(pub Arc<dyn pulse_store::Store>);

#[async_trait]
impl SnapshotSource for StoreSnapshots {
    async fn snapshot(&self, channel: &Channel) -> Result<Option<serde_json::Value>, SnapshotError> {
        // With its sources: the store's error names what failed, its source why.
        let fail = |e: &dyn std::error::Error| SnapshotError(pulse_bus::error_chain(e));
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| fail(&e));
        match channel.as_str() {
            Channel::AGENTS => {
                let agents = self.0.agents().await.map_err(|e| fail(&e))?;
                json(serde_json::to_value(agents)).map(Some)
            }
            Channel::ALERTS => {
                let view = self.0.alerts().await.map_err(|e| fail(&e))?;
                let open = json(serde_json::to_value(view.open))?;
                let recent = json(serde_json::to_value(view.recent))?;
                Ok(Some(serde_json::json!({"open": open, "recent": recent})))
            }
            name => match name.strip_prefix("agent:").map(pulse_protocol::AgentId::parse) {
                Some(Ok(id)) => {
                    let agent = self.0.agent(&id).await.map_err(|e| fail(&e))?;
                    json(serde_json::to_value(agent)).map(Some)
                }
                _ => Ok(None),
            },
        }
    }
}
