//! Who a connection is, where its token comes from, and the `Origin` check.

use std::time::{Duration, Instant};

use actix_web::dev::RequestHead;
use actix_web::http::header;
use pulse_auth::{AuthError, Claims, Verifier};
use pulse_protocol::Channel;

/// A connection's identity.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// No token yet; anonymous access is off. Only `auth` and `ping` work.
    Unauthenticated,
    /// Anonymous access is on: every channel may be read.
    Anonymous,
    /// A verified token.
    User { claims: Box<Claims>, expires: Instant },
}

/// The latest deadline a token sets: an expiry further ahead (up to `exp`
/// ≥ 2^63, which no clock represents) counts as this far, so the deadline
/// arithmetic never overflows.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

impl Identity {
    /// A verified token's identity. Its deadline is capped at
    /// [`FAR_FUTURE`]: a far-future `exp` is honoured as "not within the
    /// life of this connection", never refused and never an overflow.
    pub(crate) fn from_claims(claims: Claims) -> Self {
        let now = Instant::now();
        let expires = now.checked_add(claims.time_left().min(FAR_FUTURE)).unwrap_or(now);
        Self::User { claims: Box::new(claims), expires }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        !matches!(self, Self::Unauthenticated)
    }

    pub(crate) fn may_read(&self, channel: &Channel) -> bool {
        match self {
            Self::Unauthenticated => false,
            Self::Anonymous => true,
            Self::User { claims, .. } => claims.may_read(channel),
        }
    }

    /// The name shown in presence.
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::User { claims, .. } => &claims.sub,
            _ => "anonymous",
        }
    }
}

/// The identity a request carries: its token (header, then `token` query
/// parameter) verified, else anonymous or unauthenticated per settings.
///
/// With anonymous access on, a token that verifies grants its claims, and
/// one that does not (bad, expired, or no key configured) is ignored: the
/// request proceeds anonymously, as it would have without it.
pub(crate) fn identify(req: &RequestHead, verifier: Option<&Verifier>, anonymous: bool) -> Result<Identity, AuthError> {
    match request_token(req) {
        Some(token) => Ok(pulse_auth::verify_presented(verifier, &token, anonymous)?
            .map_or(Identity::Anonymous, Identity::from_claims)),
        None if anonymous => Ok(Identity::Anonymous),
        None => Ok(Identity::Unauthenticated),
    }
}

/// `Authorization: Bearer …`, else the `token` query parameter (last resort:
/// query strings end up in logs).
fn request_token(req: &RequestHead) -> Option<String> {
    if let Ok(Some(token)) = pulse_runtime::bearer(req.headers()) {
        return Some(token.to_owned());
    }
    query_param(req.uri.query().unwrap_or(""), "token")
}

/// A decoded query parameter.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
        .ok()?
        .0
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Whether the request's `Origin` may connect. No `Origin` (not a browser)
/// passes; `*` allows any; an empty list allows only the gateway's own
/// origin (the `Host` the request was sent to).
pub(crate) fn origin_allowed(req: &RequestHead, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    if allowed.is_empty() {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        return request_host(req).is_some_and(|host| origin_host.eq_ignore_ascii_case(host));
    }
    false
}

/// The host the client addressed: `X-Forwarded-Host` (set by a proxy in
/// front), else `Host`, else the request line's authority.
fn request_host(req: &RequestHead) -> Option<&str> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    header(header::HeaderName::from_static("x-forwarded-host"))
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .or_else(|| header(header::HOST))
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn origin_rules() {
        let allowed = vec!["https://dash.example".to_owned()];
        let req =
            TestRequest::default().insert_header(("Origin", "https://dash.example")).to_http_request().head().clone();
        assert!(origin_allowed(&req, &allowed));
        let req =
            TestRequest::default().insert_header(("Origin", "https://evil.example")).to_http_request().head().clone();
        assert!(!origin_allowed(&req, &allowed));
        assert!(origin_allowed(&req, &["*".to_owned()]));
        let req = TestRequest::default().to_http_request().head().clone();
        assert!(origin_allowed(&req, &allowed));
        let req = TestRequest::default()
            .insert_header(("Host", "gw.example:8080"))
            .insert_header(("Origin", "http://gw.example:8080"))
            .to_http_request()
            .head()
            .clone();
        assert!(origin_allowed(&req, &[]));
        let req = TestRequest::default()
            .insert_header(("Host", "gw.example:8080"))
            .insert_header(("Origin", "http://other.example"))
            .to_http_request()
            .head()
            .clone();
        assert!(!origin_allowed(&req, &[]));
    }

    #[test]
    fn token_sources() {
        let req =
            TestRequest::default().insert_header(("Authorization", "Bearer abc")).to_http_request().head().clone();
        assert_eq!(request_token(&req).as_deref(), Some("abc"));
        let req = TestRequest::with_uri("/ws?token=a%2Bb").to_http_request().head().clone();
        assert_eq!(request_token(&req).as_deref(), Some("a+b"));
        assert_eq!(request_token(TestRequest::default().to_http_request().head()), None);
    }
}
