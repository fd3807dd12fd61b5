//! Payloads of the Probe domain: reports, check results, alerts, decisions
//! and agent status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AgentId;

/// How important a check is. An L3 check that fails raises an alert; L2
/// checks feed decisions; L1 checks are informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    L1,
    L2,
    L3,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

/// One check result inside a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    /// Stable name of the check on its agent, such as `disk:/var`.
    pub name: String,
    pub level: Level,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Numeric readings, such as `{"used_pct": 93.5}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl CheckResult {
    /// A failing L3 check: the kind that raises an alert.
    pub fn is_l3_failure(&self) -> bool {
        self.level == Level::L3 && self.status == CheckStatus::Fail
    }
}

/// What a Probe agent posts: the results of one round of checks. Also the
/// data of `report_received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Unique per report; a retried report carries the same id and is
    /// accepted once.
    pub report_id: String,
    pub agent_id: AgentId,
    #[serde(with = "crate::timestamp")]
    pub ts: DateTime<Utc>,
    pub checks: Vec<CheckResult>,
}

/// Whether an agent is reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Offline,
}

/// The health an agent's latest checks add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Critical,
    /// No report yet, or the agent went silent.
    Unknown,
}

impl HealthStatus {
    /// Critical if any L3 check fails, degraded if any check is not ok,
    /// healthy otherwise.
    pub fn of_checks(checks: &[CheckResult]) -> Self {
        if checks.iter().any(CheckResult::is_l3_failure) {
            Self::Critical
        } else if checks.iter().any(|c| c.status != CheckStatus::Ok) {
            Self::Degraded
        } else {
            Self::Healthy
        }
    }
}

/// The current state of an agent, as the read API and snapshots show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub agent_id: AgentId,
    pub status: AgentStatus,
    pub health: HealthStatus,
    #[serde(with = "crate::timestamp")]
    pub last_seen: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_id: Option<String>,
    /// The checks of the latest report.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

/// Data of `agent_status_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatusChange {
    pub agent_id: AgentId,
    pub old_status: AgentStatus,
    pub new_status: AgentStatus,
    pub health: HealthStatus,
    /// A sentence for people, such as "no report for 5m 0s".
    pub message: String,
    #[serde(with = "crate::timestamp")]
    pub ts: DateTime<Utc>,
}

/// Whether an alert is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Resolved,
}

/// An alert raised by a failing L3 check; data of `alert_triggered` and
/// `alert_resolved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{agent_id}:{check}:{opened-at ms}`: unique, and stable while open.
    pub alert_id: String,
    pub agent_id: AgentId,
    pub check: String,
    pub level: Level,
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(with = "crate::timestamp")]
    pub opened_at: DateTime<Utc>,
    #[serde(default, with = "crate::timestamp::option", skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// An L2 decision from the deciding component; data of `decision_made`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub decision_id: String,
    /// What was decided, such as `restart_service` or `escalate`.
    pub action: String,
    /// Why, for people.
    pub reason: String,
    /// The agents the decision concerns (may be empty).
    #[serde(default)]
    pub agent_ids: Vec<AgentId>,
    #[serde(with = "crate::timestamp")]
    pub ts: DateTime<Utc>,
    /// Anything else the deciding component wants to pass on.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// Data of `presence_update`: who is connected to a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub channel: crate::Channel,
    pub count: usize,
    pub users: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: &T) {
        let json = serde_json::to_string(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
    }

    fn report() -> Report {
        serde_json::from_value(json!({
            "report_id": "r-1", "agent_id": "web-1", "ts": "2026-11-22T10:00:00.000Z",
            "checks": [
                {"name": "disk:/", "level": "L3", "status": "fail", "message": "97% used", "metrics": {"used_pct": 97.0}},
                {"name": "load", "level": "L1", "status": "ok"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn report_round_trips_and_finds_l3_failures() {
        let report = report();
        round_trip(&report);
        assert!(report.checks[0].is_l3_failure());
        assert!(!report.checks[1].is_l3_failure());
        assert_eq!(HealthStatus::of_checks(&report.checks), HealthStatus::Critical);
        assert_eq!(HealthStatus::of_checks(&report.checks[1..]), HealthStatus::Healthy);
    }

    #[test]
    fn unknown_level_is_named_in_the_error() {
        let err =
            serde_json::from_value::<CheckResult>(json!({"name": "x", "level": "L4", "status": "ok"})).unwrap_err();
        assert!(err.to_string().contains("unknown variant `L4`"), "{err}");
        let err = serde_json::from_value::<CheckResult>(json!({"name": "x", "level": "L1"})).unwrap_err();
        assert!(err.to_string().contains("missing field `status`"), "{err}");
        let err = serde_json::from_value::<Report>(
            json!({"report_id": "r", "agent_id": "bad id", "ts": "2026-11-22T10:00:00Z", "checks": []}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("agent id"), "{err}");
        let err = serde_json::from_value::<Report>(
            json!({"report_id": "r", "agent_id": "a", "ts": "yesterday", "checks": []}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid timestamp"), "{err}");
    }

    #[test]
    fn every_payload_round_trips() {
        let ts: DateTime<Utc> = "2026-11-22T10:00:00.123Z".parse().unwrap();
        let agent_id = AgentId::parse("web-1").unwrap();
        round_trip(&AgentState {
            agent_id: agent_id.clone(),
            status: AgentStatus::Online,
            health: HealthStatus::Degraded,
            last_seen: ts,
            last_report_id: Some("r-1".into()),
            checks: report().checks,
        });
        round_trip(&AgentStatusChange {
            agent_id: agent_id.clone(),
            old_status: AgentStatus::Online,
            new_status: AgentStatus::Offline,
            health: HealthStatus::Unknown,
            message: "no report for 5m".into(),
            ts,
        });
        let mut alert = Alert {
            alert_id: "web-1:disk:/:1".into(),
            agent_id: agent_id.clone(),
            check: "disk:/".into(),
            level: Level::L3,
            state: AlertState::Open,
            message: None,
            opened_at: ts,
            resolved_at: None,
        };
        round_trip(&alert);
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(ts);
        round_trip(&alert);
        round_trip(&Decision {
            decision_id: "d-1".into(),
            action: "restart_service".into(),
            reason: "nginx down twice".into(),
            agent_ids: vec![agent_id],
            ts,
            details: json!({"service": "nginx"}),
        });
        round_trip(&PresenceUpdate {
            channel: crate::Channel::parse("alerts").unwrap(),
            count: 1,
            users: vec!["ana".into()],
        });
    }
}
