//! The JSON body of every error answer of the API:
//!
//! ```json
//! {"error": {"code": "invalid_field", "message": "unknown variant `L4`, expected one of `L1`, `L2`, `L3`", "field": "checks[0].level"}}
//! ```
//!
//! `code` is stable and meant for programs; `message` is for people; `field`
//! (a path into the request body, or a path or query parameter) is there
//! when one field is at fault. A leaf: it knows nothing of the reasons.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `malformed_json`, `missing_field`,
    /// `unknown_field`, `invalid_field`, `payload_too_large`,
    /// `unsupported_media_type`, `too_many_checks`, `too_many_events`,
    /// `too_many_agents`, `empty_batch`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `unavailable`, `internal`.
    pub code: String,
    /// For people: what is wrong and, where it helps, what is expected.
    pub message: String,
    /// The field at fault, as a path into the body (`checks[0].level`) or the
    /// name of a path or query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer with the standard body.
pub fn error_response(status: StatusCode, code: &str, message: String, field: Option<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message, field } })
}
