//! Adaptive concurrency: a `scale` strategy in `mode: adaptive` runs all the time its stages run,
//! so instead of acting on a match the healer installs its AIMD controller on each covered stage
//! as each run starts, and keeps it in step with the healing mode on every evaluation tick.

use std::cmp::Reverse;
use std::sync::Arc;

use super::AutoHealer;
use crate::event::{ActionKind, HealingRecord, Outcome, TriggerKind, TriggerMatch};
use crate::healing::strategy::{HealingStrategy, Mode};
use crate::pipeline::RunScope;

impl AutoHealer {
    /// Gives every stage of `scope` an adaptive `scale` strategy covers its AIMD controller (the
    /// first such strategy's, in priority order), and takes it from the others; in manual mode
    /// or for a dry run, takes it away and records `would-have`. Runs as each run starts
    /// (`starting`: every covered stage recorded) and on each evaluation tick, so that
    /// `healing disable|enable|configure` reach a running controller (recorded when it
    /// changes).
    pub(super) fn install_adaptive(&self, scope: &RunScope, starting: bool) {
        let mut strategies: Vec<Arc<HealingStrategy>> = self
            .strategies()
            .into_iter()
            .filter(|s| s.enabled && s.action.adaptive_concurrency().is_some())
            .collect();
        strategies.sort_by_key(|s| Reverse(s.priority));
        let mut records = Vec::new();
        for control in &scope.controls {
            let stage = control.stage_name();
            let found = strategies.iter().find_map(|s| {
                let settings = s.action.adaptive_concurrency()?;
                s.covers(stage).then_some((s, settings))
            });
            let Some((strategy, settings)) = found else {
                let _ = control.set_adaptive(None);
                continue;
            };
            let acts = self.is_enabled() && strategy.mode == Mode::Act;
            let wanted = acts.then_some(settings);
            let (outcome, detail) = match control.set_adaptive(wanted) {
                Ok(false) if !starting => continue,
                Ok(_) if acts => (
                    Outcome::Succeeded,
                    format!(
                        "adaptive concurrency (AIMD on latency) within {}..={}, from {}",
                        settings.min,
                        settings.max,
                        control.concurrency()
                    ),
                ),
                Ok(_) => (
                    Outcome::WouldHave,
                    format!(
                        "would run adaptive concurrency within {}..={}; the concurrency stays {}",
                        settings.min,
                        settings.max,
                        control.concurrency()
                    ),
                ),
                Err(e) => (Outcome::Failed, e.to_string()),
            };
            // Recorded, not announced as applied: it heals nothing yet, and its steps are
            // `concurrency-changed` events.
            let trigger = TriggerMatch {
                kind: TriggerKind::Metrics,
                index: 0,
                observed: None,
                description: "the latency of each attempt (mode: adaptive)".to_owned(),
            };
            records.push(
                HealingRecord::new(
                    scope.bus.clock().wall(),
                    Arc::clone(&strategy.name),
                    trigger,
                    ActionKind::Scale,
                    outcome,
                    detail,
                )
                .on(Some(scope.run.clone()), Arc::clone(stage), None),
            );
        }
        self.flush(records, Some(scope));
    }
}
