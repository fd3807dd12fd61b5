//! Settings of standalone Pulse: the sections of ingest, the gateway and the
//! heartbeat checker in one file, plus `[demo]`. Built-in defaults
//! (`config/default.toml`), then a file, then `PULSE__SECTION__KEY`
//! environment variables; the binary's flags go last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pulse_heartbeat_checker::CheckerSettings;
use pulse_ingest::settings::{BusKind, IngestSettings, StoreSettings};
use pulse_runtime::{HttpSettings, RedisSettings, SettingsError, SettingsLoader, TelemetrySettings};
use pulse_websocket_gateway::settings::{GatewaySettings, LimitSettings, PresenceSettings};
use serde::Deserialize;

/// The built-in defaults, embedded so the binary runs without any file.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything standalone Pulse reads at start.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `memory` (default) or `redis`.
    pub bus: BusKind,
    /// The one port of every route: API, WebSocket, SSE, ops, dashboard.
    pub http: HttpSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub redis: RedisSettings,
    #[serde(default)]
    pub store: StoreSettings,
    pub ingest: IngestSettings,
    /// Shared by the read API and the gateway. Anonymous by default here.
    pub auth: pulse_auth::AuthSettings,
    #[serde(default)]
    pub checker: CheckerSettings,
    pub gateway: GatewaySettings,
    pub limits: LimitSettings,
    pub presence: PresenceSettings,
    pub demo: DemoSettings,
}

/// `[demo]`: the in-process fleet of simulated agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    pub enabled: bool,
    pub agents: usize,
    #[serde(with = "pulse_runtime::duration")]
    pub interval: Duration,
    /// Chance per report that a healthy agent starts failing an L3 check.
    pub l3_failure_rate: f64,
    /// Agents that stop reporting after `silent_after`.
    pub silent_agents: usize,
    #[serde(with = "pulse_runtime::duration")]
    pub silent_after: Duration,
    pub seed: u64,
    /// The fleet's agent key, added to `ingest.api_keys` while the demo runs.
    pub api_key: String,
    /// The key the fleet posts decisions with (role `publisher`), added
    /// likewise; empty: no decisions.
    #[serde(default)]
    pub publisher_key: String,
}

impl Settings {
    /// Defaults, then `file` (or `PULSE_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::loader().file(file).load()
    }

    /// The built-in defaults alone, ignoring files and the environment.
    pub fn defaults() -> Result<Self, SettingsError> {
        Self::loader().env_vars(Vec::<(String, String)>::new()).load()
    }

    /// The loader behind [`load`](Self::load), for tests that pass their own
    /// environment.
    pub fn loader() -> SettingsLoader {
        SettingsLoader::new("pulse", DEFAULTS).list_key("presence.channels")
    }

    /// Switches to Redis at `url` (the `--redis` flag).
    pub fn use_redis(&mut self, url: &str) {
        self.bus = BusKind::Redis;
        url.clone_into(&mut self.redis.url);
    }

    /// The ingest service's view of these settings.
    pub fn ingest_settings(&self) -> pulse_ingest::Settings {
        let mut ingest = self.ingest.clone();
        // One origin list for `/ws`, `/sse` and `/api` on the shared port.
        if ingest.allowed_origins.is_empty() {
            ingest.allowed_origins.clone_from(&self.gateway.allowed_origins);
        }
        if self.demo.enabled && !self.demo.api_key.is_empty() {
            ingest.api_keys.push(pulse_ingest::settings::ApiKeySettings {
                name: "demo-fleet".to_owned(),
                key: pulse_runtime::Secret::new(self.demo.api_key.clone()),
                role: pulse_ingest::settings::Role::Agent,
                channels: None,
            });
            if !self.demo.publisher_key.is_empty() {
                ingest.api_keys.push(pulse_ingest::settings::ApiKeySettings {
                    name: "demo-publisher".to_owned(),
                    key: pulse_runtime::Secret::new(self.demo.publisher_key.clone()),
                    role: pulse_ingest::settings::Role::Publisher,
                    // The demo's decisions, and whatever a developer trying
                    // the publish API sends (the publisher guide's examples
                    // run against standalone as written).
                    channels: None,
                });
            }
        }
        pulse_ingest::Settings {
            bus: self.bus,
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            redis: self.redis.clone(),
            ingest,
            auth: self.auth.clone(),
            store: self.store.clone(),
        }
    }

    /// The gateway's view of these settings, with the dashboard directory
    /// resolved (see [`resolve_static_dir`]).
    pub fn gateway_settings(&self) -> pulse_websocket_gateway::Settings {
        let mut gateway = self.gateway.clone();
        gateway.static_dir = gateway.static_dir.as_deref().and_then(resolve_static_dir);
        pulse_websocket_gateway::Settings {
            http: self.http.clone(),
            telemetry: self.telemetry.clone(),
            redis: self.redis.clone(),
            gateway,
            auth: self.auth.clone(),
            limits: self.limits.clone(),
            presence: self.presence.clone(),
            store: self.store.clone(),
        }
    }
}

/// Where the dashboard is: `dir` itself if absolute or present under the
/// current directory, else the same path in this source checkout (so that
/// `cargo run` works from any directory of the repository). `None` when
/// neither exists: the dashboard is then simply not served.
pub fn resolve_static_dir(dir: &Path) -> Option<PathBuf> {
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    if dir.is_absolute() {
        return None;
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
    checkout.is_dir().then_some(checkout)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_the_zero_setup_local_mode() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.bus, BusKind::Memory);
        assert_eq!((s.http.host.as_str(), s.http.port), ("127.0.0.1", 8080));
        assert!(s.auth.anonymous);
        assert!(s.demo.enabled);
        assert_eq!(s.demo.api_key, "demo-agent-key");
        assert_eq!(s.checker.timeout, Duration::from_secs(30));
        assert!(s.ingest.api_keys.is_empty());
        // The demo key is an agent key only while the demo runs.
        assert_eq!(s.ingest_settings().ingest.api_keys.len(), 2);
        let mut off = s.clone();
        off.demo.enabled = false;
        assert!(off.ingest_settings().ingest.api_keys.is_empty());
    }

    #[test]
    fn environment_and_redis_flag() {
        let mut s: Settings =
            Settings::loader().env_vars([("PULSE__HTTP__PORT", "9000"), ("PULSE__DEMO__AGENTS", "5")]).load().unwrap();
        assert_eq!(s.http.port, 9000);
        assert_eq!(s.demo.agents, 5);
        s.use_redis("redis://example:6380/");
        assert_eq!(s.bus, BusKind::Redis);
        assert_eq!(s.ingest_settings().redis.url, "redis://example:6380/");
    }

    #[test]
    fn static_dir_falls_back_to_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_static_dir(dir.path()), Some(dir.path().to_path_buf()));
        assert_eq!(resolve_static_dir(Path::new("/no/such/dir")), None);
        // `crates` exists in the checkout, whatever the current directory.
        assert!(resolve_static_dir(Path::new("crates/pulse")).is_some());
    }
}
