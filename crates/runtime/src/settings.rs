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
//!
//! The module is split by job: [`loader`] (layers and errors), [`Secret`],
//! the serde helpers [`duration`](crate::duration) (from the bus, which
//! needs it for `[redis]`) and [`string_list`], the shared blocks, and
//! [`reference`] (every key a settings type knows, for the settings
//! reference `proto-docs/settings.md`).

mod blocks;
pub mod loader;
pub mod reference;
mod secret;
pub mod string_list;

pub use blocks::{HttpSettings, LogFormat, OtlpProtocol, TelemetrySettings};
pub use loader::{CONFIG_FILE_ENV, ENV_PREFIX, ENV_SEPARATOR, SettingsError, SettingsLoader, load_settings};
pub use pulse_bus::RedisSettings;
pub use pulse_bus::settings::duration;
pub use secret::Secret;
