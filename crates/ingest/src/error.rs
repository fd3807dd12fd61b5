//! The error answers of the API (in the body of [`crate::body`]), and
//! parsing request bodies into typed values with errors that name the field
//! at fault.

use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use pulse_bus::BusError;
use pulse_store::StoreError;
use serde::de::{DeserializeOwned, IgnoredAny};

pub use crate::body::{ErrorBody, ErrorDetail, error_response};

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

/// Deserialises the text of a JSON body into `T`, naming the field at
/// fault when it does not fit: `checks[2].level` for a bad value,
/// `checks[2].status` for a missing one, `agent_id` for a bad agent id.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, InputError> {
    let malformed = |err| json_error(JsonPayloadError::Deserialize(err));
    // Every body is an object; serde would read an array as a struct's
    // fields in order and blame `[0]`.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Err(err) => malformed(err),
            Ok(_) => not_an_object(),
        });
    }
    // Most bodies fit: parse them without tracking the path, which costs
    // as much again; only a body that does not fit is parsed a second
    // time, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(err) if err.inner().is_syntax() || err.inner().is_eof() => return Err(malformed(err.into_inner())),
        Err(err) => {
            // A body that is not JSON at all is malformed, even where a
            // field before the fault does not fit (checked on this error
            // path only).
            if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(body) {
                return Err(malformed(syntax));
            }
            let path = err.path().to_string();
            let inner = err.into_inner();
            // Where in the text the value sits says nothing the field path
            // does not.
            let message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let message = match message.strip_suffix(&position) {
                Some(stripped) => stripped.to_owned(),
                None => message,
            };
            return Err(field_error(path, message));
        }
    };
    // Nothing but whitespace may follow the object.
    deserializer.end().map_err(malformed)?;
    Ok(value)
}

/// [`parse_json`] for a body already read as a JSON value.
pub fn parse_body<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, InputError> {
    if !value.is_object() {
        return Err(not_an_object());
    }
    serde_path_to_error::deserialize(value).map_err(|err| field_error(err.path().to_string(), err.inner().to_string()))
}

fn not_an_object() -> InputError {
    InputError::bad_request("invalid_field", None, "the request body must be a JSON object")
}

/// The error of a body value that does not fit, at `path` (`.` for the
/// body itself).
fn field_error(path: String, message: String) -> InputError {
    let path = (path != ".").then_some(path);
    // serde reports a missing field at the object that should hold it;
    // point at the field itself. (An unknown field is reported at its own
    // path already.)
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

/// The answer to a body that cannot be read as JSON (too large, not
/// JSON, malformed).
pub(crate) fn json_error(err: JsonPayloadError) -> InputError {
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
    #[error("the backend is unavailable")]
    Unavailable(#[source] Cause),
    /// A write was sent but not answered in time: it may have taken effect.
    /// Answered with 503 and `Retry-After`, code `outcome_unknown`: a retry
    /// with the same idempotency key (or decision id) is safe; one without
    /// may publish twice.
    #[error("the backend did not answer in time; the write may have taken effect")]
    OutcomeUnknown(#[source] Cause),
    /// Anything else: a bug or corrupt data. Answered with 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What the bus or store reported, kept whole as the source of a
/// [`BackendError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Bus(BusError),
}

impl From<StoreError> for BackendError {
    fn from(err: StoreError) -> Self {
        // Contention (one agent's state changing faster than the store's
        // compare-and-set retries) is transient too: the probe retries later.
        if err.is_unavailable() || matches!(err, StoreError::Contention { .. }) {
            Self::Unavailable(Cause::Store(err))
        } else {
            Self::Unexpected(err.into())
        }
    }
}

impl From<BusError> for BackendError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::OutcomeUnknown(_) => Self::OutcomeUnknown(Cause::Bus(err)),
            _ if err.is_unavailable() => Self::Unavailable(Cause::Bus(err)),
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

/// Awaits one bus or store call and maps its failure to the answer, logging
/// it with its sources (`what` says what was being done). The call's
/// deadline is the bus's and store's own (`redis.request_timeout`): a read
/// cut short is unavailable, a write cut short has an unknown outcome.
pub async fn backend<T, E>(what: &str, call: impl Future<Output = Result<T, E>>) -> Result<T, BackendError>
where
    BackendError: From<E>,
{
    let result = call.await.map_err(BackendError::from);
    if let Err(err) = &result {
        let chain = pulse_bus::error_chain(err);
        match err {
            BackendError::Unavailable(_) => tracing::warn!(error = %chain, "{what} failed: backend unavailable"),
            BackendError::OutcomeUnknown(_) => tracing::warn!(error = %chain, "{what}: outcome unknown"),
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

    #[test]
    fn parsing_the_text_once_names_fields_like_parsing_a_value() {
        for body in [
            json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z",
                "checks": [{"name": "x", "level": "L1", "status": "ok"}, {"name": "y", "level": "L4", "status": "ok"}]}),
            json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z",
                "checks": [{"name": "x", "level": "L1"}]}),
            json!({"agent_id": "a", "ts": "2026-11-22T10:00:00Z", "checks": []}),
            json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z", "checks": [], "extra": 1}),
            json!({"report_id": "r", "agent_id": "no spaces", "ts": "2026-11-22T10:00:00Z", "checks": []}),
            json!({"report_id": "r", "agent_id": "a", "ts": "yesterday", "checks": []}),
            json!([1, 2]),
        ] {
            let from_value = parse_body::<Report>(body.clone()).unwrap_err();
            let from_text = parse_json::<Report>(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(from_text, from_value, "{body}");
        }
        let ok = json!({"report_id": "r", "agent_id": "a", "ts": "2026-11-22T10:00:00Z", "checks": []});
        assert_eq!(parse_json::<Report>(ok.to_string().as_bytes()).unwrap(), parse_body::<Report>(ok).unwrap());
    }

    #[test]
    fn text_that_is_not_json_is_malformed() {
        for body in [&b"{\"report_id\": "[..], b"{\"checks\": 5, oops", b"{} {}", b"nope", b""] {
            let err = parse_json::<Report>(body).unwrap_err();
            assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "malformed_json"), "{body:?}");
        }
    }
}
