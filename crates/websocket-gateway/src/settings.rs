//! Settings of the gateway: built-in defaults (`config/default.toml`), then a
//! file, then `PULSE__SECTION__KEY` environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pulse_auth::AuthSettings;
use pulse_protocol::ChannelPattern;
use pulse_runtime::{HttpSettings, RedisSettings, SettingsError, TelemetrySettings, duration, string_list};
use serde::Deserialize;

/// The built-in defaults, as TOML.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything `pulse-gateway` reads at start.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub redis: RedisSettings,
    pub gateway: GatewaySettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub presence: PresenceSettings,
    /// `[store]`: the same block as ingest's; the gateway reads agents and
    /// alerts through it to answer `refresh`.
    #[serde(default)]
    pub store: pulse_store::StoreSettings,
}

impl Settings {
    /// Loads defaults, then `file` (or `PULSE_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        pulse_runtime::SettingsLoader::new("gateway", DEFAULTS).file(file).list_key("presence.channels").load()
    }

    /// The defaults alone, ignoring files and the environment (tests, the
    /// standalone binary's starting point).
    pub fn defaults() -> Result<Self, SettingsError> {
        pulse_runtime::SettingsLoader::new("gateway", DEFAULTS).env_vars(Vec::<(String, String)>::new()).load()
    }
}

/// `[gateway]`: connection handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// How often the server pings; sent in `welcome`.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Silence after which a client is closed with 4001.
    #[serde(with = "duration")]
    pub client_timeout: Duration,
    /// Frames that may wait for one client before it is closed with 4000.
    pub queue_capacity: usize,
    /// Bytes (of frame text: events, control frames and snapshots) that may
    /// wait for one client before it is closed with 4000. One frame larger
    /// than this is still sent to a client that is not behind.
    pub queue_bytes: usize,
    /// Open connections (WebSocket and SSE) per instance.
    pub max_connections: usize,
    /// Window over which clients are closed with 1012 on shutdown.
    #[serde(with = "duration")]
    pub drain_window: Duration,
    /// Directory served at `/`, if it exists.
    pub static_dir: Option<PathBuf>,
    /// Origins allowed at the upgrade and on `/sse` (which answers CORS for
    /// them): empty means same origin only, `*` any.
    #[serde(deserialize_with = "string_list::deserialize")]
    pub allowed_origins: Vec<String>,
    /// Events per history read while resuming.
    pub replay_page: usize,
    /// Latest events sent in a `snapshot` of a channel without a state source.
    pub snapshot_events: usize,
    /// Serve `/echo`, a WebSocket endpoint that sends every message back
    /// on the session's frame code, for conformance suites. Off in
    /// production: it has no admission checks.
    #[serde(default)]
    pub echo_endpoint: bool,
}

/// `[limits]`: what one client may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Connection attempts per second per client IP (burst twice that).
    pub connections_per_ip_per_sec: u32,
    /// Messages per second per connection (burst twice that).
    pub messages_per_sec: u32,
    /// Rate-limited or malformed messages before the connection is closed with 1008.
    pub max_violations: u32,
    /// Largest inbound frame or continued message, in bytes (1009 beyond).
    pub max_frame_size: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Time an unauthenticated connection has to send `auth`.
    #[serde(with = "duration")]
    pub auth_timeout: Duration,
}

/// `[presence]`: which channels announce who is connected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    /// Channels (patterns) whose subscribers are announced.
    pub channels: Vec<ChannelPattern>,
    /// How often each instance re-announces its members.
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.gateway.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(s.gateway.client_timeout, Duration::from_secs(45));
        assert_eq!(s.gateway.queue_capacity, 1024);
        assert_eq!(s.gateway.queue_bytes, 4 << 20);
        assert!(s.gateway.allowed_origins.is_empty());
        assert!(!s.auth.anonymous);
        assert!(s.gateway.heartbeat_interval * 2 <= s.gateway.client_timeout);
    }

    #[test]
    fn environment_overrides() {
        let s: Settings = pulse_runtime::SettingsLoader::new("gateway", DEFAULTS)
            .env_vars([
                ("PULSE__GATEWAY__QUEUE_CAPACITY", "64"),
                ("PULSE__GATEWAY__ALLOWED_ORIGINS", "https://a.example, https://b.example"),
                ("PULSE__AUTH__ANONYMOUS", "true"),
                ("PULSE__GATEWAY__DRAIN_WINDOW", "250ms"),
            ])
            .load()
            .unwrap();
        assert_eq!(s.gateway.queue_capacity, 64);
        assert_eq!(s.gateway.allowed_origins, ["https://a.example", "https://b.example"]);
        assert!(s.auth.anonymous);
        assert_eq!(s.gateway.drain_window, Duration::from_millis(250));
    }
}
