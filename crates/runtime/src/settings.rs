//! Layered settings: built-in defaults, then a file, then environment
//! variables, deserialised into the service's own `Deserialize` struct.
//!
//! Every service embeds its defaults as TOML text, so that the binary runs
//! with no file at all and the defaults are documented in one place. An
//! operator overrides them with a file (`--config` or `PULSE_CONFIG`) and then
//! with environment variables named `PULSE__SECTION__KEY`: `PULSE__REDIS__URL`
//! sets `redis.url`, `PULSE__HTTP__PORT=9000` sets `http.port`. Keys are
//! matched in lower case, so setting structs use `snake_case` field names.
//!
//! Environment values are strings; they are converted to the type the setting
//! needs (number, bool, duration, list) when it is read, so `"9000"` becomes a
//! `u16` and `"true"`, `"yes"` or `"on"` a `bool`. A value that does not fit
//! fails at start with a [`SettingsError`] naming the key.
//!
//! Lists: a field read with [`string_list`] accepts a TOML array or a
//! comma-separated string (`PULSE__GATEWAY__ALLOWED_ORIGINS=https://a,https://b`).
//! For lists of other types, name the key with [`SettingsLoader::list_key`]
//! and its environment value is split on commas.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The environment variable naming a settings file, used when the caller
/// passes no explicit path.
pub const CONFIG_FILE_ENV: &str = "PULSE_CONFIG";

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "PULSE";

/// Separator between the prefix, the sections and the key in an environment
/// variable name (`PULSE__REDIS__URL`). Two underscores, so that keys may
/// contain one (`history_len`).
pub const ENV_SEPARATOR: &str = "__";

/// Why the settings could not be loaded. Each variant says which key or file
/// is at fault, because the operator reading it has only this line to go on.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value is present but has the wrong type or form.
    #[error("invalid setting \"{key}\"{}: {reason}", origin_suffix(.origin))]
    Invalid {
        /// Dotted key, e.g. `http.port`.
        key: String,
        /// What is wrong with the value.
        reason: String,
        /// Where the value came from (a file path, `the environment`), when known.
        origin: Option<String>,
    },
    /// A required setting has no value in any layer.
    #[error("missing setting \"{key}\"")]
    Missing {
        /// Dotted key, e.g. `redis.url`.
        key: String,
    },
    /// The settings file is missing, unreadable or not valid for its format.
    #[error("cannot load settings file {}: {reason}", .path.display())]
    File {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The defaults the service embeds do not parse: a bug in the service.
    #[error("built-in default settings of {service} are invalid: {reason}")]
    Defaults {
        /// The service whose defaults are broken.
        service: String,
        /// The parser's message.
        reason: String,
    },
    /// Any other failure reported by the `config` crate.
    #[error("cannot load settings of {service}: {reason}")]
    Other {
        /// The service being configured.
        service: String,
        /// The `config` crate's message.
        reason: String,
    },
}

fn origin_suffix(origin: &Option<String>) -> String {
    match origin {
        Some(origin) => format!(" (from {origin})"),
        None => String::new(),
    }
}

/// Loads the settings of `service`: `defaults` (TOML text), then `file`, or
/// the file named by `PULSE_CONFIG` when `file` is `None`, then the
/// `PULSE__SECTION__KEY` environment variables.
///
/// A file that is named but missing is an error: a typo in a path must not
/// silently start the service on defaults.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Settings { http: pulse_runtime::HttpSettings }
///
/// let s: Settings = pulse_runtime::load_settings(
///     "example",
///     "[http]\nhost = \"127.0.0.1\"\nport = 8080\n",
///     None,
/// )?;
/// assert_eq!(s.http.host, "127.0.0.1");
/// # Ok::<(), pulse_runtime::SettingsError>(())
/// ```
pub fn load_settings<T: DeserializeOwned>(
    service: &str,
    defaults: &str,
    file: Option<&Path>,
) -> Result<T, SettingsError> {
    SettingsLoader::new(service, defaults).file(file).load()
}

/// The full form of [`load_settings`], for the few callers that need more:
/// list keys split on commas, or a fixed set of environment variables instead
/// of the process environment (tests).
#[derive(Debug, Clone)]
pub struct SettingsLoader {
    service: String,
    defaults: String,
    file: Option<PathBuf>,
    list_keys: Vec<String>,
    env: Option<HashMap<String, String>>,
}

impl SettingsLoader {
    /// Starts a loader for `service` with its built-in `defaults` (TOML text).
    pub fn new(service: &str, defaults: &str) -> Self {
        Self {
            service: service.to_owned(),
            defaults: defaults.to_owned(),
            file: None,
            list_keys: Vec::new(),
            env: None,
        }
    }

    /// Reads this file after the defaults. `None` falls back to `PULSE_CONFIG`.
    /// The format follows the extension (`.json`, `.yaml`/`.yml`, `.ini`,
    /// `.ron`, `.json5`), TOML otherwise.
    pub fn file(mut self, file: Option<&Path>) -> Self {
        self.file = file.map(Path::to_path_buf);
        self
    }

    /// Splits the environment value of this dotted key (e.g.
    /// `gateway.allowed_origins`) on commas, so that it can fill a `Vec`.
    /// Not needed for fields read with [`string_list`].
    pub fn list_key(mut self, key: &str) -> Self {
        self.list_keys.push(key.to_ascii_lowercase());
        self
    }

    /// Uses these variables instead of the process environment, both for the
    /// `PULSE__…` overrides and for `PULSE_CONFIG`. The process environment is
    /// shared by every test in a binary; this keeps tests independent.
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect());
        self
    }

    /// Builds the layers and deserialises them into `T`.
    pub fn load<T: DeserializeOwned>(self) -> Result<T, SettingsError> {
        let service = self.service.clone();

        // Parse the defaults on their own first, so that a broken default is
        // reported as the service's bug and not as the operator's.
        Config::builder()
            .add_source(File::from_str(&self.defaults, FileFormat::Toml))
            .build()
            .map_err(|e| SettingsError::Defaults { service: service.clone(), reason: e.to_string() })?;

        let mut builder = Config::builder().add_source(File::from_str(&self.defaults, FileFormat::Toml));

        let file = match &self.file {
            Some(path) => Some(path.clone()),
            None => self.env_var(CONFIG_FILE_ENV).filter(|p| !p.is_empty()).map(PathBuf::from),
        };
        if let Some(path) = &file {
            // `config` reports a missing file without saying which one was
            // meant; check first so the message names it.
            if !path.is_file() {
                return Err(SettingsError::File { path: path.clone(), reason: "no such file".to_owned() });
            }
            let name = path.to_string_lossy();
            builder = builder.add_source(File::new(&name, file_format(path)).required(true));
        }

        // No `try_parsing`: with it the `config` crate turns every value that
        // looks like a number into one, so a secret "0123" would arrive as
        // "123" and "1e3" as "1000" (its list splitting needs it too, so list
        // keys are split here instead). Left as strings, values are converted
        // only where the target type asks for a number or a bool (the
        // conversion is lenient: "8080" → 8080, "yes" → true).
        let mut env = Environment::with_prefix(ENV_PREFIX).prefix_separator(ENV_SEPARATOR).separator(ENV_SEPARATOR);
        if let Some(vars) = &self.env {
            env = env.source(Some(vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
        }
        builder = builder.add_source(env);

        // List keys: the environment value, split on commas, overrides the
        // string the environment layer holds for that key.
        if !self.list_keys.is_empty() {
            for (name, value) in self.env_pairs() {
                let Some(key) = env_key(&name) else { continue };
                if self.list_keys.contains(&key) {
                    let items: Vec<String> =
                        value.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned).collect();
                    builder = builder
                        .set_override(key.as_str(), items)
                        .map_err(|e| from_config_error(&service, file.as_deref(), e))?;
                }
            }
        }

        let config = builder.build().map_err(|e| from_config_error(&service, file.as_deref(), e))?;
        config.try_deserialize().map_err(|e| from_config_error(&service, file.as_deref(), e))
    }

    /// Every environment variable (the test set, or the process's), skipping
    /// names or values that are not Unicode.
    fn env_pairs(&self) -> Vec<(String, String)> {
        match &self.env {
            Some(vars) => vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => {
                std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
            }
        }
    }

    fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// The dotted key an environment variable sets, matched the way the
/// `config` crate does it (case-insensitive): `PULSE__APP__PORTS` → `app.ports`.
fn env_key(name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let prefix = format!("{}{ENV_SEPARATOR}", ENV_PREFIX.to_ascii_lowercase());
    Some(name.strip_prefix(&prefix)?.replace(ENV_SEPARATOR, "."))
}

fn file_format(path: &Path) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json") => FileFormat::Json,
        Some("yaml" | "yml") => FileFormat::Yaml,
        Some("ini") => FileFormat::Ini,
        Some("ron") => FileFormat::Ron,
        Some("json5") => FileFormat::Json5,
        _ => FileFormat::Toml,
    }
}

/// Maps the `config` crate's error to one that names the key. The crate
/// carries the key in its `Type` and `At` variants; serde's "missing field"
/// arrives as a message under the parent key, which is joined back here.
fn from_config_error(service: &str, file: Option<&Path>, err: ConfigError) -> SettingsError {
    // `config` names a file relative to the working directory
    // (`../../tmp/x.toml`); name it as the user gave it instead.
    let origin_of = |origin: Option<String>| match (origin, file) {
        (Some(origin), Some(file)) if !origin.contains("environment") => Some(file.display().to_string()),
        (origin, _) => origin,
    };
    match err {
        ConfigError::Type { origin, unexpected, expected, key } => SettingsError::Invalid {
            key: key.unwrap_or_else(|| "?".to_owned()),
            reason: format!("invalid type: {unexpected}, expected {expected}"),
            origin: origin_of(origin),
        },
        ConfigError::At { error, origin, key } => {
            let reason = error.to_string();
            let key = key.unwrap_or_default();
            if let Some(field) = missing_field(&reason) {
                return SettingsError::Missing { key: join_key(&key, field) };
            }
            SettingsError::Invalid {
                key: if key.is_empty() { "?".to_owned() } else { key },
                reason,
                origin: origin_of(origin),
            }
        }
        ConfigError::NotFound(key) => SettingsError::Missing { key },
        ConfigError::Message(message) => match missing_field(&message) {
            Some(field) => SettingsError::Missing { key: field.to_owned() },
            None => SettingsError::Other { service: service.to_owned(), reason: message },
        },
        ConfigError::FileParse { uri, cause } => SettingsError::File {
            path: file.map(Path::to_path_buf).or_else(|| uri.map(PathBuf::from)).unwrap_or_default(),
            reason: cause.to_string(),
        },
        other => SettingsError::Other { service: service.to_owned(), reason: other.to_string() },
    }
}

/// The field name in serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() { field.to_owned() } else { format!("{parent}.{field}") }
}

/// A string that must never reach a log: a password, an API key, a signing
/// key. `Debug` and `Display` print `[redacted]`; [`Secret::expose`] is the
/// one, greppable, way to read it. It is deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (a connection
    /// string, a key comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty, i.e. not configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serde helper for a [`Duration`](std::time::Duration) given as a number of milliseconds (`250`,
/// `"250"`) or a number with a unit (`"250ms"`, `"5s"`, `"1.5s"`, `"5m"`,
/// `"1h"`; also `us` and `d`). Use as
/// `#[serde(with = "pulse_runtime::duration")]` or
/// `#[serde(deserialize_with = "pulse_runtime::duration::deserialize")]`.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    /// Why a duration string was refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("invalid duration {input:?}: {reason} (expected e.g. 250ms, 5s, 5m, 1h, or a number of milliseconds)")]
    pub struct DurationError {
        input: String,
        reason: &'static str,
    }

    /// Parses `"250ms"`, `"5s"`, `"1.5s"`, `"5m"`, `"1h"`, `"2d"`, `"100us"`,
    /// or bare milliseconds (`"250"`). Surrounding and inner spaces are allowed.
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let err = |reason| DurationError { input: input.to_owned(), reason };
        let s = input.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(err("no number"));
        }
        let value: f64 = number.parse().map_err(|_| err("bad number"))?;
        let seconds_per_unit = match unit.trim() {
            "" | "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(err("unknown unit")),
        };
        Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| err("out of range"))
    }

    /// Deserialises a duration, see the [module](self) docs.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 250ms, 5s or 5m, or a number of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &"a non-negative number of milliseconds"))
        }

        fn visit_f64<E: de::Error>(self, ms: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(ms / 1000.0)
                .map_err(|_| E::invalid_value(de::Unexpected::Float(ms), &"a non-negative number of milliseconds"))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse(s).map_err(E::custom)
        }
    }
}

/// Serde helper for a `Vec<String>` given either as a list (TOML array) or as
/// one comma-separated string, which is what an environment variable can
/// hold. Items are trimmed and empty items dropped, so `""` is an empty list.
/// Use as `#[serde(deserialize_with = "pulse_runtime::string_list::deserialize")]`.
pub mod string_list {
    use std::fmt;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    /// Deserialises the list, see the [module](self) docs.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        deserializer.deserialize_any(ListVisitor)
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(s.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
}

/// Where a service's HTTP server listens. Every service has one (the API, or
/// just the ops endpoints); its defaults TOML sets both fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpSettings {
    /// Address to bind: `127.0.0.1` for local use, `0.0.0.0` in a container.
    pub host: String,
    /// Port to bind; 0 picks a free port (tests).
    pub port: u16,
    /// Proxies (addresses or CIDR networks) whose `forwarded_header` names
    /// the client; see [`client_addr`](crate::client_addr). Empty: none.
    #[serde(default)]
    pub trusted_proxies: crate::TrustedProxies,
    /// `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    #[serde(default)]
    pub forwarded_header: crate::ForwardedHeader,
}

impl HttpSettings {
    /// The pair `HttpServer::bind` takes.
    pub fn bind_addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The client's address for a request from TCP peer `peer` with these
    /// `headers`: the peer itself unless it is a trusted proxy.
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &actix_web::http::header::HeaderMap) -> std::net::IpAddr {
        self.trusted_proxies.client_ip(peer, headers, self.forwarded_header)
    }
}

/// How log lines are written: `auto`, `pretty` or `json` (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise (a container,
    /// a pipe): right by default both on a laptop and under Kubernetes.
    #[default]
    Auto,
    /// Human-readable, coloured lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pretty" | "human" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}, expected auto, pretty or json")),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Logging and tracing, the same block in every service (`[telemetry]`).
/// Every field has a default, so the block may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// Output format of log lines.
    pub log_format: LogFormat,
    /// `EnvFilter` directives, e.g. `info` or `info,pulse_gateway=debug`.
    /// `RUST_LOG`, when set, wins: it is what a developer reaches for first.
    #[serde(alias = "log_filter")]
    pub log_level: String,
    /// OTLP collector endpoint (base URL), e.g. `http://otel-collector:4317`
    /// for gRPC or `http://otel-collector:4318` for HTTP (`/v1/traces` is
    /// appended). When unset, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; traces are exported only when one of
    /// them is set (and not empty).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; when unset, `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else `grpc`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service.name` reported to the collector; defaults to the binary's name.
    pub service_name: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: None,
        }
    }
}

/// How spans travel to the collector (the values of
/// `OTEL_EXPORTER_OTLP_PROTOCOL` Pulse supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP over gRPC, usually port 4317.
    #[default]
    Grpc,
    /// OTLP protobuf over HTTP, usually port 4318, path `/v1/traces`.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name used in settings and `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!("unsupported OTLP protocol {other:?}: expected \"grpc\" or \"http/protobuf\"")),
        }
    }
}

impl<'de> Deserialize<'de> for OtlpProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The Redis bus and store (`[redis]`), shared by every service that talks to
/// Redis. Every field has a default, so a local Redis needs no settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// Connection URL, e.g. `redis://redis:6379/0`; may carry a password,
    /// which `Debug` hides.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several deployments can
    /// share one Redis.
    pub prefix: String,
    /// Connections in the command pool (publishing, history reads).
    pub pool_size: usize,
    /// Events kept per channel in its history stream: how far back a
    /// reconnecting client can resume. Every service that publishes trims
    /// the shared stream to its own value, so give every service the same
    /// one (a service that finds another value recorded in Redis warns).
    pub history_len: usize,
    /// How often the pub/sub connection is pinged to prove it still moves
    /// bytes (`1s`).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub ping_interval: std::time::Duration,
    /// How long a ping on the pub/sub connection may go unanswered before
    /// it is replaced and the gap filled from history (`2s`).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub ping_timeout: std::time::Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        let bus = pulse_bus::RedisBusConfig::default();
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "pulse:".to_owned(),
            pool_size: 16,
            history_len: pulse_bus::DEFAULT_HISTORY_LEN,
            ping_interval: bus.ping_interval,
            ping_timeout: bus.ping_timeout,
        }
    }
}

impl RedisSettings {
    /// What the Redis bus needs from these settings.
    pub fn bus_config(&self) -> pulse_bus::RedisBusConfig {
        pulse_bus::RedisBusConfig {
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            history_len: self.history_len,
            pool_size: self.pool_size,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("history_len", &self.history_len)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .finish()
    }
}

/// Replaces the credentials of `scheme://user:pass@host` with `[redacted]`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct TestSettings {
        http: HttpSettings,
        #[serde(default)]
        telemetry: TelemetrySettings,
        #[serde(default)]
        redis: RedisSettings,
        app: AppSettings,
    }

    #[derive(Debug, Deserialize)]
    struct AppSettings {
        name: String,
        enabled: bool,
        #[serde(with = "crate::duration")]
        timeout: Duration,
        #[serde(default, deserialize_with = "crate::string_list::deserialize")]
        origins: Vec<String>,
        #[serde(default)]
        ports: Vec<u16>,
        #[serde(default)]
        token: Option<Secret>,
    }

    const DEFAULTS: &str = r#"
[http]
host = "127.0.0.1"
port = 8080

[app]
name = "from-defaults"
enabled = false
timeout = "5s"
origins = ["http://localhost:3000"]
"#;

    fn temp_toml(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<TestSettings, SettingsError> {
        SettingsLoader::new("test", DEFAULTS).file(file).env_vars(env.iter().copied()).load()
    }

    #[test]
    fn defaults_alone() {
        let s = load(None, &[]).unwrap();
        assert_eq!((s.http.host.as_str(), s.http.port), ("127.0.0.1", 8080));
        assert_eq!(s.app.name, "from-defaults");
        assert_eq!(s.app.timeout, Duration::from_secs(5));
        assert_eq!(s.app.origins, vec!["http://localhost:3000"]);
        assert_eq!(s.telemetry, TelemetrySettings::default());
        assert_eq!(s.telemetry.log_level, "info");
        assert_eq!(s.redis.prefix, "pulse:");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let file = temp_toml("[http]\nport = 9000\nhost = \"0.0.0.0\"\n[app]\nname = \"from-file\"\n");
        let s = load(Some(file.path()), &[]).unwrap();
        assert_eq!(s.http.port, 9000);
        assert_eq!(s.http.host, "0.0.0.0");
        assert_eq!(s.app.name, "from-file");
        assert_eq!(s.app.timeout, Duration::from_secs(5), "keys absent from the file keep their default");

        let s = load(Some(file.path()), &[("PULSE__HTTP__PORT", "9100"), ("PULSE__APP__ENABLED", "true")]).unwrap();
        assert_eq!(s.http.port, 9100);
        assert_eq!(s.http.host, "0.0.0.0");
        assert!(s.app.enabled);
        assert_eq!(s.app.name, "from-file");
    }

    #[test]
    fn pulse_config_names_the_file() {
        let file = temp_toml("[app]\nname = \"via-pulse-config\"\n");
        let path = file.path().to_str().unwrap();
        let s = load(None, &[("PULSE_CONFIG", path)]).unwrap();
        assert_eq!(s.app.name, "via-pulse-config");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/pulse.toml")), &[]).unwrap_err();
        assert!(matches!(err, SettingsError::File { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/pulse.toml"), "{err}");
    }

    /// The process environment is global and `set_var` is `unsafe` in edition
    /// 2024 (the workspace forbids unsafe code), so the real
    /// `PULSE__SECTION__KEY` path runs in a child process of this test binary,
    /// with its own environment.
    #[test]
    fn process_environment_overrides_with_double_underscore_names() {
        let defaults = "[http]\nhost = \"h\"\nport = 1\n[envtest]\nhistory_len = 5\nredis_url = \"redis://a\"\n";
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args(["--exact", "settings::tests::child_reads_process_env", "--nocapture", "--include-ignored"])
            .env("PULSE__ENVTEST__HISTORY_LEN", "42")
            .env("PULSE__ENVTEST__REDIS_URL", "redis://from-env:6379")
            .env("PULSE__HTTP__PORT", "7000")
            .env("PULSE_RUNTIME_CHILD_DEFAULTS", defaults)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("CHILD-RESULT history_len=42 redis_url=redis://from-env:6379 port=7000"), "{stdout}");
    }

    /// Runs only as the child of the test above, which sets its environment.
    #[test]
    #[ignore = "run by process_environment_overrides_with_double_underscore_names"]
    fn child_reads_process_env() {
        #[derive(Debug, Deserialize)]
        struct S {
            http: HttpSettings,
            envtest: EnvTest,
        }
        #[derive(Debug, Deserialize)]
        struct EnvTest {
            history_len: usize,
            redis_url: String,
        }
        let Ok(defaults) = std::env::var("PULSE_RUNTIME_CHILD_DEFAULTS") else { return };
        let s: S = load_settings("child", &defaults, None).unwrap();
        println!(
            "CHILD-RESULT history_len={} redis_url={} port={}",
            s.envtest.history_len, s.envtest.redis_url, s.http.port
        );
    }

    #[test]
    fn bad_env_value_names_the_key() {
        let err = load(None, &[("PULSE__HTTP__PORT", "80x")]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, SettingsError::Invalid { key, .. } if key == "http.port"), "{err:?}");
        assert!(msg.starts_with("invalid setting \"http.port\""), "{msg}");
        assert!(msg.contains("80x"), "the message shows the bad value: {msg}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let err = load(None, &[("PULSE__HTTP__PORT", "70000")]).unwrap_err();
        assert!(err.to_string().starts_with("invalid setting \"http.port\""), "{err}");
    }

    #[test]
    fn bad_file_value_names_the_key_and_the_file() {
        let file = temp_toml("[app]\nenabled = \"maybe\"\n");
        let err = load(Some(file.path()), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid setting \"app.enabled\""), "{msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = load(None, &[("PULSE__APP__TIMEOUT", "5 parsecs")]).unwrap_err();
        assert!(err.to_string().starts_with("invalid setting \"app.timeout\""), "{err}");
        assert!(err.to_string().contains("unknown unit"), "{err}");
    }

    #[test]
    fn missing_value_names_the_key() {
        let defaults = "[http]\nhost = \"x\"\n[app]\nname = \"n\"\nenabled = true\ntimeout = 1\n";
        let err = SettingsLoader::new("test", defaults)
            .env_vars(Vec::<(String, String)>::new())
            .load::<TestSettings>()
            .unwrap_err();
        assert!(matches!(&err, SettingsError::Missing { key } if key == "http.port"), "{err:?}");
        assert_eq!(err.to_string(), "missing setting \"http.port\"");
    }

    #[test]
    fn broken_defaults_blame_the_service() {
        let err = SettingsLoader::new("svc", "[http\n").load::<TestSettings>().unwrap_err();
        assert!(matches!(err, SettingsError::Defaults { .. }), "{err:?}");
    }

    #[test]
    fn malformed_file_is_reported_with_its_path() {
        let file = temp_toml("[http\nport = 1\n");
        let err = load(Some(file.path()), &[]).unwrap_err();
        assert!(matches!(err, SettingsError::File { .. }), "{err:?}");
        assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn env_strings_that_look_like_numbers_stay_intact() {
        let s = load(None, &[("PULSE__APP__NAME", "0123"), ("PULSE__APP__TOKEN", "1e3")]).unwrap();
        assert_eq!(s.app.name, "0123");
        assert_eq!(s.app.token.unwrap().expose(), "1e3");
    }

    #[test]
    fn comma_separated_lists_from_env() {
        let s = load(None, &[("PULSE__APP__ORIGINS", "https://a.example, https://b.example,")]).unwrap();
        assert_eq!(s.app.origins, vec!["https://a.example", "https://b.example"]);

        let s: TestSettings = SettingsLoader::new("test", DEFAULTS)
            .list_key("app.ports")
            .env_vars([("PULSE__APP__PORTS", "80,443"), ("PULSE__APP__NAME", "0123")])
            .load()
            .unwrap();
        assert_eq!(s.app.ports, vec![80, 443]);
        assert_eq!(s.app.name, "0123", "list keys leave other values alone");
    }

    #[test]
    fn shared_blocks_read_from_env() {
        let s = load(
            None,
            &[
                ("PULSE__TELEMETRY__LOG_FORMAT", "json"),
                ("PULSE__TELEMETRY__LOG_LEVEL", "debug,hyper=warn"),
                ("PULSE__TELEMETRY__OTLP_ENDPOINT", "http://collector:4317"),
                ("PULSE__REDIS__URL", "redis://:hunter2@redis:6379/0"),
                ("PULSE__REDIS__HISTORY_LEN", "50"),
            ],
        )
        .unwrap();
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
        assert_eq!(s.telemetry.log_level, "debug,hyper=warn");
        assert_eq!(s.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(s.redis.history_len, 50);
        assert_eq!(s.redis.pool_size, 16);
        let debug = format!("{:?}", s.redis);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("@redis:6379/0"), "{debug}");
    }

    #[test]
    fn bad_log_format_names_the_key() {
        let err = load(None, &[("PULSE__TELEMETRY__LOG_FORMAT", "xml")]).unwrap_err();
        assert!(err.to_string().starts_with("invalid setting \"telemetry.log_format\""), "{err}");
        assert!(err.to_string().contains("expected auto, pretty or json"), "{err}");
        let s = load(None, &[("PULSE__TELEMETRY__LOG_FORMAT", "JSON")]).unwrap();
        assert_eq!(s.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn secret_is_redacted() {
        let s = load(None, &[("PULSE__APP__TOKEN", "s3cr3t-value")]).unwrap();
        let token = s.app.token.clone().unwrap();
        assert_eq!(token.expose(), "s3cr3t-value");
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert_eq!(format!("{token}"), "[redacted]");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn durations_parse() {
        use duration::parse;
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse(" 30 s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("750").unwrap(), Duration::from_millis(750));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "s", "5x", "-5s", "1.2.3s", "5 s s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_deserialize_from_numbers_and_strings() {
        #[derive(Deserialize)]
        struct D {
            #[serde(with = "crate::duration")]
            d: Duration,
        }
        let from = |toml: &str| -> Result<Duration, SettingsError> {
            SettingsLoader::new("t", toml).env_vars(Vec::<(String, String)>::new()).load::<D>().map(|d| d.d)
        };
        assert_eq!(from("d = 250").unwrap(), Duration::from_millis(250));
        assert_eq!(from("d = \"250ms\"").unwrap(), Duration::from_millis(250));
        assert_eq!(from("d = \"5m\"").unwrap(), Duration::from_secs(300));
        assert_eq!(from("d = 1.5").unwrap(), Duration::from_micros(1500));
        assert!(from("d = -1").is_err());
    }

    #[test]
    fn redact_url_keeps_host() {
        assert_eq!(redact_url("redis://user:pw@host:1/2"), "redis://[redacted]@host:1/2");
        assert_eq!(redact_url("redis://host:1/2"), "redis://host:1/2");
        assert_eq!(redact_url("redis://host/a@b"), "redis://host/a@b");
    }
}
