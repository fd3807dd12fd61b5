//! The exporter's filter against the log filter, in a process of its own:
//! `tracing` caches callsite interest across every subscriber of a process,
//! so other tests' subscribers must not run beside this one.

use pulse_runtime::{LogFormat, TRACE_TARGET, export_filter, log_layer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

fn logs<S: tracing::Subscriber + for<'a> LookupSpan<'a>>() -> impl Layer<S> {
    log_layer(LogFormat::Json, std::io::sink).with_filter(EnvFilter::new("info,pulse_ingest=warn"))
}

fn trace_only() -> bool {
    tracing::enabled!(target: TRACE_TARGET, tracing::Level::DEBUG)
}

fn ingest_info() -> bool {
    tracing::enabled!(target: "pulse_ingest::observe", tracing::Level::INFO)
}

/// The fan-out asks `enabled!(target: TRACE_TARGET, DEBUG)` once per batch:
/// false with logs at info and no exporter (no span per event), true with an
/// exporter whatever the log level; and a quiet log level for a crate does
/// not hide its info spans from the exporter.
#[test]
fn trace_only_spans_are_enabled_by_the_exporter_alone() {
    let without_exporter = tracing_subscriber::registry().with(logs());
    tracing::subscriber::with_default(without_exporter, || {
        assert!(!trace_only(), "no exporter, logs at info");
        assert!(!ingest_info(), "pulse_ingest logs at warn");
    });

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let exporter = tracing_opentelemetry::layer()
        .with_tracer(opentelemetry::trace::TracerProvider::tracer(&provider, "test"))
        .with_filter(export_filter());
    let with_exporter = tracing_subscriber::registry().with(exporter).with(logs());
    tracing::subscriber::with_default(with_exporter, || {
        assert!(trace_only(), "the exporter takes the trace-only spans");
        assert!(ingest_info(), "the exporter takes ingest's info spans");
    });
    assert!(!export_filter().would_enable("h2::proto", &tracing::Level::INFO), "never the export path");
}
