//! The alerts derived from a run's events: the healing alerts (what fires them and what
//! resolves them) and the built-in `run-failed`, `run-stuck` and `check-down`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Alert, Alerting, CHECK_DOWN, RUN_FAILED, RUN_STUCK};
use crate::clock::Clock;
use crate::error::CODE_RESTART_LIMIT;
use crate::error::Severity;
use crate::event::{
    ActionKind, Event, EventBus, EventKind, HealthStatus, Outcome, RESTART_LIMIT_REACHED,
    RETRIES_EXHAUSTED, RunId, RunStatus,
};
use crate::health::CheckStatus;
use crate::metrics::MetricsCollector;
use crate::resilience::BreakerState;

/// The alert a rollback raises; resolved when the stage or a later run succeeds.
pub const ROLLBACK: &str = "rollback";
/// The alert a retry strategy that spent its attempts raises.
pub const RETRIES_EXHAUSTED_ALERT: &str = "retries-exhausted";
/// The alert a restart refused by its limit raises.
pub const RESTART_LIMIT: &str = "restart-limit";
/// The alert an opened circuit breaker raises; resolved when it closes.
pub const BREAKER_OPEN: &str = "circuit-breaker-open";
/// The alert a spent healing budget raises; resolved when the run succeeds.
pub const HEALING_BUDGET: &str = "healing-budget";

/// The events a watcher follows. Not successful attempts, a run's bulk: it reads when the
/// latest ended from the run's metrics when it must ([`Watch::caught_up`]), and follows them
/// only while `run-stuck` fires, to resolve it at the next.
fn wanted(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::RollbackStarted { .. }
            | EventKind::HealingDecision { .. }
            | EventKind::StageFailed { .. }
            | EventKind::BreakerChanged { .. }
            | EventKind::StageSucceeded { .. }
            | EventKind::RunFinished { .. }
            | EventKind::AttemptFailed { .. }
            | EventKind::HealthChanged { .. }
    )
}

/// What a run's watch starts from, asked once it follows the bus so that no change falls
/// between the two.
#[derive(Debug, Clone, Default)]
pub struct WatchStart {
    /// The checks unhealthy now, with their stages and since when.
    pub unhealthy: Vec<CheckStatus>,
    /// The metrics with thresholds: their alerts are resolved by their own evaluation (the
    /// metric back below its level), not by a stage's or the run's success.
    pub thresholds: Vec<Arc<str>>,
}

/// What a run's watcher waits for: the run to make progress, checks to recover.
struct Watch {
    project: Arc<str>,
    run: RunId,
    thresholds: Vec<Arc<str>>,
    /// When an attempt last finished (or the run started), as far as the watcher knows.
    progress: Instant,
    /// The run's counts, with when its latest successful attempt ended.
    metrics: MetricsCollector,
    /// The bus's clock, which stamped that time.
    clock: Arc<dyn Clock>,
    /// Whether `run-stuck` fires.
    stuck: bool,
    /// The checks unhealthy now, by name.
    down: HashMap<Arc<str>, Down>,
}

impl Watch {
    /// Moves `progress` up to the latest successful attempt's end; whether it moved.
    fn caught_up(&mut self) -> bool {
        let Some(at) = self.metrics.last_success() else {
            return false;
        };
        // One reading of the time for both clocks (`Clock::wall_at`).
        let now = Instant::now();
        let ago = self
            .clock
            .wall_at(now)
            .duration_since(at)
            .unwrap_or_default();
        match now.checked_sub(ago) {
            Some(ended) if ended > self.progress => {
                self.progress = ended;
                true
            }
            _ => false,
        }
    }
}

/// How often a firing `run-stuck` looks at the run's metrics besides following its successes.
const STUCK_RELOOK: std::time::Duration = std::time::Duration::from_secs(5);

fn attempt_succeeded(kind: &EventKind) -> bool {
    matches!(kind, EventKind::AttemptSucceeded { .. })
}

/// A check unhealthy now.
struct Down {
    stage: Option<Arc<str>>,
    since: Instant,
    /// Whether `check-down` fired about it.
    fired: bool,
}

impl Alerting {
    /// Follows `bus` for the run `run` until it finishes, raising `project`'s healing alerts:
    /// `rollback` (critical), `retries-exhausted`, `restart-limit` and `circuit-breaker-open`
    /// (warnings), each on its stage. A stage that succeeds resolves its alerts; a run that
    /// succeeds resolves every alert of the project, those earlier runs left firing included,
    /// but what ends by itself: a breaker's (its closing resolves it), a check's (its recovery
    /// does) and a threshold's (its metric falling back does).
    ///
    /// Besides, as [`builtins`](Self::builtins) set: `run-failed` when the run ends failed or
    /// rolled back; `run-stuck` when no attempt finished for `after` while it runs, resolved
    /// when one does; `check-down` when a health check stays unhealthy for `after`, resolved
    /// when it is not.
    ///
    /// `start` is asked once the watch follows the bus. What earlier runs left firing that no
    /// longer holds is resolved then: a `check-down` whose check is not unhealthy now, and a
    /// `run-stuck` of another run.
    pub fn watch_run(
        &self,
        bus: &EventBus,
        metrics: &MetricsCollector,
        project: &str,
        run: &RunId,
        start: impl FnOnce() -> WatchStart,
    ) {
        let mut events = bus.subscribe_to(wanted);
        let this = self.clone();
        let WatchStart {
            unhealthy,
            thresholds,
        } = start();
        let mut watch = Watch {
            project: project.into(),
            run: run.clone(),
            thresholds,
            progress: Instant::now(),
            metrics: metrics.clone(),
            clock: Arc::clone(bus.clock()),
            stuck: false,
            down: unhealthy
                .into_iter()
                .map(|c| {
                    let down = Down {
                        stage: c.stage,
                        since: c.since,
                        fired: false,
                    };
                    (c.check, down)
                })
                .collect(),
        };
        self.resolve_where(|a| {
            a.project == watch.project
                && match &*a.name {
                    CHECK_DOWN => !a
                        .subject
                        .as_ref()
                        .is_some_and(|check| watch.down.contains_key(check)),
                    RUN_STUCK => a.subject.as_deref() != Some(watch.run.as_str()),
                    _ => false,
                }
        });
        let bus = bus.clone();
        // Counted as busy, so `settle` after a run waits for its end to be handled.
        self.spawn_owing(async move {
            // While `run-stuck` fires: the successful attempts, the next of which resolves it.
            let mut successes = None;
            loop {
                if !watch.stuck {
                    successes = None;
                } else if successes.is_none() {
                    successes = Some(bus.subscribe_to(attempt_succeeded));
                    // One that ended before the subscription counts too.
                    if watch.caught_up() {
                        this.unstuck(&mut watch);
                        continue;
                    }
                }
                let due = this.next_due(&watch);
                let event = tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                    Some(event) = async { successes.as_mut()?.recv().await }, if successes.is_some() => {
                        if event.run.as_ref() == Some(&watch.run) {
                            watch.progress = Instant::now();
                            this.unstuck(&mut watch);
                        }
                        continue;
                    }
                    () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                        this.fire_due(&mut watch);
                        continue;
                    }
                };
                // Health checks watch for every run; the rest is this run's.
                let health = matches!(event.kind, EventKind::HealthChanged { .. });
                if event.run.as_ref() != Some(&watch.run) && !(health && event.run.is_none()) {
                    continue;
                }
                this.on_event(&watch, &event);
                this.on_builtin(&mut watch, &event);
                if matches!(event.kind, EventKind::RunFinished { .. }) {
                    break;
                }
            }
        });
    }

    /// When the watcher must next look without an event: `run-stuck`'s or a `check-down`'s
    /// time, whichever comes first.
    fn next_due(&self, watch: &Watch) -> Option<Instant> {
        let builtins = self.builtins();
        // A wait too long to reckon never comes.
        let stuck = (builtins.run_stuck.enabled && !watch.stuck)
            .then(|| watch.progress.checked_add(builtins.run_stuck.after))
            .flatten();
        let down = builtins
            .check_down
            .enabled
            .then(|| {
                watch
                    .down
                    .values()
                    .filter(|down| !down.fired)
                    .filter_map(|down| down.since.checked_add(builtins.check_down.after))
                    .min()
            })
            .flatten();
        // While it fires, a look now and then too: a success published as the watcher
        // subscribed to them may reach the metrics only after its check.
        let relook = watch.stuck.then(|| Instant::now() + STUCK_RELOOK);
        stuck.into_iter().chain(down).chain(relook).min()
    }

    fn fire_due(&self, watch: &mut Watch) {
        let builtins = self.builtins();
        if watch.stuck && watch.caught_up() {
            self.unstuck(watch);
        }
        let now = Instant::now();
        if builtins.run_stuck.enabled
            && !watch.stuck
            && !watch.caught_up()
            && watch
                .progress
                .checked_add(builtins.run_stuck.after)
                .is_some_and(|due| now >= due)
        {
            watch.stuck = true;
            let after = crate::duration::display(builtins.run_stuck.after);
            let mut alert = Alert::firing(
                builtins.run_stuck.severity,
                Arc::clone(&watch.project),
                RUN_STUCK,
                format!("no attempt of `{}` finished for {after}", watch.project),
            )
            .message(format!(
                "run {} still has work, and no attempt of it finished for {after}",
                watch.run
            ));
            alert.subject = Some(watch.run.as_str().into());
            self.fire(alert);
        }
        if !builtins.check_down.enabled {
            return;
        }
        for (check, down) in &mut watch.down {
            if down.fired
                || down
                    .since
                    .checked_add(builtins.check_down.after)
                    .is_none_or(|due| now < due)
            {
                continue;
            }
            down.fired = true;
            let stage = &down.stage;
            let after = crate::duration::display(builtins.check_down.after);
            let mut alert = Alert::firing(
                builtins.check_down.severity,
                Arc::clone(&watch.project),
                CHECK_DOWN,
                format!("health check `{check}` unhealthy for {after}"),
            )
            .message(match stage {
                Some(stage) => format!(
                    "`{check}` has been unhealthy for {after}; stage `{stage}` waits for it if it depends on it"
                ),
                None => format!("`{check}` has been unhealthy for {after}"),
            });
            alert.stage = stage.clone();
            alert.subject = Some(Arc::clone(check));
            self.fire(alert);
        }
    }

    /// The run made progress: a firing `run-stuck` is resolved.
    fn unstuck(&self, watch: &mut Watch) {
        if std::mem::take(&mut watch.stuck) {
            let print = super::fingerprint(&watch.project, None, RUN_STUCK);
            self.resolve(&format!("{print}/{}", watch.run), None);
        }
    }

    /// The built-in alerts' part of an event.
    fn on_builtin(&self, watch: &mut Watch, event: &Event) {
        let builtins = self.builtins();
        match &event.kind {
            EventKind::AttemptFailed { .. } => {
                watch.progress = Instant::now();
                self.unstuck(watch);
            }
            EventKind::HealthChanged { change } => {
                if change.new_status == HealthStatus::Unhealthy {
                    watch
                        .down
                        .entry(Arc::clone(&change.check))
                        .or_insert_with(|| Down {
                            stage: change.stage.clone(),
                            since: Instant::now(),
                            fired: false,
                        });
                } else if watch
                    .down
                    .remove(&change.check)
                    .is_some_and(|down| down.fired)
                {
                    let check = Arc::clone(&change.check);
                    self.resolve_where(|a| {
                        a.project == watch.project
                            && &*a.name == CHECK_DOWN
                            && a.subject.as_ref() == Some(&check)
                    });
                }
            }
            EventKind::RunFinished { status, error, .. } => {
                self.unstuck(watch);
                let verb = match status {
                    RunStatus::Failed => "failed",
                    RunStatus::RolledBack => "rolled back",
                    RunStatus::Succeeded | RunStatus::Cancelled => return,
                };
                if !builtins.run_failed.enabled {
                    return;
                }
                let why = error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
                self.fire(Alert {
                    starts_at: event.at,
                    ..Alert::firing(
                        builtins.run_failed.severity,
                        Arc::clone(&watch.project),
                        RUN_FAILED,
                        format!("run of `{}` {verb}", watch.project),
                    )
                    .message(format!("run {} {verb}{why}", watch.run))
                });
            }
            _ => {}
        }
    }

    fn on_event(&self, watch: &Watch, event: &Event) {
        let project = &watch.project;
        // What a success does not end: an open breaker (it closes by itself), a check down
        // (it recovers by itself), a threshold (its metric falls back).
        let outlives_success = |a: &Alert| {
            matches!(&*a.name, BREAKER_OPEN | CHECK_DOWN) || watch.thresholds.contains(&a.name)
        };
        let on =
            |name: &str, severity: Severity, stage: &Arc<str>, title: String, message: String| {
                Alert {
                    starts_at: event.at,
                    ..Alert::firing(severity, Arc::clone(project), name, title)
                        .on_stage(Arc::clone(stage))
                        .message(message)
                }
            };
        match &event.kind {
            EventKind::RollbackStarted { stage, error } => {
                self.fire(on(
                    ROLLBACK,
                    Severity::Critical,
                    stage,
                    format!("rolling back after stage `{stage}` failed"),
                    format!("completed work is being compensated: {error}"),
                ));
            }
            EventKind::HealingDecision { record } if record.outcome == Outcome::Failed => {
                let Some(stage) = &record.stage else { return };
                let name = match record.action {
                    ActionKind::Retry if record.detail.starts_with(RETRIES_EXHAUSTED) => {
                        RETRIES_EXHAUSTED_ALERT
                    }
                    ActionKind::Restart if record.detail.starts_with(RESTART_LIMIT_REACHED) => {
                        RESTART_LIMIT
                    }
                    _ => return,
                };
                let mut alert = on(
                    name,
                    Severity::Warning,
                    stage,
                    match name {
                        RETRIES_EXHAUSTED_ALERT => format!("retries exhausted on `{stage}`"),
                        _ => format!("restart limit reached on `{stage}`"),
                    },
                    format!("strategy `{}`: {}", record.strategy, record.detail),
                );
                alert.strategy = Some(Arc::clone(&record.strategy));
                self.fire(alert);
            }
            // The stage's own restart limit, reached without a strategy's.
            EventKind::StageFailed { stage, error, .. }
                if error.code() == Some(CODE_RESTART_LIMIT) =>
            {
                self.fire(on(
                    RESTART_LIMIT,
                    Severity::Warning,
                    stage,
                    format!("restart limit reached on `{stage}`"),
                    error.to_string(),
                ));
            }
            EventKind::BreakerChanged { stage, to, .. } => match to {
                BreakerState::Open | BreakerState::ForcedOpen => {
                    self.fire(on(
                        BREAKER_OPEN,
                        Severity::Warning,
                        stage,
                        format!("circuit breaker open on `{stage}`"),
                        "work on the stage waits until the breaker lets probes through".into(),
                    ));
                }
                BreakerState::Closed | BreakerState::ForcedClosed => {
                    self.resolve(
                        &super::fingerprint(project, Some(stage), BREAKER_OPEN),
                        None,
                    );
                }
                BreakerState::HalfOpen => {}
            },
            EventKind::StageSucceeded { stage, .. } => {
                self.resolve_where(|a| {
                    a.project == *project
                        && a.stage.as_deref() == Some(&**stage)
                        && !outlives_success(a)
                });
            }
            EventKind::RunFinished {
                status: RunStatus::Succeeded,
                ..
            } => {
                self.resolve_where(|a| a.project == *project && !outlives_success(a));
            }
            _ => {}
        }
    }
}
