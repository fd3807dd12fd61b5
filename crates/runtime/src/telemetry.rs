//! Logs and traces.
//!
//! [`init_telemetry`] installs the global `tracing` subscriber once per
//! process: human-readable or JSON lines on stderr, filtered by an
//! `EnvFilter` (`RUST_LOG` wins over `telemetry.log_level`), and, when an
//! OTLP endpoint is configured (`telemetry.otlp_endpoint`, else
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`), an
//! OpenTelemetry layer that exports spans over OTLP (gRPC or HTTP/protobuf,
//! see [`OtlpExport`]) through a batch processor. The two layers filter
//! separately: the exporter takes every span at `info` and above plus the
//! spans of [`TRACE_TARGET`], whatever the log level, so quieter logs never
//! cut a trace short. The global text-map propagator is W3C TraceContext, so
//! `traceparent` headers continue traces.
//!
//! One trace runs from a probe's POST to the gateway's send: the publisher
//! stores [`current_traceparent`] in the event's `trace` field, and whoever
//! handles the event calls [`set_parent_from_traceparent`] on its span.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Once;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, OtlpProtocol, TelemetrySettings};

/// The W3C header (and carrier key) holding the trace context.
const TRACEPARENT: &str = "traceparent";

/// The target of spans meant for traces only, such as one per event fanned
/// out: give them level `debug` and this target
/// (`tracing::debug_span!(target: TRACE_TARGET, …)`). The exporter takes
/// them at any log level; logs show them only when asked for. With no
/// exporter and logs at `info`, `tracing::enabled!(target: TRACE_TARGET,
/// Level::DEBUG)` is false, so a hot path can skip them at no cost.
pub const TRACE_TARGET: &str = "pulse::trace";

/// The path of the traces signal under an OTLP/HTTP base URL.
const HTTP_TRACES_PATH: &str = "/v1/traces";

/// How long dropping the guard may wait for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Crates on the export path. Their own spans are not exported: exporting
/// them would create more spans to export, without end.
const EXPORT_PATH_TARGETS: &[&str] =
    &["h2", "hyper", "hyper_util", "tonic", "tower", "opentelemetry", "opentelemetry_sdk", "opentelemetry_otlp"];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?} (from {origin}): {reason}")]
    Filter {
        /// The directives as given.
        filter: String,
        /// Where they came from: `RUST_LOG` or `telemetry.log_level`.
        origin: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names a protocol Pulse does not speak.
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL: {0}")]
    Protocol(String),
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("cannot create the OTLP span exporter for {endpoint:?}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The small runtime that drives the exporter's connection could not start.
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A global subscriber is already installed (a second call, or tests).
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInitialized(#[source] TryInitError),
}

/// Keeps OpenTelemetry export alive; on drop, flushes the spans still queued
/// and shuts the tracer provider down. Hold it in `main` until the end:
/// `let _telemetry = init_telemetry(…)?;` (not `let _ = …`, which drops it
/// at once).
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// The exporter's gRPC channel runs its connection task here, not on the
    /// service's runtime: actix runs a current-thread runtime, and shutting
    /// the provider down blocks that thread while the last batch is sent,
    /// which would stall a connection task that lived on it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").field("otlp", &self.provider.is_some()).finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            // The subscriber may be the one failing; stderr always works.
            eprintln!("pulse: flushing traces at shutdown failed: {error}");
        }
        if let Some(runtime) = self.runtime.take() {
            // Does not block, so it is allowed inside the service's runtime.
            runtime.shutdown_background();
        }
    }
}

/// Where and how spans are exported: what the settings and the standard
/// `OTEL_*` environment variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The full URL spans are sent to (for HTTP, with `/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

impl OtlpExport {
    /// The export `settings` ask for, completed from the environment read
    /// through `env`: `None` when no endpoint is configured. Settings win;
    /// then `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, like the setting: HTTP
    /// adds `/v1/traces`). The protocol is `telemetry.otlp_protocol`, else
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else gRPC.
    ///
    /// # Errors
    ///
    /// [`TelemetryError::Protocol`] when the environment names a protocol
    /// other than `grpc` or `http/protobuf`.
    pub fn resolve(
        settings: &TelemetrySettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let env = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let protocol = match settings.otlp_protocol {
            Some(protocol) => protocol,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                Some(name) => name.parse().map_err(TelemetryError::Protocol)?,
                None => OtlpProtocol::default(),
            },
        };
        let configured = settings.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty());
        let endpoint = match (configured, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => with_signal_path(base, protocol),
            (None, Some(full)) => full,
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => with_signal_path(&base, protocol),
                None => return Ok(None),
            },
        };
        Ok(Some(Self { endpoint, protocol }))
    }
}

/// A base URL completed with the traces path for HTTP (unless it has it).
fn with_signal_path(base: &str, protocol: OtlpProtocol) -> String {
    match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf if base.trim_end_matches('/').ends_with(HTTP_TRACES_PATH) => base.to_owned(),
        OtlpProtocol::HttpProtobuf => format!("{}{HTTP_TRACES_PATH}", base.trim_end_matches('/')),
    }
}

/// Installs logging, and tracing export when an OTLP endpoint is configured
/// (see [`OtlpExport::resolve`]), for the whole process. `service_name` is
/// the `service.name` reported to the collector unless
/// `settings.service_name` or `OTEL_SERVICE_NAME` says otherwise.
///
/// Fails, rather than panicking, when a subscriber is already installed: a
/// test calling it twice gets [`TelemetryError::AlreadyInitialized`] and may
/// ignore it.
///
/// # Errors
///
/// A log filter that does not parse, an unsupported OTLP protocol, an
/// exporter that cannot be built, or a subscriber already installed.
pub fn init_telemetry(service_name: &str, settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let filter = env_filter(&settings.log_level)?;
    let format = resolve_format(settings.log_format, std::io::stderr().is_terminal());

    let mut guard = TelemetryGuard { provider: None, runtime: None };
    let export = OtlpExport::resolve(settings, |name| std::env::var(name).ok())?;
    if let Some(export) = &export {
        let name = settings
            .service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| service_name.to_owned());
        let (provider, runtime) = otlp_provider(export, name)?;
        guard.runtime = runtime;
        guard.provider = Some(provider);
    }

    let otel_layer = guard.provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name.to_owned()))
            .with_filter(export_filter())
    });

    tracing_subscriber::registry()
        .with(otel_layer)
        .with(log_layer(format, std::io::stderr).with_filter(filter))
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &guard.provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    tracing::debug!(?format, otlp = ?export, "telemetry initialised");
    Ok(guard)
}

/// What the exporter takes: spans at info and above, and the trace-only
/// spans ([`TRACE_TARGET`]) at any level, whatever the log level; never the
/// export path's own. Public for subscribers built by hand (and tests).
pub fn export_filter() -> Targets {
    EXPORT_PATH_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::INFO).with_target(TRACE_TARGET, LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::OFF),
    )
}

/// `RUST_LOG` when set and not empty, the setting otherwise.
fn env_filter(setting: &str) -> Result<EnvFilter, TelemetryError> {
    let (filter, origin) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => (value, "RUST_LOG"),
        _ => (setting.to_owned(), "telemetry.log_level"),
    };
    EnvFilter::builder().parse(&filter).map_err(|e| TelemetryError::Filter {
        filter: filter.clone(),
        origin,
        reason: e.to_string(),
    })
}

/// `Auto` becomes `Pretty` on a terminal and `Json` elsewhere.
fn resolve_format(format: LogFormat, is_terminal: bool) -> LogFormat {
    match format {
        LogFormat::Auto if is_terminal => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Json,
        forced => forced,
    }
}

/// The log output layer the services install for `format` (`Auto` counts
/// as `Pretty`), writing to `writer`: public so that tests can check the
/// exact lines a service writes.
pub fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty | LogFormat::Auto => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
}

fn otlp_provider(
    export: &OtlpExport,
    service_name: String,
) -> Result<(SdkTracerProvider, Option<tokio::runtime::Runtime>), TelemetryError> {
    let exporter_error = |source| TelemetryError::Exporter { endpoint: export.endpoint.clone(), source };
    let (exporter, runtime) = match export.protocol {
        OtlpProtocol::Grpc => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pulse-otlp")
                .enable_all()
                .build()
                .map_err(TelemetryError::Runtime)?;
            // The tonic channel spawns its connection task on the runtime
            // current while it is built.
            let exporter = {
                let _entered = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(&export.endpoint).build()
            }
            .map_err(exporter_error)?;
            (exporter, Some(runtime))
        }
        // A blocking HTTP client, called from the batch processor's own
        // thread: no runtime needed.
        OtlpProtocol::HttpProtobuf => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(&export.endpoint)
                .build()
                .map_err(exporter_error)?;
            (exporter, None)
        }
    };

    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    Ok((provider, runtime))
}

/// The W3C `traceparent` of the current `tracing` span, to store in an
/// event's `trace` field; `None` when there is no valid OpenTelemetry span
/// context (no OTel layer installed, or outside any span).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` continue the trace named by `traceparent` (an event's `trace`
/// field). Call it right after creating the span, before entering it: the
/// parent of a started span can no longer change.
///
/// Returns whether the parent was set. A malformed `traceparent` or a
/// subscriber without the OpenTelemetry layer leaves the span as it is: a
/// broken trace id must never stop an event from being delivered.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    let traceparent = traceparent.trim();
    if !is_traceparent(traceparent) {
        return false;
    }
    let carrier: HashMap<String, String> = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// Whether `value` is a W3C `traceparent`: `version-traceid-spanid-flags`
/// with 2, 32, 16 and 2 lowercase hex digits, a version other than `ff`,
/// and ids that are not all zero, as W3C Trace Context requires (the
/// propagator alone accepts short ids). The one check of a `traceparent`
/// in Pulse: a malformed one is ignored wherever it arrives.
pub fn is_traceparent(value: &str) -> bool {
    let mut parts = value.split('-');
    let (Some(version), Some(trace), Some(span), Some(flags), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(span, 16)
        && nonzero(span)
        && hex(flags, 2)
}

/// For tests: when `TEST_LOG` is set, logs go to the test output (filtered
/// by `RUST_LOG`, `debug` by default); otherwise nothing is installed and
/// logs go nowhere. Safe to call from every test.
pub fn init_test_logging() {
    static ONCE: Once = Once::new();
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    ONCE.call_once(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
        // Another subscriber may already be installed; keep it.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A subscriber with an OTel layer on an in-process provider (no export).
    fn otel_subscriber() -> (impl tracing::Subscriber + Send + Sync, SdkTracerProvider) {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        (tracing_subscriber::registry().with(layer), provider)
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn otlp_export_follows_settings_then_the_standard_variables() {
        let none = TelemetrySettings::default();
        assert_eq!(OtlpExport::resolve(&none, env(&[])).unwrap(), None);
        assert_eq!(OtlpExport::resolve(&none, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(), None);

        let grpc = OtlpExport::resolve(&none, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])).unwrap();
        assert_eq!(grpc, Some(OtlpExport { endpoint: "http://c:4317".into(), protocol: OtlpProtocol::Grpc }));

        let http =
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        let http = OtlpExport::resolve(&none, http).unwrap().unwrap();
        assert_eq!((http.endpoint.as_str(), http.protocol), ("http://c:4318/v1/traces", OtlpProtocol::HttpProtobuf));

        // The signal's own endpoint is used as is.
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ];
        assert_eq!(OtlpExport::resolve(&none, env(&vars)).unwrap().unwrap().endpoint, "http://t:1/custom");

        // Settings win over the environment.
        let set = TelemetrySettings {
            otlp_endpoint: Some("http://s:4318/v1/traces".into()),
            otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
            ..TelemetrySettings::default()
        };
        let export = OtlpExport::resolve(&set, env(&vars)).unwrap().unwrap();
        assert_eq!(export.endpoint, "http://s:4318/v1/traces");

        let bad = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert!(matches!(OtlpExport::resolve(&none, bad), Err(TelemetryError::Protocol(_))));
    }

    #[test]
    fn auto_format_follows_the_terminal() {
        assert_eq!(resolve_format(LogFormat::Auto, true), LogFormat::Pretty);
        assert_eq!(resolve_format(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(resolve_format(LogFormat::Json, true), LogFormat::Json);
        assert_eq!(resolve_format(LogFormat::Pretty, false), LogFormat::Pretty);
    }

    #[test]
    fn json_format_writes_json_lines() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(log_layer(LogFormat::Json, buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", channel = "alerts");
            let _entered = span.enter();
            tracing::info!(count = 3, "published");
        });
        let text = buffer.text();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "published");
        assert_eq!(line["fields"]["count"], 3);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["channel"], "alerts");
    }

    #[test]
    fn pretty_format_is_not_json() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(log_layer(LogFormat::Pretty, buffer.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::info!("hello human"));
        let text = buffer.text();
        assert!(text.contains("hello human"), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err(), "{text}");
    }

    #[test]
    fn bad_filter_is_an_error_naming_its_origin() {
        // RUST_LOG is not set by `cargo test`; if a developer sets it, the
        // origin changes but the error must still be reported.
        let err = env_filter("info,=[").unwrap_err();
        assert!(matches!(err, TelemetryError::Filter { .. }), "{err:?}");
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(err.to_string().contains("telemetry.log_level"), "{err}");
        }
        assert!(env_filter("info,pulse_gateway=debug").is_ok());
    }

    #[test]
    fn no_traceparent_without_otel_layer() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("no otel");
            let _entered = span.enter();
            assert_eq!(current_traceparent(), None);
            assert!(!set_parent_from_traceparent(&tracing::info_span!("child"), PARENT));
        });
    }

    #[test]
    fn traceparent_round_trip_continues_the_trace() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_traceparent(), None, "outside any span");

            let span = tracing::info_span!("handle event");
            assert!(set_parent_from_traceparent(&span, PARENT));
            let _entered = span.enter();
            let tp = current_traceparent().unwrap();
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(parts[2], "00f067aa0ba902b7", "a new span of that trace");
            assert_eq!(parts[2].len(), 16);
            assert_eq!(parts[3], "01", "sampled, as the parent was");
        });
    }

    #[test]
    fn a_new_root_span_gets_a_fresh_trace() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("root");
            let _entered = span.enter();
            let tp = current_traceparent().unwrap();
            assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
            assert!(!tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        });
    }

    #[test]
    fn malformed_traceparent_is_ignored() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            for bad in [
                "",
                "garbage",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f35-00f067aa0ba902b7-01",
            ] {
                let span = tracing::info_span!("handle event");
                assert!(!set_parent_from_traceparent(&span, bad), "{bad:?}");
            }
        });
    }

    #[test]
    fn parent_cannot_change_once_the_span_started() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("started");
            // Reading the context starts the OpenTelemetry span.
            assert!(traceparent_of(&span).is_some());
            assert!(!set_parent_from_traceparent(&span, PARENT));
        });
    }
}
