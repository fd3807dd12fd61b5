//! The domain rules, written once for both stores: given what is stored now
//! and what happened, what is stored next and which events announce it.
//!
//! Everything here is pure; the stores read, call a planner, and apply the
//! plan atomically (the Redis store only if nothing it read has changed).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use pulse_protocol::probe::{
    AgentState, AgentStatus, AgentStatusChange, Alert, AlertState, CheckResult, CheckStatus, HealthStatus, Report,
};
use pulse_protocol::{AgentId, Channel, EventDraft, EventType, timestamp};

use crate::StoreError;

/// One event to publish on one channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Publish {
    pub channel: Channel,
    pub draft: EventDraft,
    /// The draft is the previous publish's (the same event on its agent
    /// channel): encoded once.
    pub repeats_previous: bool,
}

/// What a report changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportPlan {
    pub state: AgentState,
    /// Alerts to open.
    pub opened: Vec<Alert>,
    /// Alerts to close, in their resolved form.
    pub resolved: Vec<Alert>,
    pub publishes: Vec<Publish>,
}

/// What a heartbeat changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeartbeatPlan {
    pub state: AgentState,
    pub publishes: Vec<Publish>,
}

/// What taking a silent agent offline changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OfflinePlan {
    pub state: AgentState,
    pub change: AgentStatusChange,
    /// The one `agent_status_changed` draft, published on `agents` and on
    /// `agent:{id}`.
    pub draft: EventDraft,
}

/// The field of an open alert in the alert index: `{agent_id}/{check}`.
/// Agent ids never contain `/`, so the first `/` separates the two.
pub(crate) fn alert_field(agent_id: &AgentId, check: &str) -> String {
    format!("{}/{check}", agent_id.as_str())
}

/// The check names of a report that can affect alerts, first occurrence
/// of each name only.
pub(crate) fn distinct_checks(report: &Report) -> Vec<&CheckResult> {
    let mut seen = std::collections::HashSet::new();
    report.checks.iter().filter(|check| seen.insert(check.name.as_str())).collect()
}

/// Plans a report. `open` holds the agent's open alerts of the report's
/// checks, by check name.
pub(crate) fn plan_report(
    prev: Option<&AgentState>,
    open: &HashMap<String, Alert>,
    report: &Report,
    now: DateTime<Utc>,
    trace: Option<String>,
) -> Result<ReportPlan, StoreError> {
    let agent_id = &report.agent_id;
    let health = HealthStatus::of_checks(&report.checks);
    let state = AgentState {
        agent_id: agent_id.clone(),
        status: AgentStatus::Online,
        health,
        last_seen: prev.map_or(now, |p| p.last_seen.max(now)),
        last_report_id: Some(report.report_id.clone()),
        checks: report.checks.clone(),
    };

    let mut publishes = Vec::new();
    if let Some(change) = coming_online(prev, agent_id, health, now, "report") {
        let draft = draft(EventType::AGENT_STATUS_CHANGED, &change, now, &trace)?;
        push_twice(&mut publishes, Channel::AGENTS, agent_id, draft);
    }
    push_twice(&mut publishes, Channel::REPORTS, agent_id, draft(EventType::REPORT_RECEIVED, report, now, &trace)?);

    let mut opened = Vec::new();
    let mut resolved = Vec::new();
    for check in distinct_checks(report) {
        match open.get(&check.name) {
            None if check.is_l3_failure() => {
                let alert = Alert {
                    alert_id: format!("{}:{}:{}", agent_id.as_str(), check.name, now.timestamp_millis()),
                    agent_id: agent_id.clone(),
                    check: check.name.clone(),
                    level: check.level,
                    state: AlertState::Open,
                    message: check.message.clone(),
                    opened_at: now,
                    resolved_at: None,
                };
                push_twice(
                    &mut publishes,
                    Channel::ALERTS,
                    agent_id,
                    draft(EventType::ALERT_TRIGGERED, &alert, now, &trace)?,
                );
                opened.push(alert);
            }
            Some(alert) if check.status == CheckStatus::Ok => {
                let alert = Alert { state: AlertState::Resolved, resolved_at: Some(now), ..alert.clone() };
                push_twice(
                    &mut publishes,
                    Channel::ALERTS,
                    agent_id,
                    draft(EventType::ALERT_RESOLVED, &alert, now, &trace)?,
                );
                resolved.push(alert);
            }
            _ => {}
        }
    }
    Ok(ReportPlan { state, opened, resolved, publishes })
}

/// Plans a heartbeat received at `ts`; `ts` later than `now` counts as
/// `now`, so that a wrong clock cannot keep an agent online.
pub(crate) fn plan_heartbeat(
    prev: Option<&AgentState>,
    agent_id: &AgentId,
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    trace: Option<String>,
) -> Result<HeartbeatPlan, StoreError> {
    let ts = ts.min(now);
    let health = match prev {
        Some(prev) => online_health(prev),
        None => HealthStatus::Unknown,
    };
    let state = match prev {
        Some(prev) => {
            AgentState { status: AgentStatus::Online, health, last_seen: prev.last_seen.max(ts), ..prev.clone() }
        }
        None => AgentState {
            agent_id: agent_id.clone(),
            status: AgentStatus::Online,
            health,
            last_seen: ts,
            last_report_id: None,
            checks: Vec::new(),
        },
    };
    let mut publishes = Vec::new();
    if let Some(change) = coming_online(prev, agent_id, health, now, "heartbeat") {
        let draft = draft(EventType::AGENT_STATUS_CHANGED, &change, now, &trace)?;
        push_twice(&mut publishes, Channel::AGENTS, agent_id, draft);
    }
    Ok(HeartbeatPlan { state, publishes })
}

/// Plans taking an online agent offline at `now`; `None` if it is not
/// online.
pub(crate) fn plan_offline(state: &AgentState, now: DateTime<Utc>) -> Result<Option<OfflinePlan>, StoreError> {
    if state.status != AgentStatus::Online {
        return Ok(None);
    }
    let change = AgentStatusChange {
        agent_id: state.agent_id.clone(),
        old_status: AgentStatus::Online,
        new_status: AgentStatus::Offline,
        health: HealthStatus::Unknown,
        message: format!(
            "no report or heartbeat for {} (last seen {})",
            human_duration(now - state.last_seen),
            timestamp::format(&state.last_seen)
        ),
        ts: now,
    };
    let draft = draft(EventType::AGENT_STATUS_CHANGED, &change, now, &None)?;
    let state = AgentState { status: AgentStatus::Offline, health: HealthStatus::Unknown, ..state.clone() };
    Ok(Some(OfflinePlan { state, change, draft }))
}

/// The health of an agent that is (again) online, from its latest checks.
fn online_health(state: &AgentState) -> HealthStatus {
    if state.last_report_id.is_none() { HealthStatus::Unknown } else { HealthStatus::of_checks(&state.checks) }
}

/// The status change of an agent heard from through `via`, if it was
/// offline or unknown.
fn coming_online(
    prev: Option<&AgentState>,
    agent_id: &AgentId,
    health: HealthStatus,
    now: DateTime<Utc>,
    via: &str,
) -> Option<AgentStatusChange> {
    let message = match prev {
        None => format!("first {via}"),
        Some(prev) if prev.status == AgentStatus::Offline => format!(
            "{via} after {} of silence (last seen {})",
            human_duration(now - prev.last_seen),
            timestamp::format(&prev.last_seen)
        ),
        Some(_) => return None,
    };
    Some(AgentStatusChange {
        agent_id: agent_id.clone(),
        // An agent Pulse has never heard from is not reporting: offline.
        old_status: AgentStatus::Offline,
        new_status: AgentStatus::Online,
        health,
        message,
        ts: now,
    })
}

fn draft<T: serde::Serialize>(
    event_type: &'static str,
    payload: &T,
    now: DateTime<Utc>,
    trace: &Option<String>,
) -> Result<EventDraft, StoreError> {
    let mut draft = EventDraft::from_payload(event_type, payload)
        .map_err(|e| StoreError::backend(format!("encoding {event_type}: {e}")))?
        .with_trace(trace.clone());
    // One operation, one time: the events carry the time the state records.
    draft.ts = now;
    Ok(draft)
}

/// Publishes `draft` on the fleet channel `fleet`, then on `agent:{id}`.
fn push_twice(publishes: &mut Vec<Publish>, fleet: &'static str, agent_id: &AgentId, draft: EventDraft) {
    publishes.push(Publish { channel: Channel::well_known(fleet), draft: draft.clone(), repeats_previous: false });
    publishes.push(Publish { channel: Channel::for_agent(agent_id), draft, repeats_previous: true });
}

/// A duration for people: `850ms`, `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub(crate) fn human_duration(delta: TimeDelta) -> String {
    let ms = delta.num_milliseconds().max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::probe::Level;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid timestamp")
    }

    fn id(s: &str) -> AgentId {
        AgentId::parse(s).expect("valid agent id")
    }

    fn check(name: &str, level: Level, status: CheckStatus) -> CheckResult {
        CheckResult {
            name: name.into(),
            level,
            status,
            message: Some(format!("{name} is {status:?}")),
            metrics: Default::default(),
        }
    }

    fn report(report_id: &str, checks: Vec<CheckResult>) -> Report {
        Report { report_id: report_id.into(), agent_id: id("web-1"), ts: at("2020-01-01T00:00:00Z"), checks }
    }

    fn types(publishes: &[Publish]) -> Vec<(String, String)> {
        publishes.iter().map(|p| (p.draft.event_type.to_string(), p.channel.to_string())).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn first_report_brings_the_agent_online_and_opens_l3_alerts() {
        let now = at("2026-11-22T10:00:00.123Z");
        let report = report(
            "r-1",
            vec![
                check("disk", Level::L3, CheckStatus::Fail),
                check("load", Level::L2, CheckStatus::Fail),
                check("disk", Level::L3, CheckStatus::Fail),
            ],
        );
        let plan = plan_report(None, &HashMap::new(), &report, now, Some("t".into())).expect("plan");
        assert_eq!(plan.state.status, AgentStatus::Online);
        assert_eq!(plan.state.health, HealthStatus::Critical);
        // Pulse's clock, not the report's.
        assert_eq!(plan.state.last_seen, now);
        assert_eq!(plan.opened.len(), 1, "one alert per check name, L3 only");
        assert_eq!(plan.opened[0].alert_id, "web-1:disk:1795341600123");
        assert_eq!(
            types(&plan.publishes),
            pairs(&[
                ("agent_status_changed", "agents"),
                ("agent_status_changed", "agent:web-1"),
                ("report_received", "reports"),
                ("report_received", "agent:web-1"),
                ("alert_triggered", "alerts"),
                ("alert_triggered", "agent:web-1"),
            ])
        );
        assert!(plan.publishes.iter().all(|p| p.draft.trace.as_deref() == Some("t") && p.draft.ts == now));
        let change: AgentStatusChange = serde_json::from_value(plan.publishes[0].draft.data.clone()).expect("change");
        assert_eq!((change.old_status, change.new_status), (AgentStatus::Offline, AgentStatus::Online));
        assert_eq!(change.message, "first report");
    }

    #[test]
    fn open_alerts_are_kept_while_failing_and_resolved_by_ok_only() {
        let now = at("2026-11-22T10:00:00Z");
        let prev = plan_report(
            None,
            &HashMap::new(),
            &report("r-1", vec![check("disk", Level::L3, CheckStatus::Fail)]),
            now,
            None,
        )
        .expect("plan")
        .state;
        let open_alert = plan_report(
            None,
            &HashMap::new(),
            &report("r-1", vec![check("disk", Level::L3, CheckStatus::Fail)]),
            now,
            None,
        )
        .expect("plan")
        .opened
        .remove(0);
        let open = HashMap::from([("disk".to_string(), open_alert.clone())]);

        let still_failing = report("r-2", vec![check("disk", Level::L3, CheckStatus::Fail)]);
        let plan = plan_report(Some(&prev), &open, &still_failing, now, None).expect("plan");
        assert!(plan.opened.is_empty() && plan.resolved.is_empty());
        assert_eq!(
            types(&plan.publishes),
            pairs(&[("report_received", "reports"), ("report_received", "agent:web-1")])
        );

        let warn = report("r-3", vec![check("disk", Level::L3, CheckStatus::Warn)]);
        let plan = plan_report(Some(&prev), &open, &warn, now, None).expect("plan");
        assert!(plan.resolved.is_empty(), "warn does not resolve");

        let later = at("2026-11-22T10:05:00Z");
        let ok = report("r-4", vec![check("disk", Level::L3, CheckStatus::Ok)]);
        let plan = plan_report(Some(&prev), &open, &ok, later, None).expect("plan");
        assert_eq!(plan.resolved.len(), 1);
        let resolved = &plan.resolved[0];
        assert_eq!(resolved.alert_id, open_alert.alert_id);
        assert_eq!((resolved.state, resolved.resolved_at), (AlertState::Resolved, Some(later)));
        assert_eq!(plan.state.health, HealthStatus::Healthy);
        assert_eq!(
            types(&plan.publishes)[2..],
            pairs(&[("alert_resolved", "alerts"), ("alert_resolved", "agent:web-1")])
        );
    }

    #[test]
    fn heartbeats_keep_the_latest_time_and_never_a_future_one() {
        let now = at("2026-11-22T10:00:00Z");
        let agent = id("web-1");
        let plan = plan_heartbeat(None, &agent, at("2026-11-22T11:00:00Z"), now, None).expect("plan");
        assert_eq!(plan.state.last_seen, now, "a future heartbeat counts as now");
        assert_eq!(plan.state.health, HealthStatus::Unknown);
        assert_eq!(plan.publishes.len(), 2, "first sight is announced");

        let plan2 = plan_heartbeat(Some(&plan.state), &agent, at("2026-11-22T09:00:00Z"), now, None).expect("plan");
        assert_eq!(plan2.state.last_seen, now, "an older heartbeat does not move last_seen back");
        assert!(plan2.publishes.is_empty(), "online stays online silently");
    }

    #[test]
    fn offline_and_back_restores_health_from_the_latest_checks() {
        let t0 = at("2026-11-22T10:00:00Z");
        let report = report("r-1", vec![check("disk", Level::L2, CheckStatus::Warn)]);
        let online = plan_report(None, &HashMap::new(), &report, t0, None).expect("plan").state;
        let t1 = at("2026-11-22T10:05:03Z");
        let offline = plan_offline(&online, t1).expect("plan").expect("online agents go offline");
        assert_eq!((offline.state.status, offline.state.health), (AgentStatus::Offline, HealthStatus::Unknown));
        assert_eq!(offline.change.message, "no report or heartbeat for 5m 3s (last seen 2026-11-22T10:00:00.000Z)");
        assert_eq!(offline.draft.event_type.as_str(), "agent_status_changed");
        assert!(plan_offline(&offline.state, t1).expect("plan").is_none(), "offline agents stay as they are");

        let t2 = at("2026-11-22T10:10:00Z");
        let back = plan_heartbeat(Some(&offline.state), &online.agent_id, t2, t2, None).expect("plan");
        assert_eq!((back.state.status, back.state.health), (AgentStatus::Online, HealthStatus::Degraded));
        let change: AgentStatusChange = serde_json::from_value(back.publishes[0].draft.data.clone()).expect("change");
        assert_eq!(change.message, "heartbeat after 10m 0s of silence (last seen 2026-11-22T10:00:00.000Z)");
    }

    #[test]
    fn durations_read_well() {
        for (ms, text) in [
            (850, "850ms"),
            (42_000, "42s"),
            (303_000, "5m 3s"),
            (7_800_000, "2h 10m"),
            (273_600_000, "3d 4h"),
            (-5, "0ms"),
        ] {
            assert_eq!(human_duration(TimeDelta::milliseconds(ms)), text);
        }
    }
}
