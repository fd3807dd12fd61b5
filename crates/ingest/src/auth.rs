//! Who may call the API.
//!
//! - **Writes** (`/reports`, `/heartbeats`, `/publish`, `/decisions`) take an
//!   API key from settings in `Authorization: Bearer <key>`. Each key has a
//!   [`Role`] (agent or publisher) and may be limited to channel patterns.
//!   No key or an unknown key is 401; a key of the wrong role, or writing to
//!   a channel outside its patterns, is 403.
//! - **Reads** take the browser JWT the gateway accepts (verified by
//!   [`pulse_auth`]), and grant the channels of its `channels` claim. With
//!   `auth.anonymous = true` a request without a token may read everything,
//!   and a token that does not verify is ignored (the request reads
//!   anonymously; logged at debug).

//!
//! The actix extractors that apply these rules to a request are in
//! [`extract`](crate::extract).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use pulse_auth::Claims;
use pulse_protocol::{Channel, ChannelPattern};
use pulse_runtime::Secret;

use crate::body::error_response;
use crate::settings::{ApiKeySettings, Role};

/// The configured API keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

#[derive(Debug, Clone)]
struct ApiKey {
    secret: Secret,
    caller: Caller,
}

/// A configuration of API keys that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyConfigError {
    #[error("ingest.api_keys: the key named {0:?} is empty")]
    EmptyKey(String),
    #[error("ingest.api_keys: the keys named {0:?} and {1:?} are the same key")]
    DuplicateKey(String, String),
}

impl ApiKeys {
    /// The keys `settings` list; refuses empty and repeated keys.
    pub fn new(settings: &[ApiKeySettings]) -> Result<Self, ApiKeyConfigError> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(settings.len());
        for s in settings {
            if s.key.expose().trim().is_empty() {
                return Err(ApiKeyConfigError::EmptyKey(s.name.clone()));
            }
            if let Some(other) = keys.iter().find(|k| k.secret == s.key) {
                return Err(ApiKeyConfigError::DuplicateKey(other.caller.name.to_string(), s.name.clone()));
            }
            keys.push(ApiKey {
                secret: s.key.clone(),
                caller: Caller {
                    name: Arc::from(s.name.as_str()),
                    role: s.role,
                    channels: s.channels.clone().map(Arc::from),
                },
            });
        }
        Ok(Self { keys })
    }

    /// The holder of `presented`, if it is one of the keys.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        // Compare against every key in constant time, so that timing tells
        // nothing about how much of a guess was right.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(key.secret.expose().as_bytes(), presented.as_bytes()) {
                found = Some(key.caller.clone());
            }
        }
        found
    }

    /// The holder of `presented` if it is one of the keys and has the
    /// `needed` role.
    ///
    /// # Errors
    ///
    /// [`AuthError::UnknownKey`] (401) or [`AuthError::WrongRole`] (403).
    pub fn authenticate_for(&self, presented: &str, needed: Role) -> Result<Caller, AuthError> {
        let caller = self.authenticate(presented).ok_or(AuthError::UnknownKey)?;
        if caller.role != needed {
            return Err(AuthError::WrongRole {
                name: caller.name.to_string(),
                role: caller.role.as_str(),
                needed: needed.as_str(),
            });
        }
        Ok(caller)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The holder of a valid API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name from settings, for logs.
    pub name: Arc<str>,
    pub role: Role,
    /// Channels the key may write; `None` is every channel.
    channels: Option<Arc<[ChannelPattern]>>,
}

impl Caller {
    /// Whether the key may write to `channel`.
    pub fn may_write(&self, channel: &Channel) -> bool {
        self.channels.as_deref().is_none_or(|patterns| ChannelPattern::any_matches(patterns, channel))
    }

    /// [`may_write`](Self::may_write) as a 403 naming the request `field`
    /// that led to the channel, if one did.
    pub fn check_write(&self, channel: &Channel, field: Option<&str>) -> Result<(), AuthError> {
        if self.may_write(channel) {
            Ok(())
        } else {
            Err(AuthError::ChannelForbidden { channel: channel.clone(), field: field.map(str::to_owned) })
        }
    }
}

/// Who is reading.
#[derive(Debug, Clone)]
pub enum Reader {
    /// No token, and anonymous reads are allowed: every channel.
    Anonymous,
    /// A browser token: the channels of its claims.
    Token(Claims),
}

impl Reader {
    /// The reader a presented browser token makes, by the rule every
    /// service shares ([`pulse_auth::verify_presented`]): verified, or
    /// ignored when anonymous reads are allowed.
    ///
    /// # Errors
    ///
    /// [`AuthError::TokenExpired`] or [`AuthError::InvalidToken`] (401).
    pub fn from_token(
        verifier: Option<&pulse_auth::Verifier>,
        token: &str,
        anonymous: bool,
    ) -> Result<Self, AuthError> {
        pulse_auth::verify_presented(verifier, token, anonymous)
            .map(|claims| claims.map_or(Reader::Anonymous, Reader::Token))
            .map_err(|e| match e {
                pulse_auth::AuthError::Expired => AuthError::TokenExpired,
                pulse_auth::AuthError::Invalid(why) => AuthError::InvalidToken(why),
            })
    }

    /// Whether the reader may read `channel`.
    pub fn may_read(&self, channel: &Channel) -> bool {
        match self {
            Self::Anonymous => true,
            Self::Token(claims) => claims.may_read(channel),
        }
    }

    /// [`may_read`](Self::may_read) as a 403 naming the request `field`
    /// that led to the channel.
    pub fn check_read(&self, channel: &Channel, field: &str) -> Result<(), AuthError> {
        if self.may_read(channel) {
            Ok(())
        } else {
            Err(AuthError::ChannelForbidden { channel: channel.clone(), field: Some(field.to_owned()) })
        }
    }
}

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs `Authorization: Bearer <{0}>`")]
    Missing(&'static str),
    #[error("the Authorization header must read `Bearer <{0}>`")]
    NotBearer(&'static str),
    #[error("the API key is not valid")]
    UnknownKey,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("the API key {name:?} has role {role}; this endpoint needs role {needed}")]
    WrongRole { name: String, role: &'static str, needed: &'static str },
    #[error("not allowed on channel {:?}", .channel.as_str())]
    ChannelForbidden { channel: Channel, field: Option<String> },
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::WrongRole { .. } | Self::ChannelForbidden { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (code, field) = match self {
            Self::ChannelForbidden { field, .. } => ("forbidden", field.clone()),
            Self::WrongRole { .. } => ("forbidden", None),
            _ => ("unauthorized", None),
        };
        let mut response = error_response(status, code, self.to_string(), field);
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                Self::TokenExpired | Self::InvalidToken(_) | Self::UnknownKey => r#"Bearer error="invalid_token""#,
                _ => "Bearer",
            };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, key: &str, role: Role, channels: Option<&[&str]>) -> ApiKeySettings {
        ApiKeySettings {
            name: name.into(),
            key: Secret::new(key),
            role,
            channels: channels.map(|c| c.iter().map(|p| ChannelPattern::parse(p).unwrap()).collect()),
        }
    }

    #[test]
    fn finds_the_holder_of_a_key() {
        let keys = ApiKeys::new(&[
            key("fleet", "agent-key", Role::Agent, None),
            key("runner", "pub-key", Role::Publisher, Some(&["deploys", "agent:*"])),
        ])
        .unwrap();
        assert_eq!(keys.authenticate("agent-key").unwrap().role, Role::Agent);
        let runner = keys.authenticate("pub-key").unwrap();
        assert_eq!(&*runner.name, "runner");
        assert!(runner.may_write(&Channel::parse("deploys").unwrap()));
        assert!(runner.may_write(&Channel::parse("agent:a").unwrap()));
        assert!(!runner.may_write(&Channel::parse("alerts").unwrap()));
        assert!(keys.authenticate("pub-ke").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn refuses_empty_and_repeated_keys() {
        assert_eq!(
            ApiKeys::new(&[key("a", " ", Role::Agent, None)]).unwrap_err(),
            ApiKeyConfigError::EmptyKey("a".into())
        );
        let err = ApiKeys::new(&[key("a", "k", Role::Agent, None), key("b", "k", Role::Publisher, None)]).unwrap_err();
        assert_eq!(err, ApiKeyConfigError::DuplicateKey("a".into(), "b".into()));
        assert!(!err.to_string().contains("\"k\""), "the key itself is not in the message: {err}");
    }

    #[test]
    fn unauthorized_answers_carry_a_challenge() {
        let response = AuthError::UnknownKey.error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_some());
        let forbidden =
            AuthError::ChannelForbidden { channel: Channel::parse("x").unwrap(), field: Some("channel".into()) };
        assert_eq!(forbidden.error_response().status(), StatusCode::FORBIDDEN);
    }
}
