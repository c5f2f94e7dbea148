//! `dependsOn` holds: while a health check a stage depends on is unhealthy, the stage starts no
//! new attempt, in every run the healer heals; it resumes at once when the check is healthy (or
//! degraded) again. The healer holds and releases on each change a watched monitor reports, and
//! as each run starts.

use std::sync::Arc;

use super::AutoHealer;
use crate::event::{ActionKind, HealingRecord, HealthStatus, Outcome, TriggerKind, TriggerMatch};
use crate::health::{CheckStatus, HealthMonitor};
use crate::pipeline::RunScope;

/// The strategy name a stage's `dependsOn` holds and releases its work under, in the history.
pub const DEPENDS_ON: &str = "dependsOn";

impl AutoHealer {
    /// Reads `monitor`'s checks for `health-check` triggers and
    /// [`TriggerContext::health`](crate::healing::TriggerContext::health). The monitor stays the
    /// one source of their status.
    ///
    /// Its checks also gate the stages that depend on them (`dependsOn`): while one is
    /// unhealthy, the stages of the runs this healer heals start no new attempt, and resume at
    /// once when it is healthy (or degraded) again. Each hold and release is recorded in the
    /// history under [`DEPENDS_ON`], whatever the healing mode: a dependency the stage declares
    /// is not a remedy to leave to people.
    pub fn watch(&self, monitor: &HealthMonitor) {
        self.inner
            .monitors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(monitor.clone());
        let healer = Arc::downgrade(&self.inner);
        monitor.on_health_changed(move |change| {
            if let Some(inner) = healer.upgrade() {
                AutoHealer { inner }.update_holds(Some(&change.check));
            }
        });
    }

    /// Holds or releases, in every run it heals, the stages that depend on `check` (or on any
    /// check), from the monitors' status now. One lock serializes it, and the status is read
    /// under it, so a change and a run starting at once cannot leave a stage held by a status
    /// that is gone.
    pub(super) fn update_holds(&self, check: Option<&str>) {
        let _one_at_a_time = self.inner.gating.lock().unwrap_or_else(|e| e.into_inner());
        let statuses: Vec<CheckStatus> = self
            .health()
            .into_iter()
            .filter(|s| check.is_none_or(|c| *s.check == *c))
            .collect();
        for scope in &self.scopes() {
            for status in &statuses {
                self.update_holds_in(scope, &status.check, status.status);
            }
        }
    }

    /// Holds (`status` unhealthy) or releases the stages of `scope` that depend on `check`,
    /// each decision recorded before it acts.
    fn update_holds_in(&self, scope: &RunScope, check: &Arc<str>, status: HealthStatus) {
        let down = status == HealthStatus::Unhealthy;
        for control in scope.controls.iter() {
            if !control.depends_on().contains(check) {
                continue;
            }
            let mut held_by = control.held_by();
            if held_by.contains(check) == down {
                continue;
            }
            if down {
                held_by.push(Arc::clone(check));
            } else {
                held_by.retain(|c| c != check);
            }
            let detail = match (down, held_by.as_slice()) {
                (true, _) => format!("new attempts wait: `{check}` is unhealthy"),
                (false, []) => format!("work resumed: `{check}` is {status}"),
                (false, rest) => format!(
                    "`{check}` is {status}; still held by {}",
                    rest.iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let trigger = TriggerMatch {
                kind: TriggerKind::HealthCheck,
                index: 0,
                observed: None,
                description: format!("check `{check}` is {status}"),
            };
            let record = HealingRecord::new(
                scope.bus.clock().wall(),
                DEPENDS_ON.into(),
                trigger,
                ActionKind::Hold,
                Outcome::Succeeded,
                detail.clone(),
            )
            .on(
                Some(scope.run.clone()),
                Arc::clone(control.stage_name()),
                None,
            );
            self.flush(vec![record], Some(scope));
            control.set_dependency_down(check, down);
            if down {
                control.applied(ActionKind::Hold, None, detail);
            }
        }
    }
}
