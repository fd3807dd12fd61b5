//! CORS for the HTTP routes browsers call across origins (`/api`, `/sse`),
//! answered from the same `allowed_origins` list the gateway checks
//! WebSocket upgrades against.

use std::sync::Arc;

use actix_cors::Cors;
use actix_web::http::{Method, header};

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 3600;

/// The CORS middleware for `allowed` origins: each entry an origin such as
/// `http://localhost:5173` (compared without a trailing `/`, ignoring case),
/// or `*` for any. Preflights (`OPTIONS` with
/// `Access-Control-Request-Method`) are answered; simple and actual
/// requests from an allowed origin get `Access-Control-Allow-Origin`.
///
/// An origin not on the list gets no CORS headers, and its request is
/// otherwise served as if it had none, so that the browser refuses the
/// answer to the page. An empty list (same origin only) allows none:
/// same-origin pages need no CORS.
pub fn cors(allowed: &[String]) -> Cors {
    let allowed: Arc<[String]> = allowed.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect();
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            let Ok(origin) = origin.to_str() else { return false };
            allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        })
        .allowed_methods([Method::GET, Method::HEAD, Method::POST])
        // Authorization, Content-Type, Last-Event-ID, traceparent, … : the
        // origin check is what protects, not a list of header names.
        .allow_any_header()
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(PREFLIGHT_MAX_AGE)
        // Same-origin POSTs carry an `Origin` too: never refuse a request
        // for its origin here (the gateway's own check answers 403 on
        // `/ws` and `/sse`).
        .block_on_origin_mismatch(false)
}
