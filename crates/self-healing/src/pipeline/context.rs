//! What a stage's handler is given for one attempt: the run's input, where it is (run, stage,
//! item, attempt, handler), its cancellation, the metrics it records into, and where its
//! output goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use crate::event::{AttemptOutput, HandlerKind, RunId};
use crate::metrics::{MetricsCollector, Scope};

/// What a stage handler is given for one attempt.
pub struct StageContext<C> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) stage: Arc<str>,
    /// The unit's item key, for work that fans out.
    pub(crate) item: Option<Arc<str>>,
    pub(crate) attempt: u32,
    pub(crate) handler: HandlerKind,
    /// Shared by the attempts of a pass (a token's own clone takes a lock).
    pub(crate) cancel: Arc<CancellationToken>,
}

/// What every attempt of a run is given alike, behind one reference: a context is made for
/// each attempt, and costs a reference count, not four.
pub(crate) struct Shared<C> {
    pub(crate) input: Arc<C>,
    pub(crate) run: RunId,
    pub(crate) metrics: MetricsCollector,
    pub(crate) outputs: Outputs,
}

/// What handlers attached of their attempts' output, until the executor publishes it.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    attached: std::sync::Mutex<Vec<Attached>>,
    /// How many are attached: an attempt that attached nothing is answered without the lock.
    count: AtomicUsize,
}

/// One attempt's attached output: its stage, item, attempt number and output.
type Attached = (Arc<str>, Option<Arc<str>>, u32, AttemptOutput);

impl Outputs {
    /// Takes what was attached for this attempt of this unit.
    pub(crate) fn take(
        &self,
        stage: &str,
        item: Option<&str>,
        attempt: u32,
    ) -> Option<AttemptOutput> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let at = attached
            .iter()
            .position(|(s, i, a, _)| &**s == stage && i.as_deref() == item && *a == attempt)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        Some(attached.swap_remove(at).3)
    }

    fn attach(&self, attached: Attached) {
        let mut all = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        all.push(attached);
        self.count.fetch_add(1, Ordering::AcqRel);
    }
}

impl<C> Clone for StageContext<C> {
    fn clone(&self) -> Self {
        StageContext {
            shared: Arc::clone(&self.shared),
            stage: Arc::clone(&self.stage),
            item: self.item.clone(),
            attempt: self.attempt,
            handler: self.handler,
            cancel: Arc::clone(&self.cancel),
        }
    }
}

impl<C> std::fmt::Debug for StageContext<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageContext")
            .field("run", &self.shared.run)
            .field("stage", &self.stage)
            .field("attempt", &self.attempt)
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

impl StageContext<()> {
    /// A context outside any pipeline, for trying a handler on its own: what it records goes to
    /// a collector of its own (`metrics()`), what it attaches is kept there too
    /// ([`attached_output`](Self::attached_output)).
    pub fn standalone(stage: &str, item: Option<&str>, attempt: u32) -> Self {
        StageContext {
            shared: Arc::new(Shared {
                input: Arc::new(()),
                run: RunId::new("standalone"),
                metrics: MetricsCollector::default(),
                outputs: Outputs::default(),
            }),
            stage: stage.into(),
            item: item.map(Arc::from),
            attempt,
            handler: HandlerKind::Primary,
            cancel: Arc::new(CancellationToken::new()),
        }
    }
}

impl<C> StageContext<C> {
    /// The collector this attempt records into.
    pub fn metrics(&self) -> &MetricsCollector {
        &self.shared.metrics
    }

    /// What was attached of this attempt's output and not published yet.
    pub fn attached_output(&self) -> Option<AttemptOutput> {
        self.shared
            .outputs
            .take(&self.stage, self.item.as_deref(), self.attempt)
    }

    /// The run's input, shared by every stage.
    pub fn input(&self) -> &Arc<C> {
        &self.shared.input
    }

    /// The run this attempt belongs to.
    pub fn run_id(&self) -> &RunId {
        &self.shared.run
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the primary or the failover handler is running.
    pub fn handler(&self) -> HandlerKind {
        self.handler
    }

    /// Cancelled when the run is cancelled or the stage is stopping: long work should watch it
    /// and return early.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Attaches what this attempt wrote (a command's standard output and error, bounded): the
    /// pipeline publishes it as `attempt-output` when the attempt ends, so a journal keeps it
    /// as the attempt's log.
    pub fn attach_output(&self, output: AttemptOutput) {
        self.shared.outputs.attach((
            Arc::clone(&self.stage),
            self.item.clone(),
            self.attempt,
            output,
        ));
    }

    /// Records a sample of a named metric in this stage's scope.
    pub fn record(&self, metric: &str, value: f64) {
        self.shared
            .metrics
            .record_in(Scope::Stage(&self.stage), metric, value);
    }
}

/// What an item handler is given for one attempt: the stage's context plus the item.
pub struct ItemContext<C, T> {
    pub(crate) stage: StageContext<C>,
    pub(crate) item: Arc<T>,
    pub(crate) key: Arc<str>,
}

impl<C, T> std::fmt::Debug for ItemContext<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemContext")
            .field("stage", &self.stage)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<C, T> ItemContext<C, T> {
    /// The item this attempt works on.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The item's key, as events and the journal name it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stable across attempts, restarts and resumed runs of the same run: give it to a
    /// downstream that deduplicates, since an item in flight during a crash runs again.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.stage.shared.run, self.stage.stage, self.key
        )
    }
}

impl<C, T> std::ops::Deref for ItemContext<C, T> {
    type Target = StageContext<C>;

    fn deref(&self) -> &StageContext<C> {
        &self.stage
    }
}
