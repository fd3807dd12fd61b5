//! The human-readable table of a [`RunReport`].

use std::fmt::Write;

use crate::run::RunReport;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Renders the report as aligned `name  value` lines.
pub fn table(label: &str, r: &RunReport) -> String {
    let mut out = String::new();
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<28} {value}");
    };
    row("run", label.to_string());
    row("clients connected", format!("{} / {} ({} failed)", r.connected, r.clients, r.connect_failures));
    if let Some(e) = &r.first_connect_error {
        row("first connect error", e.clone());
    }
    row(
        "connect all / p50 / p99",
        format!("{:.2} s / {:.1} ms / {:.1} ms", r.connect_secs, r.connect_time.p50_ms, r.connect_time.p99_ms),
    );
    if r.published + r.publish_errors > 0 {
        row(
            "published",
            format!(
                "{} ok, {} failed, {:.0} ev/s asked, took {:.2} s",
                r.published, r.publish_errors, r.rate, r.publish_secs
            ),
        );
        if let Some(e) = &r.first_publish_error {
            row("first publish error", e.clone());
        }
        row("deliveries expected", r.expected.to_string());
        row("delivered", format!("{} ({:.0}/s)", r.delivered, r.delivered_per_sec));
        let pct = if r.expected > 0 { 100.0 * r.lost as f64 / r.expected as f64 } else { 0.0 };
        row("lost / duplicated", format!("{} ({pct:.2} %) / {}", r.lost, r.duplicates));
        if r.misrouted > 0 {
            row("misrouted", r.misrouted.to_string());
        }
        let l = &r.latency;
        row("latency p50/p90/p99 (ms)", format!("{:.2} / {:.2} / {:.2}", l.p50_ms, l.p90_ms, l.p99_ms));
        row("latency p99.9 / max (ms)", format!("{:.2} / {:.2}", l.p999_ms, l.max_ms));
    }
    row("closed by server / errors", format!("{} {:?} / {}", r.closed_by_server, r.close_codes, r.client_errors));
    if let Some(s) = &r.server {
        row(
            "server RSS before/after/peak",
            format!(
                "{:.1} / {:.1} / {:.1} MiB",
                mib(s.before_connect.rss_bytes),
                mib(s.after_connect.rss_bytes),
                mib(s.peak_rss_bytes)
            ),
        );
        row("server RSS per connection", format!("{:.2} KiB", s.rss_per_connection_bytes / 1024.0));
        if r.published > 0 {
            row("server CPU", format!("{:.2} s, {:.3} µs per delivery", s.cpu_secs_publishing, s.cpu_us_per_delivery));
        }
    }
    row(
        "load generator",
        format!("{:.2} CPU s, peak RSS {:.1} MiB", r.loadgen_cpu_secs, mib(r.loadgen_peak_rss_bytes)),
    );
    out
}
