//! One simulated agent: its checks, their readings, and the L3 failures it
//! goes through. Pure and deterministic for a given seed, so it is tested
//! without any network.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pulse_protocol::AgentId;
use pulse_protocol::probe::{CheckResult, CheckStatus, Decision, Level, Report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Roles agents are named after (`web-01`, `db-02`, …), in turn.
const ROLES: &[&str] = &["web", "api", "db", "cache", "worker", "edge"];

/// The L3 checks of every agent: the ones whose failure raises an alert.
pub const L3_CHECKS: &[&str] = &["disk:/", "http:api", "db:replication"];

/// Reports an L3 failure lasts, at least and at most (then it recovers and
/// its alert is resolved).
const FAILURE_REPORTS: std::ops::RangeInclusive<u32> = 2..=6;

/// The name of the `index`th agent of a fleet: `web-01`, `api-01`, …,
/// `web-02`, …
pub fn agent_name(index: usize) -> String {
    let role = ROLES[index % ROLES.len()];
    format!("{role}-{:02}", index / ROLES.len() + 1)
}

/// A simulated Probe agent.
#[derive(Debug)]
pub struct SimAgent {
    id: AgentId,
    rng: StdRng,
    /// Distinguishes report ids of this run from those of an earlier run
    /// with the same seed (the store remembers ids for a while).
    run: String,
    seq: u64,
    /// Chance per report that a healthy agent starts failing an L3 check.
    failure_rate: f64,
    /// The L3 check failing now and how many more reports it fails for.
    failing: Option<(&'static str, u32)>,
    /// Slowly drifting readings, so charts look like a real machine.
    cpu: f64,
    mem: f64,
    disk: f64,
}

impl SimAgent {
    /// The `index`th agent of a fleet seeded with `seed`.
    pub fn new(index: usize, seed: u64, run: &str, failure_rate: f64) -> Self {
        let id = AgentId::parse(&agent_name(index)).unwrap_or_else(|_| unreachable!("agent names are valid ids"));
        let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cpu = rng.random_range(5.0..40.0);
        let mem = rng.random_range(30.0..70.0);
        let disk = rng.random_range(20.0..70.0);
        Self {
            id,
            rng,
            run: run.to_owned(),
            seq: 0,
            failure_rate: failure_rate.clamp(0.0, 1.0),
            failing: None,
            cpu,
            mem,
            disk,
        }
    }

    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The L3 check failing now, if any.
    pub fn failing_check(&self) -> Option<&'static str> {
        self.failing.map(|(check, _)| check)
    }

    /// Makes `check` fail for the next `reports` reports (tests, demos).
    pub fn force_failure(&mut self, check: &'static str, reports: u32) {
        self.failing = Some((check, reports.max(1)));
    }

    /// The next report: every check once, readings moved a little, and
    /// perhaps the start or the end of an L3 failure.
    pub fn next_report(&mut self, now: DateTime<Utc>) -> Report {
        self.seq += 1;
        self.failing = match self.failing {
            Some((_, 0)) => None,
            Some((check, left)) => Some((check, left - 1)),
            None if self.rng.random_bool(self.failure_rate) => {
                let check = L3_CHECKS[self.rng.random_range(0..L3_CHECKS.len())];
                // This report fails too, so count it.
                Some((check, self.rng.random_range(FAILURE_REPORTS) - 1))
            }
            None => None,
        };
        let failing = self.failing_check();

        self.cpu = drift(&mut self.rng, self.cpu, 8.0, 1.0, 99.0);
        self.mem = drift(&mut self.rng, self.mem, 3.0, 10.0, 95.0);
        self.disk = drift(&mut self.rng, self.disk, 0.5, 5.0, 90.0);
        let load = self.cpu / 25.0 + self.rng.random_range(0.0..0.3);
        let latency_ms = self.rng.random_range(8.0..60.0);
        let lag_s = self.rng.random_range(0.0..0.8);

        let mut checks = vec![
            threshold("cpu", Level::L2, "usage_pct", self.cpu, 85.0, 95.0),
            threshold("mem", Level::L2, "used_pct", self.mem, 85.0, 95.0),
            check("load", Level::L1, CheckStatus::Ok, None, [("load1", round(load))]),
        ];
        checks.push(if failing == Some("disk:/") {
            let used = self.rng.random_range(96.0..99.9);
            check("disk:/", Level::L3, CheckStatus::Fail, Some(format!("{used:.1}% used")), [("used_pct", round(used))])
        } else {
            check("disk:/", Level::L3, CheckStatus::Ok, None, [("used_pct", round(self.disk))])
        });
        checks.push(if failing == Some("http:api") {
            check(
                "http:api",
                Level::L3,
                CheckStatus::Fail,
                Some("GET /health answered 503".to_owned()),
                [("latency_ms", round(self.rng.random_range(2000.0..5000.0)))],
            )
        } else {
            check("http:api", Level::L3, CheckStatus::Ok, None, [("latency_ms", round(latency_ms))])
        });
        checks.push(if failing == Some("db:replication") {
            let lag = self.rng.random_range(30.0..300.0);
            check(
                "db:replication",
                Level::L3,
                CheckStatus::Fail,
                Some(format!("replica {lag:.0}s behind")),
                [("lag_s", round(lag))],
            )
        } else {
            check("db:replication", Level::L3, CheckStatus::Ok, None, [("lag_s", round(lag_s))])
        });

        Report {
            report_id: format!("{}-{}-{}", self.id, self.run, self.seq),
            agent_id: self.id.clone(),
            // Milliseconds, as on the wire.
            ts: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
            checks,
        }
    }
}

/// The decision a deciding component might take when `check` fails on
/// `agent` (the demo publishes one per L3 failure).
pub fn decision_for(agent: &AgentId, check: &str, id: String, now: DateTime<Utc>) -> Decision {
    let action = match check {
        "disk:/" => "clean_temp_files",
        "http:api" => "restart_service",
        "db:replication" => "resync_replica",
        _ => "escalate",
    };
    Decision {
        decision_id: id,
        action: action.to_owned(),
        reason: format!("{check} is failing on {agent}"),
        agent_ids: vec![agent.clone()],
        ts: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
        details: serde_json::json!({ "check": check, "level": "L3" }),
    }
}

/// A random walk step kept within `[min, max]`.
fn drift(rng: &mut StdRng, value: f64, step: f64, min: f64, max: f64) -> f64 {
    (value + rng.random_range(-step..=step)).clamp(min, max)
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Ok below `warn`, warn below `fail`, fail above.
fn threshold(name: &str, level: Level, metric: &str, value: f64, warn: f64, fail: f64) -> CheckResult {
    let (status, message) = if value >= fail {
        (CheckStatus::Fail, Some(format!("{metric} {value:.1} ≥ {fail}")))
    } else if value >= warn {
        (CheckStatus::Warn, Some(format!("{metric} {value:.1} ≥ {warn}")))
    } else {
        (CheckStatus::Ok, None)
    };
    check(name, level, status, message, [(metric, round(value))])
}

fn check<const N: usize>(
    name: &str,
    level: Level,
    status: CheckStatus,
    message: Option<String>,
    metrics: [(&str, f64); N],
) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        level,
        status,
        message,
        metrics: metrics.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<BTreeMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(report: &Report) -> Vec<&str> {
        report.checks.iter().filter(|c| c.is_l3_failure()).map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn names_are_valid_distinct_agent_ids() {
        let names: std::collections::BTreeSet<_> = (0..100).map(agent_name).collect();
        assert_eq!(names.len(), 100);
        assert!(names.iter().all(|n| AgentId::parse(n).is_ok()));
        assert_eq!(agent_name(0), "web-01");
        assert_eq!(agent_name(6), "web-02");
    }

    #[test]
    fn reports_are_valid_unique_and_realistic() {
        let mut agent = SimAgent::new(3, 7, "run1", 0.0);
        let a = agent.next_report(Utc::now());
        let b = agent.next_report(Utc::now());
        assert_ne!(a.report_id, b.report_id);
        assert_eq!(a.agent_id.as_str(), "cache-01");
        let names: Vec<_> = a.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cpu", "mem", "load", "disk:/", "http:api", "db:replication"]);
        assert!(a.checks.iter().all(|c| !c.metrics.is_empty()));
        assert!(failures(&a).is_empty(), "no failures at rate 0");
        // It is the wire format ingest accepts.
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), a);
    }

    #[test]
    fn an_l3_failure_lasts_a_few_reports_then_recovers() {
        let mut agent = SimAgent::new(0, 1, "r", 0.0);
        agent.force_failure("db:replication", 3);
        let now = Utc::now();
        let seen: Vec<_> = (0..5).map(|_| failures(&agent.next_report(now)).len()).collect();
        assert_eq!(seen, [1, 1, 1, 0, 0]);
        let recovered = agent.next_report(now);
        let db = recovered.checks.iter().find(|c| c.name == "db:replication").unwrap();
        assert_eq!(db.status, CheckStatus::Ok, "ok resolves the alert");
    }

    #[test]
    fn failures_start_at_about_the_configured_rate_and_always_end() {
        let mut agent = SimAgent::new(1, 42, "r", 0.2);
        let now = Utc::now();
        let mut starts = 0;
        let mut failing = false;
        for _ in 0..1000 {
            let now_failing = !failures(&agent.next_report(now)).is_empty();
            if now_failing && !failing {
                starts += 1;
            }
            failing = now_failing;
        }
        assert!((20..200).contains(&starts), "{starts} failures started");
    }

    #[test]
    fn same_seed_same_reports() {
        let now = Utc::now();
        let a = SimAgent::new(2, 9, "r", 0.5).next_report(now);
        let b = SimAgent::new(2, 9, "r", 0.5).next_report(now);
        assert_eq!(a, b);
    }
}
