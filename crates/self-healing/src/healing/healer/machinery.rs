//! What a stage's own machinery changed by itself, in the history beside what the healer
//! decides: a breaker opened, half-opened or closed by its rules and timer (under the
//! breaker's name), and the adaptive controller's moves of a stage's concurrency (under the
//! adaptive strategy's name, at most one record per stage every [`ADAPTED_EVERY`], each
//! summing the moves since the last).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::AutoHealer;
use crate::event::{ActionKind, HealingRecord, Outcome, RunId, TriggerKind, TriggerMatch};
use crate::pipeline::{RunScope, StageChange};
use crate::resilience::{BreakerSettings, BreakerState, Transition, WindowStats};

/// The least time between two records of one stage's adaptive concurrency.
pub const ADAPTED_EVERY: Duration = Duration::from_secs(30);

/// The adaptive controller's moves since a stage's last record, per run and stage.
#[derive(Debug, Default)]
pub(super) struct Adapted(Mutex<HashMap<(RunId, Arc<str>), Moves>>);

#[derive(Debug)]
struct Moves {
    /// When the last record was made (the moves since then are in `from`, `to`, `steps`).
    recorded: Instant,
    /// The limit before the first move not yet recorded.
    from: usize,
    /// The limit after the last.
    to: usize,
    /// How many moves since the last record.
    steps: u32,
}

impl AutoHealer {
    /// Records what a stage changed by itself ([`Supervisor::stage_changed`](crate::pipeline::Supervisor::stage_changed)).
    pub(super) fn machinery_changed(
        &self,
        run: Option<&RunId>,
        stage: &Arc<str>,
        change: &StageChange,
    ) {
        let scope = run.and_then(|run| self.scope(run));
        match change {
            StageChange::Breaker {
                name,
                transition,
                window,
                settings,
            } => {
                let place = Place {
                    scope: scope.as_ref(),
                    run,
                    stage,
                };
                let record = self.record(
                    place,
                    Arc::clone(name),
                    ActionKind::CircuitBreak,
                    breaker_trigger(*transition, *window, settings),
                    breaker_detail(*transition, *window, settings),
                );
                self.flush(vec![record], scope.as_ref());
            }
            StageChange::Adapted { from, to } => {
                let Some(run) = run else { return };
                let now = Instant::now();
                let due = {
                    let mut adapted = self
                        .inner
                        .adapted
                        .0
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let moves = adapted
                        .entry((run.clone(), Arc::clone(stage)))
                        .or_insert(Moves {
                            // Never recorded: the first move is recorded at once.
                            recorded: now.checked_sub(ADAPTED_EVERY).unwrap_or(now),
                            from: *from,
                            to: *from,
                            steps: 0,
                        });
                    if moves.steps == 0 {
                        moves.from = *from;
                    }
                    moves.to = *to;
                    moves.steps += 1;
                    (now.duration_since(moves.recorded) >= ADAPTED_EVERY).then(|| take(moves, now))
                };
                if let Some((from, to, steps)) = due {
                    self.record_adapted(scope.as_ref(), run, stage, from, to, steps);
                }
            }
        }
    }

    /// Records the adaptive moves of `scope`'s run left unrecorded for [`ADAPTED_EVERY`]:
    /// called on each evaluation tick, so the last moves of a quiet spell are not lost.
    pub(super) fn flush_adapted(&self, scope: &RunScope) {
        let now = Instant::now();
        let due: Vec<(Arc<str>, (usize, usize, u32))> = {
            let mut adapted = self
                .inner
                .adapted
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            adapted
                .iter_mut()
                .filter(|((run, _), moves)| {
                    *run == scope.run
                        && moves.steps > 0
                        && now.duration_since(moves.recorded) >= ADAPTED_EVERY
                })
                .map(|((_, stage), moves)| (Arc::clone(stage), take(moves, now)))
                .collect()
        };
        for (stage, (from, to, steps)) in due {
            self.record_adapted(Some(scope), &scope.run, &stage, from, to, steps);
        }
    }

    /// Records the moves of a run that ends not recorded yet, and forgets the run.
    pub(super) fn finish_adapted(&self, run: &RunId, scope: Option<&RunScope>) {
        let left: Vec<(Arc<str>, (usize, usize, u32))> = {
            let mut adapted = self
                .inner
                .adapted
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let left = adapted
                .iter_mut()
                .filter(|((r, _), moves)| r == run && moves.steps > 0)
                .map(|((_, stage), moves)| (Arc::clone(stage), take(moves, now)))
                .collect();
            adapted.retain(|(r, _), _| r != run);
            left
        };
        for (stage, (from, to, steps)) in left {
            self.record_adapted(scope, run, &stage, from, to, steps);
        }
    }

    fn record_adapted(
        &self,
        scope: Option<&RunScope>,
        run: &RunId,
        stage: &Arc<str>,
        from: usize,
        to: usize,
        steps: u32,
    ) {
        let strategy = self
            .strategies()
            .into_iter()
            .find(|s| s.enabled && s.covers(stage) && s.action.adaptive_concurrency().is_some())
            .map_or_else(|| Arc::from("adaptive"), |s| Arc::clone(&s.name));
        let trigger = TriggerMatch {
            kind: TriggerKind::Metrics,
            index: 0,
            observed: None,
            description: "the latency of each attempt (mode: adaptive)".to_owned(),
        };
        let how = if to < from {
            "cut: answers slowed past the tolerance, or an attempt timed out"
        } else {
            "raised: answers kept within the tolerance while the limit was in use"
        };
        let detail = match steps {
            1 => format!("concurrency {from} → {to} ({how})"),
            n => format!("concurrency {from} → {to} in {n} steps ({how})"),
        };
        let place = Place {
            scope,
            run: Some(run),
            stage,
        };
        let record = self.record(place, strategy, ActionKind::Scale, trigger, detail);
        self.flush(vec![record], scope);
    }

    /// A record of something the stage did by itself: it succeeded, whatever the healing mode.
    fn record(
        &self,
        place: Place<'_>,
        strategy: Arc<str>,
        action: ActionKind,
        trigger: TriggerMatch,
        detail: String,
    ) -> HealingRecord {
        HealingRecord::new(
            self.now_wall(place.scope),
            strategy,
            trigger,
            action,
            Outcome::Succeeded,
            detail,
        )
        .on(place.run.cloned(), Arc::clone(place.stage), None)
    }
}

/// Where a record is about: its run (with its scope, while the healer heals it) and stage.
#[derive(Clone, Copy)]
struct Place<'a> {
    scope: Option<&'a RunScope>,
    run: Option<&'a RunId>,
    stage: &'a Arc<str>,
}

/// The moves since the last record, which is now.
fn take(moves: &mut Moves, now: Instant) -> (usize, usize, u32) {
    let taken = (moves.from, moves.to, moves.steps);
    moves.recorded = now;
    moves.from = moves.to;
    moves.steps = 0;
    taken
}

/// What the breaker went by: its window's rate when it opened on one, else its rules.
fn breaker_trigger(
    transition: Transition,
    window: WindowStats,
    settings: &BreakerSettings,
) -> TriggerMatch {
    let rate = (window.calls > 0).then(|| window.failures as f64 / window.calls as f64);
    TriggerMatch {
        kind: TriggerKind::Breaker,
        index: 0,
        observed: rate.filter(|_| {
            let rated = settings.failure_rate_threshold.is_some()
                || settings.slow_call_rate_threshold.is_some();
            rated && transition.to == BreakerState::Open
        }),
        description: "the breaker's own rules: failures, rates, its break and its probes"
            .to_owned(),
    }
}

/// What the breaker did, and why.
fn breaker_detail(
    transition: Transition,
    window: WindowStats,
    settings: &BreakerSettings,
) -> String {
    let percent = |count: u64| count as f64 * 100.0 / window.calls.max(1) as f64;
    match (transition.from, transition.to) {
        (BreakerState::Closed, BreakerState::Open) => {
            let failed_rate = settings
                .failure_rate_threshold
                .filter(|t| window.calls > 0 && percent(window.failures) >= f64::from(*t));
            let slow_rate = settings
                .slow_call_rate_threshold
                .filter(|t| window.calls > 0 && percent(window.slow) >= f64::from(*t));
            if let Some(threshold) = failed_rate {
                format!(
                    "opened: {} of {} calls failed ({:.0}%, threshold {threshold}%)",
                    window.failures,
                    window.calls,
                    percent(window.failures)
                )
            } else if let Some(threshold) = slow_rate {
                format!(
                    "opened: {} of {} calls were slow ({:.0}%, threshold {threshold}%)",
                    window.slow,
                    window.calls,
                    percent(window.slow)
                )
            } else {
                match settings.failure_threshold {
                    Some(n) => format!("opened: {n} calls failed in a row"),
                    None => "opened".to_owned(),
                }
            }
        }
        (BreakerState::HalfOpen, BreakerState::Open) => {
            "opened again: a probe failed (or was slow)".to_owned()
        }
        (_, BreakerState::HalfOpen) => format!(
            "half-open after its {:?} break: {} probe(s) may pass",
            settings.break_duration, settings.half_open_requests
        ),
        (_, BreakerState::Closed) => {
            format!("closed: {} probe(s) succeeded", settings.success_threshold)
        }
        (from, to) => format!("{from:?} → {to:?}"),
    }
}
