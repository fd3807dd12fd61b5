//! Settings of pulse-ingest: built-in defaults (`config/default.toml`), a
//! file, then `PULSE__SECTION__KEY` environment variables.

use std::path::Path;
use std::time::Duration;

use pulse_protocol::ChannelPattern;
pub use pulse_runtime::BusKind;
use pulse_runtime::{HttpSettings, RedisSettings, Secret, SettingsError, TelemetrySettings};
pub use pulse_store::StoreSettings;
use serde::Deserialize;

/// The built-in defaults, embedded so the binary runs without any file.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything pulse-ingest reads at start.
///
/// Unknown top-level sections are ignored, because deployments often give
/// every service the same `PULSE__…` environment; unknown keys inside a
/// section are errors, because they are typos.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where events and agent state live.
    pub bus: BusKind,
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// Used when `bus = "redis"`; also the history length of the memory bus.
    #[serde(default)]
    pub redis: RedisSettings,
    pub ingest: IngestSettings,
    /// Browser tokens on the read API: the same `[auth]` block as the
    /// gateway's, so one setting configures both. `auth.anonymous = true`
    /// opens the read API to requests without a token.
    #[serde(default)]
    pub auth: pulse_auth::AuthSettings,
    /// Agent state, alerts and dedupe (`[store]`).
    #[serde(default)]
    pub store: StoreSettings,
}

impl Settings {
    /// Defaults, then `file` (or `PULSE_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        pulse_runtime::load_settings("ingest", DEFAULTS, file)
    }

    /// The built-in defaults alone, ignoring files and the environment: a
    /// starting point for tests and embedding.
    pub fn defaults() -> Result<Self, SettingsError> {
        pulse_runtime::SettingsLoader::new("ingest", DEFAULTS).env_vars(Vec::<(String, String)>::new()).load()
    }

    /// The Redis settings ingest connects with: `[redis]`, with the
    /// deadline of the older `ingest.backend_timeout` when it is set.
    pub fn redis(&self) -> RedisSettings {
        let mut redis = self.redis.clone();
        if let Some(timeout) = self.ingest.backend_timeout {
            redis.request_timeout = timeout;
        }
        redis
    }
}

/// The `[store]` block, under its former name.
pub type StoreSection = StoreSettings;

/// Limits and timings of the API (`[ingest]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most check results in one report; more get 422.
    pub max_checks: usize,
    /// Most events in one batch publish, and most agents a decision names.
    pub max_batch_events: usize,
    /// How long a publish idempotency key or a decision id is remembered.
    #[serde(with = "pulse_runtime::duration")]
    pub idempotency_ttl: Duration,
    /// Renamed `redis.request_timeout` (the one deadline of every Redis
    /// call); when set, it still sets that deadline for ingest.
    #[serde(default, deserialize_with = "optional_duration")]
    pub backend_timeout: Option<Duration>,
    /// `Retry-After` of a 503.
    pub retry_after_secs: u32,
    /// History page size when the request gives no `limit`.
    pub history_default_limit: usize,
    /// Largest `limit` a history request may ask for.
    pub history_max_limit: usize,
    /// Keys of agents and publishers. None configured: every write is 401.
    /// In a file, a list of tables (`[[ingest.api_keys]]`); in the
    /// environment (`PULSE__INGEST__API_KEYS`), a JSON array of the same
    /// tables, or `name:role:key` entries separated by commas (see
    /// [`api_keys`]).
    #[serde(default, deserialize_with = "api_keys::deserialize")]
    pub api_keys: Vec<ApiKeySettings>,
    /// Origins of pages on other origins that may call the API (CORS), such
    /// as `http://localhost:5173`; `*` any. Empty: same origin only. The
    /// gateway's `gateway.allowed_origins` is the same list for `/ws` and
    /// `/sse`.
    #[serde(default, deserialize_with = "pulse_runtime::string_list::deserialize")]
    pub allowed_origins: Vec<String>,
}

/// One API key (`[[ingest.api_keys]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Names the key in logs and metrics, which never show the key itself.
    pub name: String,
    pub key: Secret,
    pub role: Role,
    /// Channels the key may write to; absent means every channel. For an
    /// agent key these are matched against `agent:{agent_id}`, so
    /// `["agent:web-*"]` lets it report for the `web-*` agents only.
    #[serde(default)]
    pub channels: Option<Vec<ChannelPattern>>,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    pulse_runtime::duration::deserialize(deserializer).map(Some)
}

/// Serde helper for `ingest.api_keys`: a list of [`ApiKeySettings`] tables
/// (a settings file), or one string, which is what an environment variable
/// holds:
///
/// - a JSON array of the same tables:
///   `[{"name":"fleet","key":"…","role":"agent","channels":["agent:web-*"]}]`;
/// - or `name:role:key` entries separated by commas, each key valid on
///   every channel: `fleet:agent:k1,runner:publisher:k2`.
///
/// An empty string is no key.
pub mod api_keys {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    use super::{ApiKeySettings, Role};

    /// Deserialises the keys, see the [module](self) docs.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ApiKeySettings>, D::Error> {
        deserializer.deserialize_any(KeysVisitor)
    }

    /// Parses the string form, see the [module](self) docs.
    ///
    /// # Errors
    ///
    /// A message naming the entry that does not parse (never the key).
    pub fn parse(text: &str) -> Result<Vec<ApiKeySettings>, String> {
        let text = text.trim();
        if text.starts_with('[') {
            return serde_json::from_str(text).map_err(|e| format!("not a JSON array of API keys: {e}"));
        }
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(i, entry)| {
                let mut parts = entry.splitn(3, ':');
                let (Some(name), Some(role), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(format!("API key entry {} is not `name:role:key`", i + 1));
                };
                let role = match role.trim() {
                    "agent" => Role::Agent,
                    "publisher" => Role::Publisher,
                    other => {
                        return Err(format!(
                            "API key {:?} has role {other:?}; expected agent or publisher",
                            name.trim()
                        ));
                    }
                };
                Ok(ApiKeySettings {
                    name: name.trim().to_owned(),
                    key: key.trim().to_owned().into(),
                    role,
                    channels: None,
                })
            })
            .collect()
    }

    struct KeysVisitor;

    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Vec<ApiKeySettings>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of API key tables, a JSON array of them, or `name:role:key` entries")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse(text).map_err(E::custom)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<ApiKeySettings>::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Probe agent: `POST /reports` and `POST /heartbeats`.
    Agent,
    /// A backend: `POST /publish` and `POST /decisions`.
    Publisher,
}

impl Role {
    /// The role as written in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Publisher => "publisher",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_the_documentation() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.bus, BusKind::Redis);
        assert_eq!(s.http.port, 8081);
        assert_eq!(s.ingest.max_body_bytes, 256 * 1024);
        assert_eq!(s.ingest.max_checks, 256);
        assert_eq!(s.ingest.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(s.ingest.backend_timeout, None);
        assert_eq!(s.redis().request_timeout, Duration::from_secs(2));
        assert_eq!(s.store, StoreSettings::default());
        assert!(!s.auth.anonymous);
        assert!(s.ingest.api_keys.is_empty());
    }

    #[test]
    fn api_keys_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest.toml");
        std::fs::write(
            &path,
            r#"
bus = "memory"
[auth]
secret = "s3cret"
anonymous = true
[[ingest.api_keys]]
name = "fleet"
key = "k1"
role = "agent"
channels = ["agent:web-*"]
[[ingest.api_keys]]
name = "runner"
key = "k2"
role = "publisher"
"#,
        )
        .unwrap();
        let s: Settings = pulse_runtime::SettingsLoader::new("ingest", DEFAULTS)
            .file(Some(&path))
            .env_vars(Vec::<(String, String)>::new())
            .load()
            .unwrap();
        assert_eq!(s.bus, BusKind::Memory);
        assert!(s.auth.anonymous);
        let keys = &s.ingest.api_keys;
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].role, Role::Agent);
        assert_eq!(keys[0].channels.as_ref().unwrap()[0].as_str(), "agent:web-*");
        assert!(keys[1].channels.is_none());
        let debug = format!("{s:?}");
        assert!(!debug.contains("k1") && !debug.contains("s3cret"), "secrets are never printed: {debug}");
    }

    #[test]
    fn api_keys_from_the_environment() {
        let load = |value: &str| {
            pulse_runtime::SettingsLoader::new("ingest", DEFAULTS)
                .env_vars([("PULSE__INGEST__API_KEYS", value)])
                .load::<Settings>()
        };
        let s = load("fleet:agent:k1, runner:publisher:k2:with:colons").unwrap();
        let keys = &s.ingest.api_keys;
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].name.as_str(), keys[0].role, keys[0].key.expose()), ("fleet", Role::Agent, "k1"));
        assert_eq!(
            (keys[1].name.as_str(), keys[1].role, keys[1].key.expose()),
            ("runner", Role::Publisher, "k2:with:colons")
        );
        assert!(keys[0].channels.is_none());

        let s = load(r#"[{"name":"web","key":"k3","role":"agent","channels":["agent:web-*"]}]"#).unwrap();
        let keys = &s.ingest.api_keys;
        assert_eq!(keys[0].channels.as_ref().unwrap()[0].as_str(), "agent:web-*");
        assert_eq!(keys[0].key.expose(), "k3");

        assert!(load("").unwrap().ingest.api_keys.is_empty());
        let err = load("fleet:admin:k1").unwrap_err();
        assert!(err.to_string().contains("ingest.api_keys") && err.to_string().contains("admin"), "{err}");
        assert!(!err.to_string().contains("k1"), "the key is never in a message: {err}");
        let err = load("just-a-key").unwrap_err();
        assert!(err.to_string().contains("name:role:key"), "{err}");
    }

    #[test]
    fn backend_timeout_still_sets_the_deadline() {
        let s: Settings = pulse_runtime::SettingsLoader::new("ingest", DEFAULTS)
            .env_vars([("PULSE__INGEST__BACKEND_TIMEOUT", "750ms")])
            .load()
            .unwrap();
        assert_eq!(s.redis().request_timeout, Duration::from_millis(750));
    }

    #[test]
    fn unknown_bus_names_the_key() {
        let err = pulse_runtime::SettingsLoader::new("ingest", DEFAULTS)
            .env_vars([("PULSE__BUS", "postgres")])
            .load::<Settings>()
            .unwrap_err();
        assert!(err.to_string().contains("bus"), "{err}");
    }
}
