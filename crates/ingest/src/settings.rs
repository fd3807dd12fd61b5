//! Settings of pulse-ingest: built-in defaults (`config/default.toml`), a
//! file, then `PULSE__SECTION__KEY` environment variables.

use std::path::Path;
use std::time::Duration;

use pulse_protocol::ChannelPattern;
use pulse_runtime::{HttpSettings, RedisSettings, Secret, SettingsError, TelemetrySettings};
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
    #[serde(default)]
    pub store: StoreSection,
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
}

/// Agent state and dedupe (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// How long a `report_id` is remembered: a retry within it is a duplicate.
    #[serde(with = "pulse_runtime::duration")]
    pub dedupe_ttl: Duration,
    /// How many resolved alerts `GET /alerts` shows.
    pub recent_alerts: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        let defaults = pulse_store::StoreSettings::default();
        Self { dedupe_ttl: defaults.dedupe_ttl, recent_alerts: defaults.recent_alerts }
    }
}

impl StoreSection {
    /// The store's own settings type.
    pub fn to_store_settings(&self) -> pulse_store::StoreSettings {
        pulse_store::StoreSettings {
            dedupe_ttl: self.dedupe_ttl,
            recent_alerts: self.recent_alerts,
            ..pulse_store::StoreSettings::default()
        }
    }
}

/// Which implementation of the bus and store to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Redis: state and history are shared by every replica.
    Redis,
    /// In-process: for one machine and for development.
    Memory,
}

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
    /// Longest a request waits on the bus or store before answering 503.
    #[serde(with = "pulse_runtime::duration")]
    pub backend_timeout: Duration,
    /// `Retry-After` of a 503.
    pub retry_after_secs: u32,
    /// History page size when the request gives no `limit`.
    pub history_default_limit: usize,
    /// Largest `limit` a history request may ask for.
    pub history_max_limit: usize,
    /// Keys of agents and publishers. None configured: every write is 401.
    #[serde(default)]
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
    fn unknown_bus_names_the_key() {
        let err = pulse_runtime::SettingsLoader::new("ingest", DEFAULTS)
            .env_vars([("PULSE__BUS", "postgres")])
            .load::<Settings>()
            .unwrap_err();
        assert!(err.to_string().contains("bus"), "{err}");
    }
}
