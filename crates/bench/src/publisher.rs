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
    /// Probe reports: `POST {base}/api/v1/reports` from `agents` simulated
    /// agents (`bench-{seq % agents}`), with an agent API key. The stamp
    /// travels in the check's metrics, which `report_received` carries to
    /// the `reports` and `agent:{id}` channels.
    Reports(Arc<ReportTarget>),
}

/// Where and as whom [`Publisher::Reports`] posts, prepared once: the load
/// generator shares the machine with what it measures, so each request
/// should cost it as little as possible.
pub struct ReportTarget {
    http: reqwest::Client,
    url: String,
    api_key: String,
    agents: u64,
    run: u64,
}

impl Publisher {
    pub fn ingest(base: &str, api_key: &str) -> Self {
        Self::Ingest {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.into(),
        }
    }

    pub fn reports(base: &str, api_key: &str, agents: u64) -> Self {
        Self::Reports(Arc::new(ReportTarget {
            http: reqwest::Client::new(),
            url: format!("{}/api/v1/reports", base.trim_end_matches('/')),
            api_key: api_key.into(),
            agents: agents.max(1),
            run: crate::client::now_us(),
        }))
    }

    /// Publishes event `seq`, stamped with `sent_us`, padded by `pad` bytes.
    pub async fn publish(&self, channel: &Channel, seq: u64, sent_us: u64, pad: usize) -> anyhow::Result<()> {
        match self {
            Self::Reports(target) => {
                let body = ReportBody::new(target.run, seq, sent_us, target.agents);
                post(&target.http, &target.url, &target.api_key, &body).await?;
            }
            Self::Bus(bus) => {
                let event_type = EventType::parse(EVENT_TYPE)?;
                bus.publish(channel, EventDraft::new(event_type, payload(seq, sent_us, pad))).await?;
            }
            Self::Ingest { http, base, api_key } => {
                let data = payload(seq, sent_us, pad);
                let body = serde_json::json!({ "channel": channel, "type": EVENT_TYPE, "data": data });
                post(http, &format!("{base}/api/v1/publish"), api_key, &body).await?;
            }
        }
        Ok(())
    }
}

/// POSTs `body` as JSON (serialised straight to bytes); fails unless the
/// answer is a success.
async fn post(http: &reqwest::Client, url: &str, api_key: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
    let response = http.post(url).bearer_auth(api_key).json(body).send().await.context("POST")?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("{url} answered {status}: {text}");
    }
    Ok(())
}

/// The probe report of event `seq`: one passing L1 check whose metrics hold
/// the stamp (exact as f64: micros since 1970 stay below 2^53).
pub fn report(run: u64, seq: u64, sent_us: u64, agents: u64) -> serde_json::Value {
    serde_json::to_value(ReportBody::new(run, seq, sent_us, agents))
        .unwrap_or_else(|e| unreachable!("a report body serialises: {e}"))
}

/// The body [`report`] describes, serialised straight to bytes on the hot
/// path (no intermediate JSON value).
#[derive(serde::Serialize)]
struct ReportBody {
    report_id: String,
    agent_id: String,
    ts: String,
    checks: [BenchCheck; 1],
}

#[derive(serde::Serialize)]
struct BenchCheck {
    name: &'static str,
    level: &'static str,
    status: &'static str,
    metrics: BenchMetrics,
}

#[derive(serde::Serialize)]
struct BenchMetrics {
    bseq: f64,
    bts: f64,
}

impl ReportBody {
    fn new(run: u64, seq: u64, sent_us: u64, agents: u64) -> Self {
        Self {
            report_id: format!("bench-{run}-{seq}"),
            agent_id: format!("bench-{}", seq % agents.max(1)),
            ts: chrono_now(sent_us),
            checks: [BenchCheck {
                name: "bench",
                level: "L1",
                status: "ok",
                metrics: BenchMetrics { bseq: seq as f64, bts: sent_us as f64 },
            }],
        }
    }
}

/// RFC 3339 UTC with milliseconds, from microseconds since the epoch.
fn chrono_now(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        us % 1_000_000 / 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::accounting::scan_stamp;

    #[test]
    fn formats_timestamps() {
        assert_eq!(chrono_now(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(chrono_now(1_763_800_000_123_456), "2025-11-22T08:26:40.123Z");
        assert_eq!(chrono_now(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn report_stamp_survives_as_float() {
        let r = report(1, 7, 1_763_800_000_123_456, 10);
        let text = r.to_string();
        let stamp = scan_stamp(&text).unwrap();
        assert_eq!((stamp.seq, stamp.sent_us), (7, 1_763_800_000_123_456));
        assert_eq!(r["agent_id"], "bench-7");
        let report: pulse_protocol::probe::Report = serde_json::from_value(r).unwrap();
        assert_eq!(report.checks.len(), 1);
    }
}
