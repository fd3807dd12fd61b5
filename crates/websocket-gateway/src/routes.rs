//! HTTP routes: `/sse` (in [`sse`](crate::sse)), the answer to a `/ws`
//! request that is not an upgrade, the dashboard's static files, and the
//! admission checks both transports share. The WebSocket upgrade itself is
//! taken below the router, in [`upgrade`](crate::upgrade).

use std::path::Path;

use actix_web::dev::RequestHead;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError, web};
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
    let inner = &gw.inner;
    let refuse = |reason: &'static str, rejected: Rejected| {
        metrics::rejected(reason);
        Err(rejected)
    };
    if gw.is_draining() {
        return refuse("draining", Rejected::Draining);
    }
    if !auth::origin_allowed(req, &inner.settings.gateway.allowed_origins) {
        let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?").to_owned();
        return refuse("origin", Rejected::Origin(origin));
    }
    if let Some(peer) = req.peer_addr
        && !inner.ip_limiter.allow(inner.settings.http.client_ip(peer.ip(), &req.headers))
    {
        return refuse("rate", Rejected::TooManyAttempts);
    }
    match gw.acquire_connection() {
        Some(permit) => Ok(permit),
        None => refuse("capacity", Rejected::AtCapacity),
    }
}

/// `GET /ws` without the upgrade headers (upgrades never reach the router).
async fn not_an_upgrade() -> Result<HttpResponse, Rejected> {
    Err(Rejected::BadRequest("expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into()))
}

/// Mounts `/sse` (and the answer to a plain `GET /ws`) for `gateway` on an
/// actix-web app. Serve the app with [`serve`](crate::serve), which takes
/// the WebSocket upgrades.
pub fn configure(gateway: Gateway) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        // CORS for `/sse` from the same list as the `Origin` check.
        let cors = pulse_runtime::cors(&gateway.settings().gateway.allowed_origins);
        cfg.app_data(web::Data::new(gateway))
            .route("/ws", web::get().to(not_an_upgrade))
            .service(web::resource("/sse").wrap(cors).route(web::get().to(crate::sse::sse)));
    }
}

/// Serves the dashboard from `dir` at `/` if the directory exists; mount
/// it last, as it answers every path.
pub fn configure_static(dir: Option<&Path>) -> impl FnOnce(&mut web::ServiceConfig) + Clone + use<> {
    let dir = dir.filter(|d| d.is_dir()).map(Path::to_path_buf);
    move |cfg| {
        if let Some(dir) = dir {
            cfg.service(actix_files::Files::new("/", dir).index_file("index.html"));
        }
    }
}
