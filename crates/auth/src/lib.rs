//! Browser authentication for Pulse.
//!
//! Browsers present a JWT whose claims name the channels they may read:
//!
//! ```json
//! {"sub": "user-42", "exp": 1763800000, "channels": ["alerts", "agent:*"]}
//! ```
//!
//! - [`Verifier`] checks a token's signature (HS256 with a shared secret, or
//!   RS256 with a PEM public key) and expiry, and returns its [`Claims`].
//! - [`AuthError`] tells an expired token ([`AuthError::Expired`], the client
//!   should fetch a new one) from one that will never verify
//!   ([`AuthError::Invalid`]).
//! - [`AuthSettings`] is the `[auth]` settings block every service embeds;
//!   [`Verifier::from_settings`] builds the verifier it describes.
//! - [`Claims::sign_hs256`] / [`Claims::sign_rs256`] issue tokens, for tests,
//!   development tools and the standalone demo; [`Claims::sign_for`] signs
//!   with the key of an `[auth]` block (`pulse token`).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pulse_protocol::{Channel, ChannelPattern};
use serde::{Deserialize, Serialize};

/// What a browser token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the holder is; shown in presence and logs.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. A value beyond what the
    /// clock can represent (≥ 2^63) means "never" in practice:
    /// [`time_left`](Self::time_left) saturates instead of overflowing.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch (optional; checked
    /// with the same leeway as `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The channels the holder may read.
    #[serde(default)]
    pub channels: Vec<ChannelPattern>,
}

impl Claims {
    /// Claims for `sub` reading `channels`, valid for `ttl` from now.
    pub fn new(sub: impl Into<String>, channels: Vec<ChannelPattern>, ttl: Duration) -> Self {
        Self { sub: sub.into(), exp: unix_now().saturating_add(ttl.as_secs()), nbf: None, channels }
    }

    /// Whether the token grants reading `channel`.
    pub fn may_read(&self, channel: &Channel) -> bool {
        ChannelPattern::any_matches(&self.channels, channel)
    }

    /// When the token stops being valid; `None` when the clock cannot
    /// represent `exp` (a far-future expiry such as 2^63 s).
    pub fn expires_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.exp))
    }

    /// Time left before expiry (zero if already expired). Computed on whole
    /// seconds without any instant arithmetic, so no `exp` can overflow it;
    /// callers adding it to an instant must use `checked_add`.
    pub fn time_left(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Duration::from_secs(self.exp).saturating_sub(now)
    }

    /// Whether `exp` has passed by this clock (a token inside the leeway
    /// verifies but is expired).
    pub fn is_expired(&self) -> bool {
        self.time_left().is_zero()
    }

    /// A token for these claims signed with an HS256 `secret`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Signing`] when the claims cannot be encoded.
    pub fn sign_hs256(&self, secret: &[u8]) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), self, &EncodingKey::from_secret(secret))
            .map_err(|e| KeyError::Signing(e.to_string()))
    }

    /// A token for these claims signed with an RS256 private key (PEM,
    /// PKCS#1 or PKCS#8).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when the key does not parse,
    /// [`KeyError::Signing`] when the claims cannot be encoded.
    pub fn sign_rs256(&self, private_key_pem: &[u8]) -> Result<String, KeyError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem).map_err(|e| KeyError::InvalidKey(e.to_string()))?;
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), self, &key).map_err(|e| KeyError::Signing(e.to_string()))
    }

    /// A token for these claims that services configured with `settings`
    /// accept: signed with `auth.secret` (HS256). For development tools
    /// such as `pulse token`.
    ///
    /// # Errors
    ///
    /// [`KeyError::MissingSecret`] when `auth.secret` is empty,
    /// [`KeyError::NoSigningKey`] when the settings verify RS256 tokens
    /// (only their issuer holds the private key), [`KeyError::Signing`]
    /// when the claims cannot be encoded.
    pub fn sign_for(&self, settings: &AuthSettings) -> Result<String, KeyError> {
        match settings.algorithm {
            AuthAlgorithm::Hs256 if settings.secret.is_empty() => Err(KeyError::MissingSecret),
            AuthAlgorithm::Hs256 => self.sign_hs256(settings.secret.as_bytes()),
            AuthAlgorithm::Rs256 => Err(KeyError::NoSigningKey),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token was valid but has expired: get a fresh one.
    #[error("token expired")]
    Expired,
    /// The token does not verify (bad signature, wrong algorithm, malformed,
    /// bad claims): retrying with it is pointless.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A key or setting that cannot be used: a start-up error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("auth.algorithm = \"hs256\" needs auth.secret")]
    MissingSecret,
    #[error("auth.algorithm = \"rs256\" needs auth.public_key (PEM) or auth.public_key_file")]
    MissingPublicKey,
    #[error("cannot read auth.public_key_file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("cannot sign token: {0}")]
    Signing(String),
    #[error("auth.algorithm = \"rs256\": tokens are signed by their issuer's private key, which Pulse does not hold")]
    NoSigningKey,
}

/// Which signature browser tokens carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthAlgorithm {
    /// A shared secret (`auth.secret`).
    #[default]
    Hs256,
    /// An RSA public key (`auth.public_key` or `auth.public_key_file`).
    Rs256,
}

/// The `[auth]` settings block.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: AuthAlgorithm,
    /// HS256 shared secret. Empty: no tokens can be verified.
    pub secret: String,
    /// RS256 public key, PEM text.
    pub public_key: String,
    /// RS256 public key, path of a PEM file (used when `public_key` is empty).
    pub public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, in seconds.
    pub leeway_secs: u64,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Whether clients without a token may connect and read every channel.
    pub anonymous: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithm: AuthAlgorithm::Hs256,
            secret: String::new(),
            public_key: String::new(),
            public_key_file: None,
            leeway_secs: 5,
            issuer: None,
            audience: None,
            anonymous: false,
        }
    }
}

// Secrets never reach logs.
impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("algorithm", &self.algorithm)
            .field("secret", &if self.secret.is_empty() { "" } else { "[redacted]" })
            .field("public_key", &if self.public_key.is_empty() { "" } else { "[pem]" })
            .field("public_key_file", &self.public_key_file)
            .field("leeway_secs", &self.leeway_secs)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// Verifies browser tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// Verifies `token` with the configured key; without one, nothing verifies.
///
/// # Errors
/// [`AuthError::Invalid`] when no key is configured or the token does not
/// verify; [`AuthError::Expired`] past its `exp`.
pub fn verify_with(verifier: Option<&Verifier>, token: &str) -> Result<Claims, AuthError> {
    match verifier {
        Some(verifier) => verifier.verify(token),
        None => Err(AuthError::Invalid("no key to verify tokens is configured".into())),
    }
}

/// The one rule for a token a request presents, in every service: verified,
/// it grants its claims (`Some`). With `anonymous` access on, one that does
/// not verify is ignored (`None`, logged at debug): the request proceeds as
/// it would have without it.
///
/// # Errors
/// As [`verify_with`], when `anonymous` is off.
pub fn verify_presented(
    verifier: Option<&Verifier>,
    token: &str,
    anonymous: bool,
) -> Result<Option<Claims>, AuthError> {
    match verify_with(verifier, token) {
        Ok(claims) => Ok(Some(claims)),
        Err(err) if anonymous => {
            ignored(&err);
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Logs a token that anonymous access lets the client do without.
pub fn ignored(err: &AuthError) {
    tracing::debug!(error = %err, "token ignored: it does not verify and anonymous access is on");
}

impl Verifier {
    /// Verifies HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Verifies RS256 tokens against a PEM public key.
    pub fn rs256_pem(public_key_pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem).map_err(|e| KeyError::InvalidKey(e.to_string()))?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        // Off by default in jsonwebtoken: a token not valid yet is refused.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key, validation }
    }

    /// The verifier `settings` describe, or `None` when no key is configured
    /// (then only anonymous access can work).
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Self>, KeyError> {
        let mut verifier = match settings.algorithm {
            AuthAlgorithm::Hs256 if settings.secret.is_empty() => return Ok(None),
            AuthAlgorithm::Hs256 => Self::hs256(settings.secret.as_bytes()),
            AuthAlgorithm::Rs256 => {
                let pem = if !settings.public_key.is_empty() {
                    settings.public_key.clone().into_bytes()
                } else if let Some(path) = &settings.public_key_file {
                    std::fs::read(path)
                        .map_err(|e| KeyError::Unreadable { path: path.display().to_string(), reason: e.to_string() })?
                } else {
                    return Ok(None);
                };
                Self::rs256_pem(&pem)?
            }
        };
        verifier.validation.leeway = settings.leeway_secs;
        if let Some(issuer) = &settings.issuer {
            verifier.validation.set_issuer(&[issuer]);
            verifier.validation.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = &settings.audience {
            verifier.validation.set_audience(&[audience]);
            verifier.validation.required_spec_claims.insert("aud".into());
        }
        Ok(Some(verifier))
    }

    /// Checks the token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("signature does not verify".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("unexpected signing algorithm".into()),
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    AuthError::Invalid("not a JWT".into())
                }
                ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim `{claim}`")),
                ErrorKind::Json(err) => AuthError::Invalid(format!("bad claims: {err}")),
                ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                other => AuthError::Invalid(format!("{other:?}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";
    const RSA_PRIVATE: &str = include_str!("../tests/keys/rs256-private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/keys/rs256-public.pem");

    fn patterns(list: &[&str]) -> Vec<ChannelPattern> {
        list.iter().map(|p| ChannelPattern::parse(p).unwrap()).collect()
    }

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn hs256_round_trip_and_channel_claims() {
        let claims = Claims::new("u1", patterns(&["alerts", "agent:*"]), Duration::from_secs(60));
        let token = claims.sign_hs256(SECRET).unwrap();
        let verified = Verifier::hs256(SECRET).verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert!(verified.may_read(&channel("alerts")));
        assert!(verified.may_read(&channel("agent:web-1")));
        assert!(!verified.may_read(&channel("decisions")));
        assert!(verified.time_left() > Duration::from_secs(50));
    }

    #[test]
    fn rs256_round_trip() {
        let claims = Claims::new("u2", patterns(&["*"]), Duration::from_secs(60));
        let token = claims.sign_rs256(RSA_PRIVATE.as_bytes()).unwrap();
        let verifier = Verifier::rs256_pem(RSA_PUBLIC.as_bytes()).unwrap();
        assert_eq!(verifier.verify(&token).unwrap(), claims);
        // An HS256 token cannot pass as RS256 (algorithm confusion).
        let forged = claims.sign_hs256(RSA_PUBLIC.as_bytes()).unwrap();
        assert!(matches!(verifier.verify(&forged), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn expired_and_invalid_are_told_apart() {
        let verifier = Verifier::hs256(SECRET);
        let mut claims = Claims::new("u", patterns(&["*"]), Duration::ZERO);
        claims.exp = unix_now() - 3600;
        assert_eq!(verifier.verify(&claims.sign_hs256(SECRET).unwrap()), Err(AuthError::Expired));
        let good = Claims::new("u", patterns(&["*"]), Duration::from_secs(60));
        let wrong_key = good.sign_hs256(b"other").unwrap();
        assert_eq!(verifier.verify(&wrong_key), Err(AuthError::Invalid("signature does not verify".into())));
        assert_eq!(verifier.verify("garbage"), Err(AuthError::Invalid("not a JWT".into())));
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_within_the_leeway_only() {
        let verifier = Verifier::hs256(SECRET);
        let mut claims = Claims::new("u", patterns(&["*"]), Duration::from_secs(7200));
        claims.nbf = Some(unix_now() + 3600);
        assert_eq!(
            verifier.verify(&claims.sign_hs256(SECRET).unwrap()),
            Err(AuthError::Invalid("token not valid yet".into()))
        );
        // Clock skew inside the leeway is tolerated.
        claims.nbf = Some(unix_now() + 2);
        assert_eq!(verifier.verify(&claims.sign_hs256(SECRET).unwrap()), Ok(claims));
    }

    #[test]
    fn a_far_future_expiry_verifies_without_overflow() {
        let verifier = Verifier::hs256(SECRET);
        for exp in [1u64 << 63, u64::MAX] {
            let mut claims = Claims::new("u", patterns(&["*"]), Duration::ZERO);
            claims.exp = exp;
            let verified = verifier.verify(&claims.sign_hs256(SECRET).unwrap()).unwrap();
            assert!(verified.time_left() > Duration::from_secs(1 << 62), "{exp}");
            assert!(!verified.is_expired());
            assert_eq!(verified.expires_at(), None, "{exp}");
        }
    }

    #[test]
    fn a_token_expired_inside_the_leeway_verifies_but_is_expired() {
        let mut claims = Claims::new("u", patterns(&["*"]), Duration::ZERO);
        claims.exp = unix_now() - 2;
        let verified = Verifier::hs256(SECRET).verify(&claims.sign_hs256(SECRET).unwrap()).unwrap();
        assert!(verified.is_expired());
        assert!(!Claims::new("u", vec![], Duration::from_secs(60)).is_expired());
    }

    #[test]
    fn bad_channel_patterns_in_claims_are_invalid() {
        #[derive(Serialize)]
        struct Raw {
            sub: &'static str,
            exp: u64,
            channels: Vec<&'static str>,
        }
        let raw = Raw { sub: "u", exp: unix_now() + 60, channels: vec!["bad name"] };
        let token = jsonwebtoken::encode(&Header::default(), &raw, &EncodingKey::from_secret(SECRET)).unwrap();
        let err = Verifier::hs256(SECRET).verify(&token).unwrap_err();
        assert!(err.to_string().contains("bad claims"), "{err}");
    }

    #[test]
    fn settings_build_the_verifier() {
        assert!(Verifier::from_settings(&AuthSettings::default()).unwrap().is_none());
        let settings = AuthSettings { secret: "s3cret".into(), ..Default::default() };
        assert!(Verifier::from_settings(&settings).unwrap().is_some());
        assert!(!format!("{settings:?}").contains("s3cret"));
        let rs = AuthSettings { algorithm: AuthAlgorithm::Rs256, public_key: "nope".into(), ..Default::default() };
        assert!(matches!(Verifier::from_settings(&rs), Err(KeyError::InvalidKey(_))));
        let rs = AuthSettings {
            algorithm: AuthAlgorithm::Rs256,
            public_key_file: Some("/nonexistent.pem".into()),
            ..Default::default()
        };
        assert!(matches!(Verifier::from_settings(&rs), Err(KeyError::Unreadable { .. })));
    }

    #[test]
    fn sign_for_uses_the_settings_secret() {
        let claims = Claims::new("dev", patterns(&["alerts"]), Duration::from_secs(60));
        let settings = AuthSettings { secret: "s3cret".into(), ..Default::default() };
        let token = claims.sign_for(&settings).unwrap();
        let verifier = Verifier::from_settings(&settings).unwrap().unwrap();
        assert_eq!(verifier.verify(&token).unwrap(), claims);
        assert_eq!(claims.sign_for(&AuthSettings::default()), Err(KeyError::MissingSecret));
        let rs = AuthSettings { algorithm: AuthAlgorithm::Rs256, ..Default::default() };
        assert_eq!(claims.sign_for(&rs), Err(KeyError::NoSigningKey));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_set() {
        let settings = AuthSettings { secret: "s".into(), issuer: Some("pulse".into()), ..Default::default() };
        let verifier = Verifier::from_settings(&settings).unwrap().unwrap();
        let token = Claims::new("u", patterns(&["*"]), Duration::from_secs(60)).sign_hs256(b"s").unwrap();
        assert!(matches!(verifier.verify(&token), Err(AuthError::Invalid(_))));
    }
}
