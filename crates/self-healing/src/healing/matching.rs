//! Matching: which strategies a failed attempt or a running stage matches. Each enabled strategy
//! covering the stage is matched by its first trigger that matches; a trigger that looks back
//! (a rate over time, an anomaly) keeps what it remembers per run, strategy, trigger and stage.

use std::cmp::Reverse;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::AutoHealer;
use super::healer::Target;
use super::strategy::HealingStrategy;
use super::trigger::{TriggerContext, TriggerMemory};
use crate::event::{RunId, TriggerMatch};
use crate::health::CheckStatus;
use crate::metrics::MetricsCollector;
use crate::pipeline::StageControl;

/// (run, strategy, trigger index, stage).
pub(super) type MemoryKey = (Option<RunId>, Arc<str>, usize, Arc<str>);

/// A strategy that matched, with the trigger that did.
pub(super) struct Match {
    pub(super) strategy: Arc<HealingStrategy>,
    pub(super) trigger: TriggerMatch,
}

impl AutoHealer {
    /// The strategies matching `target`, highest priority first (ties in declaration order).
    /// No healer lock is held while triggers run: a custom predicate may call back into the
    /// healer.
    pub(super) fn matches(
        &self,
        target: &Target<'_>,
        exhausted: bool,
        metrics: &MetricsCollector,
        health: &[CheckStatus],
        control: Option<&Arc<StageControl>>,
    ) -> Vec<Match> {
        let now = Instant::now();
        let ctx = TriggerContext {
            stage: &target.stage,
            error: target.failure.map(|f| f.error),
            exhausted,
            metrics,
            running_for: control.and_then(|c| c.running_for()),
            health,
            now,
            retry_policy: target
                .failure
                .filter(|f| self.inner.retry_configured || f.stage_policy)
                .map(|f| f.retry_policy),
        };
        let on_tick = target.failure.is_none();
        let mut found = Vec::new();
        let candidates = self
            .strategies()
            .into_iter()
            .chain(std::iter::once(Arc::clone(&self.inner.implicit_retry)));
        for strategy in candidates.filter(|s| s.enabled && s.covers(&target.stage)) {
            // Retry needs failed work that is not given up on yet.
            let action = &strategy.action;
            if action.needs_fresh_failure() && (on_tick || exhausted) {
                continue;
            }
            for (index, trigger) in strategy.triggers.iter().enumerate() {
                let observed = if trigger.uses_memory() {
                    let memory = self.memory_of(target, &strategy.name, index);
                    let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                    trigger.evaluate(&ctx, &mut memory)
                } else {
                    trigger.evaluate(&ctx, &mut TriggerMemory::default())
                };
                if let Some(observed) = observed {
                    found.push(Match {
                        trigger: TriggerMatch {
                            kind: trigger.kind(),
                            index,
                            observed: observed.value,
                            description: observed.description,
                        },
                        strategy: Arc::clone(&strategy),
                    });
                    break;
                }
            }
        }
        found.sort_by_key(|m| Reverse(m.strategy.priority));
        found
    }

    fn memory_of(
        &self,
        target: &Target<'_>,
        strategy: &Arc<str>,
        index: usize,
    ) -> Arc<Mutex<TriggerMemory>> {
        let key = (
            target.run.clone(),
            Arc::clone(strategy),
            index,
            Arc::clone(&target.stage),
        );
        Arc::clone(
            self.inner
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default(),
        )
    }

    /// Forgets what it kept for a run that ended.
    pub(super) fn forget(&self, run: &RunId) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(r, _, _, _), _| r.as_ref() != Some(run));
    }
}
