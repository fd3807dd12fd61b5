//! Tracing, metrics and `Retry-After` for every API request.
//!
//! Each request runs in an `http_request` span that continues the caller's
//! trace when it sends a `traceparent` header. Handlers take a
//! [`TraceParent`](crate::extract::TraceParent) to stamp on the events they
//! cause, so one trace runs from the probe's POST to the gateway's send.
//!
//! Metrics (Prometheus names):
//!
//! - `pulse_ingest_http_requests_total{route, method, status}`
//! - `pulse_ingest_http_request_duration_seconds{route}`
//! - `pulse_ingest_reports_total{outcome="accepted"|"duplicate"}`
//! - `pulse_ingest_alerts_raised_total`
//! - `pulse_ingest_events_published_total{source}`: events published because
//!   of a `report`, `heartbeat`, `decision` or `publish` request
//! - `pulse_ingest_publish_duration_seconds{source}`: how long the store or
//!   bus took to apply and publish

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderName;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;

use crate::state::IngestState;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The caller's well-formed `traceparent`, stored by [`observe`] for the
/// [`TraceParent`](crate::extract::TraceParent) extractor.
#[derive(Debug, Clone)]
pub(crate) struct Incoming(pub(crate) String);

/// The API scope's middleware: request span, metrics, and `Retry-After` on
/// every 503.
pub(crate) async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http_request",
        http.method = %method,
        http.target = %req.path(),
        http.route = tracing::field::Empty,
        http.status_code = tracing::field::Empty,
    );
    let incoming = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(incoming) = incoming.filter(|v| pulse_runtime::is_traceparent(v)) {
        pulse_runtime::set_parent_from_traceparent(&span, incoming);
        req.extensions_mut().insert(Incoming(incoming.to_owned()));
    }
    let retry_after = req.app_data::<web::Data<IngestState>>().map(|s| s.settings().retry_after_secs);

    let mut res = next.call(req).instrument(span.clone()).await?;

    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status();
    span.record("http.route", route.as_str());
    span.record("http.status_code", status.as_u16());
    if let Some(seconds) = retry_after {
        crate::error::add_retry_after(res.response_mut(), seconds);
    }
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    Ok(res)
}

/// Metric names, shared by the recording sites and their descriptions.
pub(crate) const HTTP_REQUESTS: &str = "pulse_ingest_http_requests_total";
pub(crate) const HTTP_DURATION: &str = "pulse_ingest_http_request_duration_seconds";
pub(crate) const REPORTS: &str = "pulse_ingest_reports_total";
pub(crate) const ALERTS_RAISED: &str = "pulse_ingest_alerts_raised_total";
pub(crate) const EVENTS_PUBLISHED: &str = "pulse_ingest_events_published_total";
pub(crate) const PUBLISH_DURATION: &str = "pulse_ingest_publish_duration_seconds";

/// HELP text for every ingest metric (idempotent: the recorder keeps the
/// last description). Needs the recorder installed first.
pub(crate) fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "API requests answered, by route, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to answer an API request, by route");
    describe_counter!(REPORTS, "Probe reports received, by outcome (accepted, duplicate)");
    describe_counter!(ALERTS_RAISED, "Alerts raised by probe reports");
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events published to the bus, by the request that caused them (report, heartbeat, decision, publish)"
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time the store and bus took to apply and publish a request's events, by source"
    );
}

/// Counts the events one request published and how long publishing took.
pub(crate) fn record_published(source: &'static str, events: usize, took: Duration) {
    metrics::counter!(EVENTS_PUBLISHED, "source" => source).increment(events as u64);
    metrics::histogram!(PUBLISH_DURATION, "source" => source).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    #[test]
    fn recognises_traceparents() {
        use pulse_runtime::is_traceparent;
        assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}
