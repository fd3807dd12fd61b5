//! Publishing benchmark events through the real path: directly on the bus
//! (what ingest does after validation) or through ingest's publish API.

use std::sync::Arc;

use anyhow::Context;
use pulse_bus::Bus;
use pulse_protocol::{Channel, EventDraft, EventType};

use crate::accounting::payload;

/// Event type of every benchmark event.
pub const EVENT_TYPE: &str = "bench";

#[derive(Clone)]
pub enum Publisher {
    /// `Bus::publish` (history append + live publish in one step).
    Bus(Arc<dyn Bus>),
    /// `POST {base}/api/v1/publish` with `Authorization: Bearer {api_key}`.
    Ingest { http: reqwest::Client, base: String, api_key: String },
}

impl Publisher {
    pub fn ingest(base: &str, api_key: &str) -> Self {
        Self::Ingest {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.into(),
        }
    }

    /// Publishes event `seq`, stamped with `sent_us`, padded by `pad` bytes.
    pub async fn publish(&self, channel: &Channel, seq: u64, sent_us: u64, pad: usize) -> anyhow::Result<()> {
        let data = payload(seq, sent_us, pad);
        match self {
            Self::Bus(bus) => {
                let event_type = EventType::parse(EVENT_TYPE)?;
                bus.publish(channel, EventDraft::new(event_type, data)).await?;
            }
            Self::Ingest { http, base, api_key } => {
                let body = serde_json::json!({ "channel": channel, "type": EVENT_TYPE, "data": data });
                let response = http
                    .post(format!("{base}/api/v1/publish"))
                    .bearer_auth(api_key)
                    .json(&body)
                    .send()
                    .await
                    .context("publish request")?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    anyhow::bail!("publish answered {status}: {text}");
                }
            }
        }
        Ok(())
    }
}
