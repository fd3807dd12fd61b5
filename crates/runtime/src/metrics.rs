//! The process-wide Prometheus recorder for the `metrics` crate.
//!
//! Code anywhere in Pulse records with the `metrics` macros
//! (`metrics::counter!("pulse_events_published_total").increment(1)`); this
//! module installs the one global recorder they write to and renders it for
//! `GET /metrics` (mounted by [`configure_ops`](crate::configure_ops)).
//!
//! The exporter is built without its HTTP listener: the service's own
//! actix-web server answers `/metrics`, so there is one port per service.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds, for every metric whose name ends in
/// `_seconds`. Pulse aims at end-to-end delivery well under a second, so the
/// buckets are dense from 0.5 ms to 1 s and sparse beyond.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Histogram buckets for metrics whose name ends in `_frames` (queue
/// depths): powers of two up to the largest queue anyone configures.
pub const FRAME_BUCKETS: &[f64] =
    &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// How often histogram data is drained. `install_recorder` does not spawn
/// the exporter's own upkeep task, so a thread here does it.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    /// Another global `metrics` recorder was installed first, or the
    /// exporter refused its configuration.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Install(String),
}

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the global Prometheus recorder on the first call and returns a
/// handle to render it; later calls return the same handle. Tests in one
/// process may call it any number of times.
///
/// Also starts a background thread that runs the recorder's upkeep every
/// few seconds, so histograms do not grow without bound between scrapes.
pub fn install_metrics() -> Result<PrometheusHandle, MetricsError> {
    HANDLE.get_or_init(install).clone()
}

fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_frames".to_owned()), FRAME_BUCKETS))
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    process_collector().describe();

    let upkeep = handle.clone();
    // A plain thread rather than a Tokio task: this may run before any
    // runtime exists, and the upkeep is a short, blocking, in-memory step.
    let spawned = std::thread::Builder::new().name("pulse-metrics-upkeep".to_owned()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        }
    });
    if let Err(error) = spawned {
        // Rendering still runs upkeep-free; histograms then only grow until
        // the next scrape. Worth a warning, not a failed start.
        tracing::warn!(%error, "cannot start the metrics upkeep thread");
    }
    Ok(handle)
}

/// The `process_*` metrics (CPU seconds, resident memory, open file
/// descriptors and their limit, threads, start time) of this process.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Renders every metric for a scrape, the `process_*` ones read just now.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_records() {
        let first = install_metrics().unwrap();
        let second = install_metrics().unwrap();
        metrics::counter!("pulse_runtime_test_idempotent_total").increment(3);
        // Both handles see the same (global) recorder.
        for handle in [first, second] {
            let text = handle.render();
            assert!(text.contains("pulse_runtime_test_idempotent_total 3"), "{text}");
        }
    }

    #[test]
    fn process_metrics_are_rendered() {
        let handle = install_metrics().unwrap();
        let text = render(&handle);
        for name in
            ["process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_cpu_seconds_total"]
        {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} described:\n{text}");
            assert!(text.lines().any(|l| l.starts_with(name) && !l.starts_with('#')), "{name}:\n{text}");
        }
    }

    #[test]
    fn frames_histograms_use_frame_buckets() {
        let handle = install_metrics().unwrap();
        metrics::histogram!("pulse_runtime_test_depth_frames").record(3.0);
        let text = handle.render();
        assert!(text.contains("pulse_runtime_test_depth_frames_bucket{le=\"4\"} 1"), "{text}");
    }

    #[test]
    fn seconds_histograms_use_latency_buckets() {
        let handle = install_metrics().unwrap();
        metrics::histogram!("pulse_runtime_test_latency_seconds").record(0.003);
        let text = handle.render();
        assert!(text.contains("# TYPE pulse_runtime_test_latency_seconds histogram"), "{text}");
        assert!(text.contains("pulse_runtime_test_latency_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("pulse_runtime_test_latency_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
    }
}
