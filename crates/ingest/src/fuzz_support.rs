//! Entry points for the fuzz targets in `fuzz/`: the report body's path
//! from bytes to a validated [`Report`], as `POST /api/v1/reports` takes
//! it. Not part of the crate's API.

use pulse_protocol::probe::Report;

use crate::error::{InputError, parse_body};

/// Reads a report body as the route does: JSON, then the typed report
/// (naming the field at fault), then the checks the types alone do not
/// make (ids, sizes, names), with at most `max_checks` checks.
///
/// # Errors
///
/// The [`InputError`] the route would answer with; `None` for bytes that
/// are not JSON (actix-web's extractor answers those before the route).
pub fn report_body(body: &[u8], max_checks: usize) -> Option<Result<Report, InputError>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(parse_body::<Report>(value).and_then(|report| {
        crate::routes::validate_report(&report, max_checks)?;
        Ok(report)
    }))
}
