//! The loader: built-in defaults, then a file, then environment variables,
//! deserialised into the service's own `Deserialize` struct, with errors
//! that name the key at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, File, FileFormat};
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::settings::{HttpSettings, LogFormat, RedisSettings, Secret, TelemetrySettings};

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
            .args(["--exact", "settings::loader::tests::child_reads_process_env", "--nocapture", "--include-ignored"])
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
}
