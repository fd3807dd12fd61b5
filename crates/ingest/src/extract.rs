//! The actix-web extractors of the API: who calls ([`AgentKey`],
//! [`PublisherKey`], [`Reader`]), the trace to continue ([`TraceParent`]),
//! and a JSON body parsed once into its type ([`Json`]).
//!
//! They are the only part of ingest that reads the request and the shared
//! state together: [`auth`](crate::auth) decides, [`error`](crate::error)
//! answers, and this module connects both to actix.

use std::future::{Ready, ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::mime;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::auth::{AuthError, Caller, Reader};
use crate::error::{json_error, parse_json};
use crate::observe::Incoming;
use crate::settings::Role;
use crate::state::IngestState;

fn state(req: &HttpRequest) -> &IngestState {
    req.app_data::<web::Data<IngestState>>().unwrap_or_else(|| unreachable!("the API scope registers IngestState"))
}

/// The bearer credential of a request, `None` without `Authorization`.
fn bearer<'a>(req: &'a HttpRequest, what: &'static str) -> Result<Option<&'a str>, AuthError> {
    pulse_runtime::bearer(req.headers()).map_err(|_| AuthError::NotBearer(what))
}

fn authenticate(req: &HttpRequest, needed: Role) -> Result<Caller, AuthError> {
    let presented = bearer(req, "API key")?.ok_or(AuthError::Missing("API key"))?;
    state(req).api_keys().authenticate_for(presented, needed)
}

/// Extracts the holder of an agent key (`POST /reports`, `/heartbeats`).
#[derive(Debug, Clone)]
pub struct AgentKey(pub Caller);

impl FromRequest for AgentKey {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, Role::Agent).map(Self))
    }
}

/// Extracts the holder of a publisher key (`POST /publish`, `/decisions`).
#[derive(Debug, Clone)]
pub struct PublisherKey(pub Caller);

impl FromRequest for PublisherKey {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, Role::Publisher).map(Self))
    }
}

impl FromRequest for Reader {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let reader = match bearer(req, "token") {
            Err(err) => Err(err),
            Ok(None) if state.anonymous_read() => Ok(Reader::Anonymous),
            Ok(None) => Err(AuthError::Missing("token")),
            Ok(Some(token)) => Reader::from_token(state.verifier(), token, state.anonymous_read()),
        };
        ready(reader)
    }
}

/// The W3C `traceparent` to stamp on the events a request causes: the
/// request span's own context when OpenTelemetry is on, else the caller's
/// header as received (when well-formed), else none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceParent(pub Option<String>);

impl FromRequest for TraceParent {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Extractors run inside the request span, so this is its context.
        let trace = pulse_runtime::current_traceparent()
            .or_else(|| req.extensions().get::<Incoming>().map(|incoming| incoming.0.clone()));
        ready(Ok(Self(trace)))
    }
}

/// A JSON request body, deserialised once, straight from its bytes, into
/// `T`, with errors that name the field at fault (see
/// [`parse_json`]). The body is held to `ingest.max_body_bytes` (413) and
/// must be sent as JSON (`application/json` or `…+json`; 415); malformed
/// JSON is a 400. The errors are those of [`json_config`](crate::error::json_config),
/// which answers for other extractors.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).settings().max_body_bytes;
        let is_json = match req.mime_type() {
            Ok(Some(mime)) => mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON),
            _ => false,
        };
        let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let refuse = |err: JsonPayloadError| -> actix_web::Error { json_error(err).into() };
            if !is_json {
                return Err(refuse(JsonPayloadError::ContentType));
            }
            if let Some(length) = length.filter(|&length| length > limit) {
                return Err(refuse(JsonPayloadError::OverflowKnownLength { length, limit }));
            }
            let mut body = web::BytesMut::with_capacity(length.unwrap_or(1024).min(limit));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| refuse(JsonPayloadError::Payload(e)))?;
                if body.len() + chunk.len() > limit {
                    return Err(refuse(JsonPayloadError::Overflow { limit }));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json).map_err(Into::into)
        })
    }
}
