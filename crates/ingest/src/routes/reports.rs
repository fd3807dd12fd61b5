//! `POST /api/v1/reports`: a Probe agent's check results.

use std::time::Instant;

use actix_web::{HttpResponse, web};
use pulse_protocol::probe::Report;
use pulse_protocol::{Channel, EventType};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, InputError, backend};
use crate::extract::{AgentKey, Json, TraceParent};
use crate::observe::record_published;
use crate::routes::shared::validate_id;
use crate::state::IngestState;

/// The longest `report_id` accepted: it becomes part of a Redis key.
pub const MAX_REPORT_ID_LEN: usize = 128;
/// The longest check name accepted.
pub const MAX_CHECK_NAME_LEN: usize = 256;

/// The answer to an accepted report (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAccepted {
    pub report_id: String,
    /// The same `report_id` was accepted before: nothing changed this time.
    pub duplicate: bool,
}

/// Checks what the types alone do not: sizes, and names that must not be
/// empty. Runs before anything is written.
pub(crate) fn validate(report: &Report, max_checks: usize) -> Result<(), InputError> {
    validate_id("report_id", &report.report_id, MAX_REPORT_ID_LEN)?;
    if report.checks.len() > max_checks {
        return Err(InputError::unprocessable(
            "too_many_checks",
            "checks",
            format!("the report has {} checks; at most {max_checks} are allowed", report.checks.len()),
        ));
    }
    for (i, check) in report.checks.iter().enumerate() {
        // The field's name is only built for an error.
        let field = || format!("checks[{i}].name");
        if check.name.trim().is_empty() {
            return Err(InputError::invalid(&field(), format!("{} is empty", field())));
        }
        if check.name.chars().count() > MAX_CHECK_NAME_LEN {
            return Err(InputError::invalid(
                &field(),
                format!("{} is longer than {MAX_CHECK_NAME_LEN} characters", field()),
            ));
        }
    }
    Ok(())
}

pub(crate) async fn post_report(
    AgentKey(caller): AgentKey,
    state: web::Data<IngestState>,
    trace: TraceParent,
    Json(report): Json<Report>,
) -> Result<HttpResponse, ApiError> {
    validate(&report, state.settings().max_checks)?;
    caller.check_write(&Channel::for_agent(&report.agent_id), Some("agent_id"))?;

    let started = Instant::now();
    let outcome = backend("applying a report", state.store().apply_report(&report, trace.0)).await?;
    record_published("report", outcome.events.len(), started.elapsed());
    let outcome_label = if outcome.duplicate { "duplicate" } else { "accepted" };
    metrics::counter!(crate::observe::REPORTS, "outcome" => outcome_label).increment(1);
    // Each alert is published on `alerts` and on `agent:{id}`: count it once.
    let alerts = outcome
        .events
        .iter()
        .filter(|e| e.event_type.as_str() == EventType::ALERT_TRIGGERED && e.channel.as_str() == Channel::ALERTS)
        .count();
    metrics::counter!(crate::observe::ALERTS_RAISED).increment(alerts as u64);
    // Debug, not info: at thousands of reports per second a line each
    // costs more than the report; the counters above say how many.
    tracing::debug!(
        report_id = %report.report_id,
        agent_id = %report.agent_id,
        key = %caller.name,
        duplicate = outcome.duplicate,
        events = outcome.events.len(),
        "report accepted"
    );
    Ok(HttpResponse::Accepted().json(ReportAccepted { report_id: report.report_id, duplicate: outcome.duplicate }))
}
