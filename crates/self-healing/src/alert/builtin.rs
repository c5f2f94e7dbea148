//! The alerts the engine raises about runs and checks by itself, on by default, and the
//! runbooks alerts carry: where a person finds what to do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Alert;
use crate::error::Severity;

/// A run ended failed or rolled back; resolved by the project's next successful run.
pub const RUN_FAILED: &str = "run-failed";
/// A run's process died, or its lease expired, before it finished; resolved by a resume or
/// a later success.
pub const RUN_LOST: &str = "run-lost";
/// No attempt of a run finished for a while though work remains; resolved when one does.
pub const RUN_STUCK: &str = "run-stuck";
/// A health check stayed unhealthy for a while; resolved when it is healthy again.
pub const CHECK_DOWN: &str = "check-down";

/// The runbook text shipped for the built-in and healing alerts (`docs/RUNBOOKS.md`): a
/// section per alert, whose "What to do:" line an alert that has no runbook of its own carries.
const RUNBOOKS: &str = include_str!("../../../../docs/RUNBOOKS.md");

/// What to do about the alert `name`, from the shipped runbooks, if they have a section for it.
///
/// ```
/// use self_healing::alert::{RUN_FAILED, what_to_do};
/// assert!(what_to_do(RUN_FAILED).unwrap().contains("logs"));
/// assert_eq!(what_to_do("errorRate"), None);
/// ```
pub fn what_to_do(name: &str) -> Option<&'static str> {
    let heading = format!("## `{name}`");
    let section = RUNBOOKS.split("\n## ").find_map(|s| {
        let s = s.strip_prefix("## ").unwrap_or(s);
        (format!("## {}", s.lines().next()?.trim()) == heading).then_some(s)
    })?;
    let line = section
        .lines()
        .find_map(|l| l.strip_prefix("What to do: "))?;
    Some(line.trim())
}

/// One built-in alert's settings (`alerts.builtin.runFailed` … in files).
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinAlert {
    /// Whether it is raised at all.
    pub enabled: bool,
    /// The severity it fires at.
    pub severity: Severity,
    /// How long its condition must last first (`run-stuck`'s `after`, `check-down`'s `for`);
    /// zero for the others.
    pub after: Duration,
}

impl BuiltinAlert {
    const fn on(severity: Severity, after: Duration) -> Self {
        BuiltinAlert {
            enabled: true,
            severity,
            after,
        }
    }
}

/// The built-in alerts' settings; all on by default.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinAlerts {
    /// `run-failed`: critical.
    pub run_failed: BuiltinAlert,
    /// `run-lost`: critical.
    pub run_lost: BuiltinAlert,
    /// `run-stuck`: a warning after 30 minutes without an attempt finishing.
    pub run_stuck: BuiltinAlert,
    /// `check-down`: a warning after 5 minutes unhealthy.
    pub check_down: BuiltinAlert,
}

impl Default for BuiltinAlerts {
    fn default() -> Self {
        BuiltinAlerts {
            run_failed: BuiltinAlert::on(Severity::Critical, Duration::ZERO),
            run_lost: BuiltinAlert::on(Severity::Critical, Duration::ZERO),
            run_stuck: BuiltinAlert::on(Severity::Warning, Duration::from_secs(30 * 60)),
            check_down: BuiltinAlert::on(Severity::Warning, Duration::from_secs(5 * 60)),
        }
    }
}

/// Which runbook an alert carries: the one given for its name (a threshold's metric, a
/// built-in or healing alert, a `notify` strategy), else the one of the strategy that raised
/// it, else the project's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runbooks {
    /// The project's (`alerts.runbook`).
    pub default: Option<Arc<str>>,
    /// By alert name.
    pub by_name: HashMap<Arc<str>, Arc<str>>,
    /// By the strategy that raised the alert.
    pub by_strategy: HashMap<Arc<str>, Arc<str>>,
}

impl Runbooks {
    /// `alert`'s runbook, unless it has one already.
    pub fn attach(&self, alert: &mut Alert) {
        if alert.runbook.is_some() {
            return;
        }
        alert.runbook = self
            .by_name
            .get(&alert.name)
            .or_else(|| {
                alert
                    .strategy
                    .as_ref()
                    .and_then(|s| self.by_strategy.get(s))
            })
            .or(self.default.as_ref())
            .cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{
        BREAKER_OPEN, HEALING_BUDGET, RESTART_LIMIT, RETRIES_EXHAUSTED_ALERT, ROLLBACK,
    };

    #[test]
    fn every_alert_the_engine_raises_has_a_runbook_section() {
        for name in [
            RUN_FAILED,
            RUN_LOST,
            RUN_STUCK,
            CHECK_DOWN,
            ROLLBACK,
            RETRIES_EXHAUSTED_ALERT,
            RESTART_LIMIT,
            BREAKER_OPEN,
            HEALING_BUDGET,
        ] {
            let text = what_to_do(name).unwrap_or_else(|| panic!("no runbook for `{name}`"));
            assert!(text.len() > 40, "`{name}`: {text}");
        }
    }

    #[test]
    fn an_alert_takes_its_names_runbook_then_its_strategys_then_the_projects() {
        let runbooks = Runbooks {
            default: Some("https://wiki/p".into()),
            by_name: HashMap::from([("errorRate".into(), "https://wiki/errors".into())]),
            by_strategy: HashMap::from([("retry-db".into(), "https://wiki/db".into())]),
        };
        let mut threshold = Alert::firing(Severity::Warning, "p", "errorRate", "t");
        runbooks.attach(&mut threshold);
        assert_eq!(threshold.runbook.as_deref(), Some("https://wiki/errors"));
        let mut exhausted = Alert::firing(Severity::Warning, "p", RETRIES_EXHAUSTED_ALERT, "t");
        exhausted.strategy = Some("retry-db".into());
        runbooks.attach(&mut exhausted);
        assert_eq!(exhausted.runbook.as_deref(), Some("https://wiki/db"));
        let mut failed = Alert::firing(Severity::Critical, "p", RUN_FAILED, "t");
        runbooks.attach(&mut failed);
        assert_eq!(failed.runbook.as_deref(), Some("https://wiki/p"));
        let mut own = Alert::firing(Severity::Critical, "p", RUN_FAILED, "t");
        own.runbook = Some("https://wiki/own".into());
        runbooks.attach(&mut own);
        assert_eq!(own.runbook.as_deref(), Some("https://wiki/own"));
    }
}
