//! One pass over a stage's units: a worker per place under the concurrency limit, each pulling
//! the next unit from the stage's source and running it to its end, until the source is drained,
//! the stage stops, or a request ends the pass.
//!
//! Workers rather than a task per unit: a unit that finishes at once costs no spawn, no join and
//! no wake-up of the pass, and the pass is woken only to add a worker, lose one, or answer a
//! request. Workers start lazily (one more each time a worker takes a unit while the limit has
//! room), so a stage of three items under a limit of a thousand starts a handful.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cancel::{spawn_until_dropped, unless_cancelled};
use super::control::StageRequest;
use super::run::{Runner, StageEntry, UnitEnd, rollback_requested};
use super::stage::{RestartFrom, Unit};
use crate::error::StageError;
use crate::event::EventKind;

/// How one pass over a stage's units ended.
pub(super) enum PassEnd {
    Done,
    Restart(String),
    Failed(StageError),
    Rollback(StageError),
    Cancelled,
}

/// Items a stage's earlier passes finished, kept when a restart goes on from the unfinished.
pub(super) type Finished = Arc<Mutex<HashSet<Arc<str>>>>;

/// What the workers of one pass share.
struct Pass {
    /// The stage's units; `None` once drained, so a finished stream is not polled again.
    /// (futures' mutex: taking and giving back an uncontended one is an atomic operation each.)
    source: futures_util::lock::Mutex<Option<BoxStream<'static, Result<Unit, StageError>>>>,
    /// Starts nothing new: a unit's failure, a request, or the run's cancellation. What the
    /// pass's attempts are given as their cancellation.
    stop: Arc<CancellationToken>,
    /// Drops work in flight: a restart, or the grace after a stop running out.
    hard: CancellationToken,
    /// The source has no more units.
    drained: AtomicBool,
    /// Workers alive; a worker beyond the concurrency limit leaves before its next unit.
    workers: AtomicUsize,
    /// A worker took a unit while the limit had room for another worker.
    busy: Notify,
    completed: AtomicU64,
    skipped: AtomicU64,
    /// What ended the pass early; the first reason stands.
    end: Mutex<Option<PassEnd>>,
    /// The completed units in the order they completed, when the stage compensates per unit.
    units: Option<Mutex<Vec<Unit>>>,
    /// Items finished by this pass and earlier ones, when a restart keeps them.
    finished: Option<Finished>,
}

impl Pass {
    /// The next unit, waiting for the source; `None` once it is drained. A source that fails
    /// ends the pass, and is not polled again.
    async fn next(&self) -> Option<Unit> {
        let mut source = self.source.lock().await;
        match source.as_mut()?.next().await {
            Some(Ok(unit)) => Some(unit),
            Some(Err(e)) => {
                *source = None;
                self.end_with(PassEnd::Failed(e));
                None
            }
            None => {
                *source = None;
                self.drained.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Ends the pass (the first reason stands) and stops it starting anything new.
    fn end_with(&self, end: PassEnd) {
        self.end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(end);
        self.stop.cancel();
    }

    /// Whether units may still be started: not stopped, not drained.
    fn is_open(&self) -> bool {
        !self.stop.is_cancelled() && !self.drained.load(Ordering::Acquire)
    }

    fn is_ending(&self) -> bool {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Counts a unit's end: completed units are kept for compensation and restarts; a failure
    /// ends the pass.
    fn settle(&self, end: UnitEnd, unit: Unit) {
        match end {
            UnitEnd::Succeeded | UnitEnd::Skipped => {
                if let (Some(finished), Some(key)) = (&self.finished, &unit.key) {
                    finished
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(Arc::clone(key));
                }
                self.completed.fetch_add(1, Ordering::Relaxed);
                if matches!(end, UnitEnd::Skipped) {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(units) = &self.units {
                    units.lock().unwrap_or_else(|e| e.into_inner()).push(unit);
                }
            }
            UnitEnd::Abandoned => {}
            UnitEnd::Failed(e) => self.end_with(PassEnd::Failed(e)),
            UnitEnd::Rollback(e) => self.end_with(PassEnd::Rollback(e)),
            UnitEnd::Restart(e) => self.restart(e.message().to_owned()),
        }
    }

    /// Ends the pass for a restart, dropping the work in flight at once.
    fn restart(&self, reason: String) {
        self.end_with(PassEnd::Restart(reason));
        self.hard.cancel();
    }

    /// Ends the pass on a request: a restart drops work in flight at once; a rollback lets it
    /// finish its current attempt, like any failure.
    fn answer(&self, request: StageRequest) {
        match request {
            StageRequest::Restart { reason } => self.restart(reason),
            StageRequest::Rollback { reason } => {
                self.end_with(PassEnd::Rollback(rollback_requested(&reason)));
            }
        }
    }

    /// Whether an earlier pass that a restart keeps finished this item.
    fn finished_before(&self, key: &str) -> bool {
        self.finished.as_ref().is_some_and(|finished| {
            finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(key)
        })
    }

    /// Whether the pool is smaller than `limit`: room for one more worker.
    fn has_room(&self, limit: usize) -> bool {
        self.workers.load(Ordering::Acquire) < limit
    }

    /// Leaves the pool when it is larger than `limit`: how a cut of the limit takes effect.
    fn leave_if_over(&self, limit: usize) -> bool {
        self.workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > limit).then(|| n - 1)
            })
            .is_ok()
    }
}

/// Counts a worker out of the pool when it ends, however it ends.
struct Enrolled<'a>(Option<&'a AtomicUsize>);

impl Enrolled<'_> {
    /// Already counted out (it left over the limit).
    fn left(mut self) {
        self.0 = None;
    }
}

impl Drop for Enrolled<'_> {
    fn drop(&mut self) {
        if let Some(workers) = self.0 {
            workers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<C: Send + Sync + 'static> Runner<C> {
    /// One pass over a stage's units: a unit is pulled only by a worker with a place under the
    /// concurrency limit, so memory holds the units in flight and no more. Returns how it
    /// ended, the completed units (when the stage compensates per unit), how many completed,
    /// and the last request epoch it answered.
    pub(super) async fn run_pass(
        self: Arc<Self>,
        entry: &Arc<StageEntry<C>>,
        restarts: u32,
        seen: u64,
        finished: &Finished,
    ) -> (PassEnd, Vec<Unit>, u64, u64) {
        let control = &entry.control;
        let stage = &entry.stage;
        let pass = Arc::new(Pass {
            source: futures_util::lock::Mutex::new(Some(stage.work.units(&self.shared.input))),
            stop: Arc::new(self.cancel.child_token()),
            hard: CancellationToken::new(),
            drained: AtomicBool::new(false),
            workers: AtomicUsize::new(0),
            busy: Notify::new(),
            completed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            end: Mutex::new(None),
            units: stage.work.compensates_units().then(Default::default),
            finished: (stage.restart_from == RestartFrom::Unfinished).then(|| Arc::clone(finished)),
        });
        let _escalate = {
            let (stop, hard, grace) = (Arc::clone(&pass.stop), pass.hard.clone(), self.grace);
            spawn_until_dropped(async move {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
                hard.cancel();
            })
        };
        let requested = control.next_request(seen);
        let mut answered = seen;
        tokio::pin!(requested);

        let mut workers = JoinSet::new();
        let spawn = |workers: &mut JoinSet<()>| {
            pass.workers.fetch_add(1, Ordering::AcqRel);
            let runner = Arc::clone(&self);
            let (entry, pass) = (Arc::clone(entry), Arc::clone(&pass));
            workers.spawn(async move { runner.work(&entry, &pass, restarts).await });
        };
        spawn(&mut workers);
        loop {
            let open = pass.is_open();
            let running = pass.workers.load(Ordering::Acquire);
            let full = running >= control.concurrency();
            tokio::select! {
                biased;
                (epoch, request) = &mut requested, if !pass.is_ending() => {
                    // The decision behind the request is committed before it acts.
                    self.bus.durable(self.bus.published()).await;
                    answered = epoch;
                    pass.answer(request);
                }
                joined = workers.join_next() => match joined {
                    None => break,
                    // One that left over a cut limit may have been raised since: its place is
                    // filled again (while the pass is still open: it may have closed meanwhile).
                    Some(Ok(())) if pass.is_open() && pass.has_room(control.concurrency()) => {
                        spawn(&mut workers);
                    }
                    Some(Ok(())) => {}
                    // Panics inside handlers are caught per attempt; this is a panic in our code.
                    Some(Err(e)) => pass.end_with(PassEnd::Failed(StageError::critical(format!(
                        "unit worker failed: {e}"
                    )))),
                },
                _ = pass.busy.notified(), if open && !full => spawn(&mut workers),
                _ = control.limit().above(running), if open && full => spawn(&mut workers),
            }
        }
        let skipped = pass.skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            self.publish(EventKind::ItemsSkipped {
                stage: Arc::clone(&stage.name),
                count: skipped,
            });
        }
        let end = pass
            .end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(if self.cancel.is_cancelled() {
                PassEnd::Cancelled
            } else {
                PassEnd::Done
            });
        let units = pass
            .units
            .as_ref()
            .map(|units| std::mem::take(&mut *units.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default();
        (end, units, pass.completed.load(Ordering::Relaxed), answered)
    }

    /// A worker of a pass: pulls the next unit and runs it to its end, until the source is
    /// drained, the pass stops, or the limit is cut below the workers there are.
    async fn work(&self, entry: &StageEntry<C>, pass: &Pass, restarts: u32) {
        let enrolled = Enrolled(Some(&pass.workers));
        let control = &entry.control;
        loop {
            if pass.leave_if_over(control.concurrency()) {
                enrolled.left();
                return;
            }
            // Units that finish at once must not keep the runtime's other tasks (the pass, the
            // sampler, signals) waiting: a worker yields after its share of the scheduler's
            // budget, as a task per unit did.
            tokio::task::consume_budget().await;
            // A new unit waits for the bus's pacing subscribers (the journal) to keep up.
            let next = std::pin::pin!(async {
                self.bus.paced().await;
                pass.next().await
            });
            let Some(Some(unit)) = unless_cancelled(&pass.stop, next).await else {
                return;
            };
            if pass.has_room(control.concurrency()) {
                pass.busy.notify_one();
            }
            let done_before = unit.key.as_deref().is_some_and(|key| {
                self.resume
                    .as_ref()
                    .is_some_and(|r| r.is_item_completed(&entry.stage.name, key))
                    || pass.finished_before(key)
            });
            if done_before {
                // Done by an earlier attempt of this run, or an earlier pass a restart keeps:
                // counts, and compensates, as done.
                pass.settle(UnitEnd::Skipped, unit);
                continue;
            }
            let (end, unit) = self
                .run_unit(entry, unit, restarts, &pass.stop, &pass.hard)
                .await;
            pass.settle(end, unit);
        }
    }
}
