//! Admission: the checks every new connection passes before it starts,
//! whatever its transport, and [`Rejected`], the answer when it does not.

use actix_web::dev::RequestHead;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use pulse_auth::AuthError;

use crate::auth;
use crate::gateway::Gateway;
use crate::limits::ConnectionPermit;
use crate::metrics;

/// Why a connection was refused before it started. The body is
/// `{"code": "...", "message": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("this instance is draining; connect to another")]
    Draining,
    #[error("origin {0:?} is not allowed")]
    Origin(String),
    #[error("too many connection attempts from this address; retry in a second")]
    TooManyAttempts,
    #[error("this instance is at its connection limit; retry later")]
    AtCapacity,
    #[error("{0}")]
    Unauthorized(String),
    #[error("token expired; get a fresh one")]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidChannel(String),
    #[error("{0}")]
    TooManySubscriptions(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
}

impl Rejected {
    fn code(&self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::Origin(_) => "origin_not_allowed",
            Self::TooManyAttempts => "rate_limited",
            Self::AtCapacity => "at_capacity",
            Self::Unauthorized(_) => "unauthorized",
            Self::TokenExpired => "token_expired",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidChannel(_) => "invalid_channel",
            Self::TooManySubscriptions(_) => "too_many_subscriptions",
            Self::Unavailable(_) => "unavailable",
            Self::NotFound(_) => "not_found",
        }
    }
}

impl From<AuthError> for Rejected {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Expired => Self::TokenExpired,
            AuthError::Invalid(_) => Self::Unauthorized(err.to_string()),
        }
    }
}

impl ResponseError for Rejected {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Draining | Self::AtCapacity | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Origin(_) | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) | Self::TokenExpired => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) | Self::InvalidChannel(_) | Self::TooManySubscriptions(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.retry_later() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        response.content_type("application/json").body(self.body())
    }
}

impl Rejected {
    /// Whether the answer carries `Retry-After: 1` (the same request may
    /// succeed in a moment).
    pub(crate) fn retry_later(&self) -> bool {
        matches!(self.status_code(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS)
    }

    /// `{"code": "...", "message": "..."}`.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({"code": self.code(), "message": self.to_string()}).to_string()
    }
}

/// The checks both transports run before accepting: draining, `Origin`,
/// attempts per IP, connection limit.
pub(crate) fn admit(req: &RequestHead, gw: &Gateway) -> Result<ConnectionPermit, Rejected> {
    let refuse = |reason: &'static str, rejected: Rejected| {
        metrics::rejected(reason);
        Err(rejected)
    };
    if gw.is_draining() {
        return refuse("draining", Rejected::Draining);
    }
    if !auth::origin_allowed(req, &gw.settings().gateway.allowed_origins) {
        let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?").to_owned();
        return refuse("origin", Rejected::Origin(origin));
    }
    if let Some(peer) = req.peer_addr
        && !gw.allow_attempt_from(gw.settings().http.client_ip(peer.ip(), &req.headers))
    {
        return refuse("rate", Rejected::TooManyAttempts);
    }
    match gw.acquire_connection() {
        Some(permit) => Ok(permit),
        None => refuse("capacity", Rejected::AtCapacity),
    }
}
