//! The error answers of the API, and parsing request bodies into typed
//! values with errors that name the field at fault.
//!
//! Every error answer has the same JSON body:
//!
//! ```json
//! {"error": {"code": "invalid_field", "message": "unknown variant `L4`, expected one of `L1`, `L2`, `L3`", "field": "checks[0].level"}}
//! ```
//!
//! `code` is stable and meant for programs; `message` is for people; `field`
//! (a path into the request body, or a path or query parameter) is there
//! when one field is at fault.

use std::time::Duration;

use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use pulse_bus::BusError;
use pulse_store::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a request was refused: every route answers with one of these.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Auth(e) => e.status_code(),
            Self::Input(e) => e.status_code(),
            Self::Backend(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Auth(e) => e.error_response(),
            Self::Input(e) => e.error_response(),
            Self::Backend(e) => e.error_response(),
        }
    }
}

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

/// A request the API refuses because of what it contains: a 4xx that names
/// the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl InputError {
    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, field: Option<&str>, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code, field: field.map(str::to_owned), message: message.into() }
    }

    /// 400 `invalid_field`: one field has a value that is not allowed.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::bad_request("invalid_field", Some(field), message)
    }

    /// 422: well-formed, but over a configured limit.
    pub fn unprocessable(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code, field: Some(field.to_owned()), message: message.into() }
    }
}

impl ResponseError for InputError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status, self.code, self.message.clone(), self.field.clone())
    }
}

/// Deserialises a JSON body into `T`, naming the field at fault when it does
/// not fit: `checks[2].level` for a bad value, `checks[2].status` for a
/// missing one, `agent_id` for a bad agent id.
pub fn parse_body<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, InputError> {
    // Every body is an object; serde would read an array as a struct's
    // fields in order and blame `[0]`.
    if !value.is_object() {
        return Err(InputError::bad_request("invalid_field", None, "the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        let path = (path != ".").then_some(path);
        // serde reports a missing field at the object that should hold it;
        // point at the field itself. (An unknown field is reported at its
        // own path already.)
        let (code, field) = if let Some(name) = between(&message, "missing field `", "`") {
            ("missing_field", Some(path.map_or_else(|| name.to_owned(), |p| format!("{p}.{name}"))))
        } else if message.starts_with("unknown field `") {
            ("unknown_field", path)
        } else {
            ("invalid_field", path)
        };
        let message = match &field {
            Some(field) if code == "invalid_field" => format!("{field}: {message}"),
            _ => message,
        };
        InputError { status: StatusCode::BAD_REQUEST, code, field, message }
    })
}

/// The text between `start` and the next `end` in `message`, if `message`
/// begins with `start`.
fn between<'a>(message: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(start)?;
    rest.find(end).map(|i| &rest[..i])
}

/// The body extractor's configuration: the size limit, and errors in the
/// standard body (413 over the limit, 415 without a JSON content type, 400
/// for malformed JSON).
pub fn json_config(max_body_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(max_body_bytes).error_handler(|err, _req| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> InputError {
    let too_large = |message: String| InputError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        field: None,
        message,
    };
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. } | JsonPayloadError::Overflow { limit } => {
            too_large(format!("the request body is larger than the limit of {limit} bytes"))
        }
        JsonPayloadError::Payload(PayloadError::Overflow) => too_large("the request body is too large".into()),
        JsonPayloadError::ContentType => InputError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            field: None,
            message: "the request body must be sent as Content-Type: application/json".into(),
        },
        JsonPayloadError::Deserialize(err) => {
            InputError::bad_request("malformed_json", None, format!("the request body is not valid JSON: {err}"))
        }
        other => InputError::bad_request("malformed_json", None, format!("cannot read the request body: {other}")),
    }
}

/// The bus or store could not do what a request needed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Redis is away, or answered too slowly. Answered with 503 and
    /// `Retry-After`; retrying later may succeed.
    #[error("the backend is unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but not answered in time: it may have taken effect.
    /// Answered with 503 and `Retry-After`, code `outcome_unknown`: a retry
    /// with the same idempotency key (or decision id) is safe; one without
    /// may publish twice.
    #[error("the backend did not answer in time; the write may have taken effect: {0}")]
    OutcomeUnknown(String),
    /// Anything else: a bug or corrupt data. Answered with 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for BackendError {
    fn from(err: StoreError) -> Self {
        // Contention (one agent's state changing faster than the store's
        // compare-and-set retries) is transient too: the probe retries later.
        if err.is_unavailable() || matches!(err, StoreError::Contention { .. }) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Unexpected(err.into())
        }
    }
}

impl From<BusError> for BackendError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::OutcomeUnknown(_) => Self::OutcomeUnknown(err.to_string()),
            _ if err.is_unavailable() => Self::Unavailable(err.to_string()),
            _ => Self::Unexpected(err.into()),
        }
    }
}

impl ResponseError for BackendError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) | Self::OutcomeUnknown(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Details stay in the log (see `log_backend_error`): they may name
        // hosts and keys.
        match self {
            // `Retry-After` is added by the API scope, which knows the setting.
            Self::Unavailable(_) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event store is unavailable; retry later".into(),
                None,
            ),
            Self::OutcomeUnknown(_) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the event store did not answer in time: the write may have taken effect; retry with the same \
                 idempotency_key (or decision_id) to complete it without a duplicate"
                    .into(),
                None,
            ),
            Self::Unexpected(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the details are in the server log".into(),
                None,
            ),
        }
    }
}

/// Runs one bus or store call with the configured deadline, so that a Redis
/// that hangs is answered like one that is down.
pub async fn with_deadline<T, E>(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, BackendError>
where
    BackendError: From<E>,
{
    within(deadline, what, call, BackendError::Unavailable).await
}

/// [`with_deadline`] for a publish: cut short, it may still take effect
/// (the request may be in Redis already), so its outcome is unknown.
pub async fn with_write_deadline<T, E>(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, BackendError>
where
    BackendError: From<E>,
{
    within(deadline, what, call, BackendError::OutcomeUnknown).await
}

async fn within<T, E>(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
    cut_short: fn(String) -> BackendError,
) -> Result<T, BackendError>
where
    BackendError: From<E>,
{
    let result = match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(BackendError::from),
        Err(_) => Err(cut_short(format!("{what} took longer than {deadline:?}"))),
    };
    if let Err(err) = &result {
        match err {
            BackendError::Unavailable(reason) => tracing::warn!(%reason, "{what} failed: backend unavailable"),
            BackendError::OutcomeUnknown(reason) => tracing::warn!(%reason, "{what}: outcome unknown"),
            BackendError::Unexpected(err) => tracing::error!(error = ?err, "{what} failed"),
        }
    }
    result
}

/// Adds `Retry-After` to a 503 that has none.
pub(crate) fn add_retry_after<B>(response: &mut HttpResponse<B>, seconds: u32) {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(header::RETRY_AFTER) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}

/// Answers requests for paths the API does not have.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", format!("no route for {} {}", req.method(), req.path()), None)
}

/// Answers requests with a method the path does not accept, naming the one
/// it does in `Allow`.
pub(crate) async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}; use {allow}", req.method(), req.path()),
        None,
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The query string extractor's configuration: a query that does not parse
/// (a parameter given twice, for instance) is a JSON 400 like every other
/// bad input, not actix's plain-text one.
pub(crate) fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        InputError::bad_request("invalid_field", None, format!("the query string is not valid: {err}")).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::probe::Report;
    use serde_json::json;

    fn report_error(value: serde_json::Value) -> InputError {
        parse_body::<Report>(value).unwrap_err()
    }

    #[test]
    fn names_the_field_of_a_bad_value() {
        let err = report_error(json!({
            "report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z",
            "checks": [{"name": "x", "level": "L1", "status": "ok"}, {"name": "y", "level": "L4", "status": "ok"}]
        }));
        assert_eq!(err.code, "invalid_field");
        assert_eq!(err.field.as_deref(), Some("checks[1].level"));
        assert!(err.message.contains("unknown variant `L4`"), "{}", err.message);
    }

    #[test]
    fn names_a_missing_field_itself() {
        let err = report_error(json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z",
            "checks": [{"name": "x", "level": "L1"}]}));
        assert_eq!((err.code, err.field.as_deref()), ("missing_field", Some("checks[0].status")));
        let err = report_error(json!({"agent_id": "a", "ts": "2026-11-22T10:00:00Z", "checks": []}));
        assert_eq!((err.code, err.field.as_deref()), ("missing_field", Some("report_id")));
    }

    #[test]
    fn names_an_unknown_field_and_a_bad_agent_id() {
        let err = report_error(json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z",
            "checks": [], "extra": 1}));
        assert_eq!((err.code, err.field.as_deref()), ("unknown_field", Some("extra")));
        let err = report_error(json!({"report_id": "r", "agent_id": "no spaces", "ts": "2026-11-22T10:00:00Z",
            "checks": []}));
        assert_eq!((err.code, err.field.as_deref()), ("invalid_field", Some("agent_id")));
        assert!(err.message.contains("agent id"), "{}", err.message);
    }

    #[test]
    fn a_body_of_the_wrong_shape_has_no_field() {
        let err = report_error(json!([1, 2]));
        assert_eq!((err.code, err.field), ("invalid_field", None));
        assert!(err.message.contains("JSON object"), "{}", err.message);
    }
}
