//! CPU time and memory of a process, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` (Linux).

use std::time::Duration;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size since start (`VmHWM`), bytes.
    pub hwm_bytes: u64,
}

/// Reads one sample of process `pid` (`None` for "self").
pub fn sample(pid: Option<u32>) -> anyhow::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    Ok(ProcSample {
        cpu_secs: parse_cpu_secs(&stat)?,
        rss_bytes: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        hwm_bytes: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// The process id of the Redis server behind `conn` (`process_id` of
/// `INFO server`), to sample its CPU; `None` when the server does not say.
///
/// # Errors
/// When `INFO` fails.
pub async fn redis_pid(conn: &mut impl redis::aio::ConnectionLike) -> anyhow::Result<Option<u32>> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    Ok(info_field(&info, "process_id").and_then(|pid| u32::try_from(pid).ok()))
}

/// A numeric field of an `INFO` answer (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2)
/// may contain spaces, so fields are counted after its closing parenthesis.
pub fn parse_cpu_secs(stat: &str) -> anyhow::Result<f64> {
    let after = stat.rfind(')').map(|i| &stat[i + 1..]).ok_or_else(|| anyhow::anyhow!("bad stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse()?;
    Ok((utime + stime) as f64 / TICKS_PER_SEC)
}

/// A `Key:   123 kB` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| line.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
}

/// Samples a process periodically and keeps the highest RSS seen.
pub struct PeakSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    pub fn start(pid: Option<u32>, every: Duration) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Ok(s) = sample(pid) {
                    seen.fetch_max(s.rss_bytes, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Self { peak, task }
    }

    /// Stops sampling; returns the peak RSS in bytes.
    pub fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "1234 (pulse gate way) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 1000 200";
        assert!((parse_cpu_secs(stat).unwrap() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn samples_self() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0);
    }
}
