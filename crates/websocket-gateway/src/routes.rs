//! HTTP routes: the `/ws` upgrade (checks, then hand-off to a session task),
//! `/sse` (in [`sse`](crate::sse)), and the dashboard's static files.

use std::path::Path;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use actix_ws::{CloseCode, CloseReason};
use pulse_auth::AuthError;
use pulse_protocol::browser::close;

use crate::auth;
use crate::connection::Connection;
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
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self.status_code(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        response.json(serde_json::json!({"code": self.code(), "message": self.to_string()}))
    }
}

/// The checks both transports run before accepting: draining, `Origin`,
/// attempts per IP, connection limit.
pub(crate) fn admit(req: &HttpRequest, gw: &Gateway) -> Result<ConnectionPermit, Rejected> {
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
    if let Some(peer) = req.peer_addr()
        && !inner.ip_limiter.allow(peer.ip())
    {
        return refuse("rate", Rejected::TooManyAttempts);
    }
    match gw.acquire_connection() {
        Some(permit) => Ok(permit),
        None => refuse("capacity", Rejected::AtCapacity),
    }
}

/// `GET /ws`: the WebSocket upgrade.
async fn ws(req: HttpRequest, body: web::Payload, gw: web::Data<Gateway>) -> Result<HttpResponse, actix_web::Error> {
    let gw = gw.get_ref().clone();
    let permit = admit(&req, &gw)?;
    let inner = &gw.inner;
    let identity = auth::identify(&req, inner.verifier.as_ref(), inner.settings.auth.anonymous);
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let max = inner.settings.limits.max_frame_size;
    let stream = stream.max_frame_size(max).aggregate_continuations().max_continuation_size(max);
    match identity {
        Ok(identity) => {
            let conn = Connection::new(gw, "ws", permit, identity);
            actix_web::rt::spawn(crate::session::run(conn, session, stream));
        }
        Err(err) => {
            // Refused after the upgrade, with a close code, because a
            // browser cannot see the status of a failed upgrade.
            metrics::rejected("auth");
            let code = if err == AuthError::Expired { close::TOKEN_EXPIRED } else { close::UNAUTHORIZED };
            let reason = CloseReason { code: CloseCode::from(code), description: Some(err.to_string()) };
            actix_web::rt::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), session.close(Some(reason))).await;
                drop((stream, permit));
            });
        }
    }
    Ok(response)
}

/// Mounts `/ws` and `/sse` for `gateway` on an actix-web app. The caller
/// also sets `HttpServer::client_disconnect_timeout(Duration::ZERO)` (see
/// [`Application`](crate::Application)).
pub fn configure(gateway: Gateway) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        cfg.app_data(web::Data::new(gateway))
            .route("/ws", web::get().to(ws))
            .route("/sse", web::get().to(crate::sse::sse));
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
