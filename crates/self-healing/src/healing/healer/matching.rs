//! Matching: which strategies a failed attempt or a running stage matches. Each enabled strategy
//! covering the stage is matched by its first trigger that matches; a trigger that looks back
//! (a rate over time, an anomaly) keeps what it remembers per run, strategy, trigger and stage.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::event::{RunId, TriggerMatch};
use crate::healing::strategy::HealingStrategy;
use crate::healing::trigger::{TriggerContext, TriggerMemory};
use crate::health::CheckStatus;
use crate::metrics::MetricsCollector;
use crate::pipeline::{Failure, StageControl};

/// What is being healed: a stage, and the failed attempt if that is why.
pub(super) struct Target<'a> {
    pub(super) run: Option<RunId>,
    pub(super) stage: Arc<str>,
    pub(super) item: Option<Arc<str>>,
    pub(super) failure: Option<&'a Failure<'a>>,
}

/// A strategy that matched, with the trigger that did.
pub(super) struct Match {
    pub(super) strategy: Arc<HealingStrategy>,
    pub(super) trigger: TriggerMatch,
}

/// What the triggers that look back remember, per (run, strategy, trigger index, stage). Each
/// memory has its own lock, so no lock is held across strategies.
#[derive(Debug, Default)]
pub(super) struct Memories(Mutex<HashMap<MemoryKey, Arc<Mutex<TriggerMemory>>>>);

/// (run, strategy, trigger index, stage).
type MemoryKey = (Option<RunId>, Arc<str>, usize, Arc<str>);

impl Memories {
    fn of(
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
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default(),
        )
    }

    /// Forgets what it kept for a run that ended.
    pub(super) fn forget(&self, run: &RunId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(r, _, _, _), _| r.as_ref() != Some(run));
    }
}

/// What a failed attempt or a running stage is matched against.
pub(super) struct Matching<'a> {
    /// Whether the healer was given a global retry policy (a failure's policy then applies to
    /// `retry` triggers even when the stage has none of its own).
    pub(super) retry_configured: bool,
    pub(super) memories: &'a Memories,
    pub(super) metrics: &'a MetricsCollector,
    pub(super) health: &'a [CheckStatus],
    pub(super) control: Option<&'a Arc<StageControl>>,
}

impl Matching<'_> {
    /// Which of `strategies` match `target`, highest priority first (ties in the order given).
    /// No healer lock is held while triggers run: a custom predicate may call back into the
    /// healer.
    pub(super) fn matches(
        &self,
        strategies: impl IntoIterator<Item = Arc<HealingStrategy>>,
        target: &Target<'_>,
        exhausted: bool,
    ) -> Vec<Match> {
        let now = Instant::now();
        let ctx = TriggerContext {
            stage: &target.stage,
            error: target.failure.map(|f| f.error),
            exhausted,
            metrics: self.metrics,
            running_for: self.control.and_then(|c| c.running_for()),
            health: self.health,
            now,
            retry_policy: target
                .failure
                .filter(|f| self.retry_configured || f.stage_policy)
                .map(|f| f.retry_policy),
        };
        let on_tick = target.failure.is_none();
        let mut found = Vec::new();
        for strategy in strategies
            .into_iter()
            .filter(|s| s.enabled && s.covers(&target.stage))
        {
            // Retry needs failed work that is not given up on yet.
            let action = &strategy.action;
            if action.needs_fresh_failure() && (on_tick || exhausted) {
                continue;
            }
            for (index, trigger) in strategy.triggers.iter().enumerate() {
                let observed = if trigger.uses_memory() {
                    let memory = self.memories.of(target, &strategy.name, index);
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
}
