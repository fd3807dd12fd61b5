//! Reading credentials from HTTP requests, the same way in every service.

use actix_web::http::header::{self, HeaderMap};

/// An `Authorization` header that is not `Bearer <credential>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Authorization header must read `Bearer <credential>`")]
pub struct NotBearer;

/// The credential of `Authorization: Bearer <credential>` (the scheme in
/// any case, RFC 9110 section 11.1), trimmed; `Ok(None)` without an
/// `Authorization` header.
///
/// # Errors
///
/// [`NotBearer`] for another scheme, an empty credential, or a value that
/// is not visible ASCII.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, NotBearer> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| NotBearer)?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or(NotBearer)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(NotBearer);
    }
    Ok(Some(credential))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_bearer_credentials() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&with("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer(&with("bearer  abc ")), Ok(Some("abc")));
        assert_eq!(bearer(&with("BEARER abc")), Ok(Some("abc")));
        for bad in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            assert_eq!(bearer(&with(bad)), Err(NotBearer), "{bad:?}");
        }
    }
}
