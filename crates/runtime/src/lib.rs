//! What every Pulse binary shares, so that `pulse-ingest`,
//! `pulse-heartbeat-checker`, `pulse-gateway` and the standalone `pulse`
//! start, log, report health and stop the same way.
//!
//! - [`service`]: the skeleton every service binary stands on: the command
//!   line ([`Cli`]), the bus and store it runs on ([`connect`],
//!   [`connect_retrying`], [`BusKind`]), and [`run_until`], which serves
//!   until shutdown and drains within [`DRAIN_GRACE`].
//! - [`settings`]: [`load_settings`] layers built-in defaults, an optional
//!   file and `PULSE__SECTION__KEY` environment variables through the `config`
//!   crate, and fails at start with a message naming the bad key. With it come
//!   the [`Secret`] newtype (never printed), the [`duration`] and
//!   [`string_list`] serde helpers, the setting blocks every service
//!   embeds: [`HttpSettings`], [`TelemetrySettings`], [`RedisSettings`] (from
//!   the bus), and [`keys_of`], which lists every key a settings type knows.
//! - [`http`]: the `Authorization: Bearer` parser of every service.
//! - [`telemetry`]: [`init_telemetry`] installs `tracing` with an
//!   `EnvFilter`, human or JSON output, and OpenTelemetry OTLP export when an
//!   endpoint is configured; [`current_traceparent`] and
//!   [`set_parent_from_traceparent`] carry a trace across the bus in the
//!   event's `trace` field, and [`is_traceparent`] is the one check of a
//!   `traceparent` value.
//! - [`health`]: the [`Health`] handle (readiness checks and the draining
//!   flag) and [`configure_ops`], which mounts `GET /healthz`, `GET /readyz`
//!   and `GET /metrics` on an actix-web app.
//! - [`metrics`](mod@metrics): [`install_metrics`] installs the process-wide
//!   Prometheus recorder for the `metrics` crate, once; `/metrics` adds the
//!   `process_*` metrics (CPU, memory, file descriptors, threads).
//! - [`client_addr`]: [`TrustedProxies`], the client's address behind
//!   load balancers (`X-Forwarded-For` / `Forwarded` from trusted proxies).
//! - [`cors`](mod@cors): [`cors()`] answers CORS for `/api` and `/sse` from
//!   the `allowed_origins` list.
//! - [`listener`]: [`listen`] binds with an accept queue deep enough for
//!   bursts of connections; [`raise_open_file_limit`] lifts the soft
//!   open-file limit to the hard one, one descriptor per connection.
//! - [`shutdown`]: [`shutdown_signal`] (SIGINT or SIGTERM) and the cloneable
//!   [`Shutdown`] token every loop `select!`s on.
//!
//! A service's `main` typically reads:
//!
//! ```no_run
//! # use serde::Deserialize;
//! # #[derive(Deserialize)] struct Settings { http: pulse_runtime::HttpSettings, telemetry: pulse_runtime::TelemetrySettings }
//! # async fn run() -> anyhow::Result<()> {
//! let settings: Settings = pulse_runtime::load_settings("gateway", "[http]\nhost = \"0.0.0.0\"\nport = 8080\n[telemetry]\n", None)?;
//! let _telemetry = pulse_runtime::init_telemetry("pulse-gateway", &settings.telemetry)?;
//! let metrics = pulse_runtime::install_metrics()?;
//! let health = pulse_runtime::Health::new();
//! let shutdown = pulse_runtime::Shutdown::new();
//! shutdown.trigger_on_signal();
//! // App::new().configure(pulse_runtime::configure_ops(health.clone(), metrics.clone())) …
//! shutdown.cancelled().await;
//! health.set_draining();
//! # Ok(()) }
//! ```

pub mod client_addr;
pub mod cors;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use client_addr::{ForwardedHeader, InvalidProxyEntry, TrustedProxies};
pub use cors::cors;
pub use health::{CheckFuture, Health, Readiness, ReadinessCheck, configure_ops};
pub use http::{NotBearer, bearer};
pub use listener::{connections_within, fit_connections_to_file_limit, listen, raise_open_file_limit};
pub use metrics::{FRAME_BUCKETS, LATENCY_BUCKETS, MetricsError, install_metrics};
/// The handle [`install_metrics`] returns, re-exported so services need not
/// depend on the exporter crate.
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use service::{Backend, BusKind, Cli, DRAIN_GRACE, connect, connect_retrying, run_until};
pub use settings::reference::keys_of;
pub use settings::{
    HttpSettings, LogFormat, OtlpProtocol, RedisSettings, Secret, SettingsError, SettingsLoader, TelemetrySettings,
    duration, load_settings, string_list,
};
pub use shutdown::{Shutdown, shutdown_signal};
pub use telemetry::{
    OtlpExport, TRACE_TARGET, TelemetryError, TelemetryGuard, current_traceparent, export_filter, init_telemetry,
    init_test_logging, is_traceparent, log_layer, set_parent_from_traceparent,
};
