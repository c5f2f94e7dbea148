//! Stages: a name, a handler, and the hooks healing uses (failover, rollback, reset).

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, Stream, StreamExt};

use super::context::{ItemContext, StageContext};
use crate::BoxFuture;
use crate::error::{InvalidConfig, StageError};
use crate::event::HandlerKind;
use crate::resilience::RetryPolicy;

/// Something a stage fans out over. Its key names it in events and the journal, and must be
/// unique within the stage: a resumed run skips the keys already completed.
pub trait Item: Send + Sync + 'static {
    /// The item's key: unique within the stage, and the same for the same item in every run.
    fn key(&self) -> Cow<'_, str>;
}

impl Item for String {
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl Item for &'static str {
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl Item for Arc<str> {
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl Item for PathBuf {
    fn key(&self) -> Cow<'_, str> {
        self.to_string_lossy()
    }
}

macro_rules! integer_items {
    ($($t:ty),*) => {$(
        impl Item for $t {
            fn key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
integer_items!(u16, u32, u64, usize, i32, i64);

type StageFn<C> =
    Arc<dyn Fn(StageContext<C>) -> BoxFuture<'static, Result<(), StageError>> + Send + Sync>;
type ItemFn<C, T> =
    Arc<dyn Fn(ItemContext<C, T>) -> BoxFuture<'static, Result<(), StageError>> + Send + Sync>;
type SourceFn<C, T> =
    Arc<dyn Fn(&Arc<C>) -> BoxStream<'static, Result<T, StageError>> + Send + Sync>;

fn stage_fn<C, F, Fut>(f: F) -> StageFn<C>
where
    F: Fn(StageContext<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StageError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

fn item_fn<C, T, F, Fut>(f: F) -> ItemFn<C, T>
where
    F: Fn(ItemContext<C, T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StageError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// Where a stage's items come from. Items are pulled as capacity frees up, so a stage over a
/// million items holds only those in flight.
///
/// ```
/// use std::path::PathBuf;
/// use self_healing::{ItemSource, StageError};
///
/// struct Job { files: Vec<PathBuf> }
///
/// // Made afresh from the run's input for every run and restart.
/// let from_input = ItemSource::iter(|job: &Job| job.files.clone());
/// // A lazy range of a million ids: nothing is materialised up front.
/// let ids = ItemSource::iter(|_: &Job| 0..1_000_000u64);
/// // A stream whose errors fail the stage (a listing that cannot be read, say).
/// let listed = ItemSource::stream(|_: &Job| {
///     futures_util::stream::iter(vec![Ok("a.cbl".to_string()), Err(StageError::new("EACCES"))])
/// });
/// # let _ = (from_input, ids, listed);
/// ```
pub struct ItemSource<C, T> {
    produce: SourceFn<C, T>,
}

impl<C, T> Clone for ItemSource<C, T> {
    fn clone(&self) -> Self {
        ItemSource {
            produce: Arc::clone(&self.produce),
        }
    }
}

impl<C, T> std::fmt::Debug for ItemSource<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSource").finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static, T: Item> ItemSource<C, T> {
    /// Items from an iterator made afresh for each run (and each restart) from the input.
    pub fn iter<F, I>(make: F) -> Self
    where
        F: Fn(&C) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        ItemSource {
            produce: Arc::new(move |input| stream::iter(make(input).into_iter().map(Ok)).boxed()),
        }
    }

    /// Items from a stream made afresh for each run; an `Err` fails the stage.
    pub fn stream<F, S>(make: F) -> Self
    where
        F: Fn(&C) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<T, StageError>> + Send + 'static,
    {
        ItemSource {
            produce: Arc::new(move |input| make(input).boxed()),
        }
    }

    /// A fixed list, the same for every run.
    pub fn list(items: Vec<T>) -> Self
    where
        T: Clone,
    {
        let items = Arc::new(items);
        ItemSource::iter(move |_| {
            let items = Arc::clone(&items);
            (0..items.len()).map(move |i| items[i].clone())
        })
    }
}

/// A unit of a stage's work with its item type erased, so the executor is generic only over
/// the run's input.
#[derive(Clone)]
pub(crate) struct Unit {
    pub(crate) key: Option<Arc<str>>,
    pub(crate) value: Arc<dyn Any + Send + Sync>,
}

/// The typed half of a stage, behind a trait object.
pub(crate) trait Work<C>: Send + Sync {
    fn units(&self, input: &Arc<C>) -> BoxStream<'static, Result<Unit, StageError>>;
    fn attempt(
        &self,
        ctx: StageContext<C>,
        unit: &Unit,
    ) -> BoxFuture<'static, Result<(), StageError>>;
    fn compensate(
        &self,
        ctx: StageContext<C>,
        unit: &Unit,
    ) -> Option<BoxFuture<'static, Result<(), StageError>>>;
    fn has_failover(&self) -> bool;
    /// Whether completed units must be kept for compensation.
    fn compensates_units(&self) -> bool;
}

struct SingleWork<C> {
    handler: StageFn<C>,
    failover: Option<StageFn<C>>,
}

impl<C: Send + Sync + 'static> Work<C> for SingleWork<C> {
    fn units(&self, _: &Arc<C>) -> BoxStream<'static, Result<Unit, StageError>> {
        stream::once(std::future::ready(Ok(Unit {
            key: None,
            value: Arc::new(()),
        })))
        .boxed()
    }

    fn attempt(
        &self,
        ctx: StageContext<C>,
        _: &Unit,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        match (&self.failover, ctx.handler) {
            (Some(failover), HandlerKind::Failover) => failover(ctx),
            _ => (self.handler)(ctx),
        }
    }

    fn compensate(
        &self,
        _: StageContext<C>,
        _: &Unit,
    ) -> Option<BoxFuture<'static, Result<(), StageError>>> {
        None
    }

    fn has_failover(&self) -> bool {
        self.failover.is_some()
    }

    fn compensates_units(&self) -> bool {
        false
    }
}

struct EachWork<C, T> {
    source: ItemSource<C, T>,
    handler: ItemFn<C, T>,
    failover: Option<ItemFn<C, T>>,
    rollback: Option<ItemFn<C, T>>,
}

impl<C, T> EachWork<C, T> {
    fn context(ctx: StageContext<C>, unit: &Unit) -> ItemContext<C, T>
    where
        T: Item,
    {
        let item = Arc::clone(&unit.value)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("a stage's units all come from its own source"));
        ItemContext {
            stage: ctx,
            item,
            key: unit.key.clone().unwrap_or_else(|| Arc::from("")),
        }
    }
}

impl<C: Send + Sync + 'static, T: Item> Work<C> for EachWork<C, T> {
    fn units(&self, input: &Arc<C>) -> BoxStream<'static, Result<Unit, StageError>> {
        (self.source.produce)(input)
            .map(|item| {
                item.map(|item| Unit {
                    key: Some(Arc::from(item.key())),
                    value: Arc::new(item),
                })
            })
            .boxed()
    }

    fn attempt(
        &self,
        ctx: StageContext<C>,
        unit: &Unit,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        let handler = match (&self.failover, ctx.handler) {
            (Some(failover), HandlerKind::Failover) => failover,
            _ => &self.handler,
        };
        handler(Self::context(ctx, unit))
    }

    fn compensate(
        &self,
        ctx: StageContext<C>,
        unit: &Unit,
    ) -> Option<BoxFuture<'static, Result<(), StageError>>> {
        let rollback = self.rollback.as_ref()?;
        Some(rollback(Self::context(ctx, unit)))
    }

    fn has_failover(&self) -> bool {
        self.failover.is_some()
    }

    fn compensates_units(&self) -> bool {
        self.rollback.is_some()
    }
}

/// One named step of a pipeline, as the pipeline runs it.
///
/// A plain stage runs its handler once per run (plus retries); a stage made with
/// [`Stage::for_each`] runs its handler once per item, `concurrency` at a time.
///
/// ```
/// use std::time::Duration;
/// use self_healing::pipeline::{ItemSource, Stage};
///
/// let design: Stage<()> = Stage::new("design", |_ctx| async { Ok(()) })
///     .timeout(Duration::from_secs(30))
///     .reset(|_ctx| async { Ok(()) })
///     .into();
///
/// let analysis: Stage<()> = Stage::for_each(
///     "analysis",
///     ItemSource::iter(|_: &()| (1..=100u32).map(|n| format!("PROG{n:03}.cbl"))),
///     |ctx| async move {
///         assert!(ctx.item().ends_with(".cbl"));
///         Ok(())
///     },
/// )
/// .concurrency(4)
/// .rollback_item(|_ctx| async { Ok(()) })
/// .into();
/// # let _ = (design, analysis);
/// ```
pub struct Stage<C> {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) concurrency: usize,
    pub(crate) max_restarts: u32,
    pub(crate) work: Arc<dyn Work<C>>,
    pub(crate) rollback: Option<StageFn<C>>,
    pub(crate) reset: Option<StageFn<C>>,
    pub(crate) depends_on: Arc<[Arc<str>]>,
    pub(crate) breaker: Option<Arc<str>>,
    pub(crate) restart_backoff: Option<RestartBackoff>,
    pub(crate) restart_from: RestartFrom,
}

impl<C> std::fmt::Debug for Stage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("concurrency", &self.concurrency)
            .field("max_restarts", &self.max_restarts)
            .field("failover", &self.work.has_failover())
            .field("rollback", &self.rollback.is_some())
            .field("reset", &self.reset.is_some())
            .field("depends_on", &self.depends_on)
            .field("breaker", &self.breaker)
            .field("restart_backoff", &self.restart_backoff)
            .field("restart_from", &self.restart_from)
            .finish_non_exhaustive()
    }
}

/// How long a stage waits before each restart: like a crash-loop back-off, the wait doubles
/// with each restart from `initialDelay` up to `maxDelay`, and starts again from
/// `initialDelay` once the stage ran `resetAfter` without a restart. As a file writes it, a
/// stage's `restartBackoff: { initialDelay: 10s, maxDelay: 5m, resetAfter: 10m }`.
///
/// ```
/// use std::time::Duration;
/// use self_healing::pipeline::RestartBackoff;
///
/// let backoff = RestartBackoff::default();
/// let waits: Vec<u64> = (0..7).map(|n| backoff.delay(n).as_secs()).collect();
/// assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RestartBackoff {
    // The durations' `serialize_with` only writes the schema's defaults (`"10s"`, not serde's
    // `{secs, nanos}`): nothing serializes this struct.
    /// The wait before the first restart of a streak; default 10 s.
    #[serde(
        deserialize_with = "crate::duration::deserialize",
        serialize_with = "crate::duration::serialize"
    )]
    #[schemars(with = "crate::duration::Written")]
    pub initial_delay: Duration,
    /// The longest wait; default 5 min.
    #[serde(
        deserialize_with = "crate::duration::deserialize",
        serialize_with = "crate::duration::serialize"
    )]
    #[schemars(with = "crate::duration::Written")]
    pub max_delay: Duration,
    /// How long the stage must run without a restart for the streak to end; default 10 min.
    #[serde(
        deserialize_with = "crate::duration::deserialize",
        serialize_with = "crate::duration::serialize"
    )]
    #[schemars(with = "crate::duration::Written")]
    pub reset_after: Duration,
}

impl Default for RestartBackoff {
    /// Kubernetes' crash-loop back-off: 10 s doubling to 5 min, reset after 10 min.
    fn default() -> Self {
        RestartBackoff {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl RestartBackoff {
    /// The wait before restart `streak` + 1 of a streak (`streak` 0: the first).
    pub fn delay(&self, streak: u32) -> Duration {
        self.initial_delay
            .saturating_mul(2u32.saturating_pow(streak.min(31)))
            .min(self.max_delay)
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.reset_after.is_zero() {
            return Err(InvalidConfig::new(
                "restartBackoff.resetAfter",
                "must be longer than zero, or every restart would start a fresh streak",
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(InvalidConfig::new(
                "restartBackoff.maxDelay",
                "must not be shorter than initialDelay",
            ));
        }
        Ok(())
    }
}

/// Where a restarted stage starts over (`restartFrom` in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartFrom {
    /// From its start: every item again, for a stage whose `reset` clears what it did (the
    /// default).
    #[default]
    Start,
    /// From the items not finished yet: those an earlier pass of this run finished are
    /// skipped and count as done, for a stage whose items are done once done (its `reset`
    /// clears the broken state, not the work).
    Unfinished,
}

/// Restarts a stage may have per run unless told otherwise.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;

impl<C: Send + Sync + 'static> Stage<C> {
    /// A stage that runs `handler` once per run.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<F, Fut>(name: impl Into<Arc<str>>, handler: F) -> SingleStage<C>
    where
        F: Fn(StageContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StageError>> + Send + 'static,
    {
        SingleStage {
            common: Common::new(name.into()),
            handler: stage_fn(handler),
            failover: None,
        }
    }

    /// A stage that runs `handler` once per item of `source`.
    pub fn for_each<T, F, Fut>(
        name: impl Into<Arc<str>>,
        source: ItemSource<C, T>,
        handler: F,
    ) -> EachStage<C, T>
    where
        T: Item,
        F: Fn(ItemContext<C, T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StageError>> + Send + 'static,
    {
        EachStage {
            common: Common::new(name.into()),
            source,
            handler: item_fn(handler),
            failover: None,
            rollback_item: None,
            concurrency: 1,
        }
    }

    /// The stage's name, unique within its pipeline.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.name.trim().is_empty() {
            return Err(InvalidConfig::new("name", "a stage needs a name"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(InvalidConfig::new("timeout", "must be longer than zero"));
        }
        if self.concurrency == 0 {
            return Err(InvalidConfig::new("concurrency", "must be at least 1"));
        }
        if let Some(backoff) = &self.restart_backoff {
            backoff.validate()?;
        }
        for (i, check) in self.depends_on.iter().enumerate() {
            if self.depends_on[..i].contains(check) {
                return Err(InvalidConfig::new(
                    format!("dependsOn[{i}]"),
                    format!("`{check}` is named twice"),
                ));
            }
        }
        Ok(())
    }
}

/// Settings every kind of stage has.
struct Common<C> {
    name: Arc<str>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    max_restarts: u32,
    rollback: Option<StageFn<C>>,
    reset: Option<StageFn<C>>,
    depends_on: Vec<Arc<str>>,
    breaker: Option<Arc<str>>,
    restart_backoff: Option<RestartBackoff>,
    restart_from: RestartFrom,
}

impl<C> Common<C> {
    fn new(name: Arc<str>) -> Self {
        Common {
            name,
            timeout: None,
            retry: None,
            max_restarts: DEFAULT_MAX_RESTARTS,
            rollback: None,
            reset: None,
            depends_on: Vec::new(),
            breaker: None,
            restart_backoff: None,
            restart_from: RestartFrom::Start,
        }
    }

    fn into_stage(self, concurrency: usize, work: Arc<dyn Work<C>>) -> Stage<C> {
        Stage {
            name: self.name,
            timeout: self.timeout,
            retry: self.retry,
            concurrency,
            max_restarts: self.max_restarts,
            work,
            rollback: self.rollback,
            reset: self.reset,
            depends_on: self.depends_on.into(),
            breaker: self.breaker,
            restart_backoff: self.restart_backoff,
            restart_from: self.restart_from,
        }
    }
}

macro_rules! common_settings {
    () => {
        /// Cuts each attempt after `timeout`; the attempt fails with code `ETIMEDOUT`.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.common.timeout = Some(timeout);
            self
        }

        /// This stage's retry policy, instead of the pipeline's.
        pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
            self.common.retry = Some(policy);
            self
        }

        /// How often a run may restart this stage (default 3); past that a restart fails it.
        pub fn max_restarts(mut self, restarts: u32) -> Self {
            self.common.max_restarts = restarts;
            self
        }

        /// The health checks the stage depends on (`dependsOn`): while one of them is
        /// unhealthy the stage starts no new attempt (its work waits, spending none, as under
        /// an open breaker) and resumes as soon as none is. The healer, watching the monitor
        /// that runs the checks, holds and releases the stage.
        pub fn depends_on<S: Into<Arc<str>>>(
            mut self,
            checks: impl IntoIterator<Item = S>,
        ) -> Self {
            self.common.depends_on = checks.into_iter().map(Into::into).collect();
            self
        }

        /// Waits before each restart of the stage, longer with each restart in a row (see
        /// [`RestartBackoff`]). Default: restarts at once.
        pub fn restart_backoff(mut self, backoff: RestartBackoff) -> Self {
            self.common.restart_backoff = Some(backoff);
            self
        }

        /// Where a restart starts the stage over: from its start (the default) or from the
        /// items not finished yet (see [`RestartFrom`]).
        pub fn restart_from(mut self, from: RestartFrom) -> Self {
            self.common.restart_from = from;
            self
        }

        /// Shares the circuit breaker named `name` (given to the pipeline's builder with
        /// [`PipelineBuilder::shared_breaker`](crate::pipeline::PipelineBuilder::shared_breaker))
        /// with every stage that names it: stages that call one dependency trip once for all.
        pub fn breaker(mut self, name: impl Into<Arc<str>>) -> Self {
            self.common.breaker = Some(name.into());
            self
        }

        /// Compensation for the whole stage, run (in reverse stage order) when a later failure
        /// rolls the run back.
        pub fn rollback<F, Fut>(mut self, hook: F) -> Self
        where
            F: Fn(StageContext<C>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), StageError>> + Send + 'static,
        {
            self.common.rollback = Some(stage_fn(hook));
            self
        }

        /// Run before the stage starts over after a restart, to clear what it left behind.
        pub fn reset<F, Fut>(mut self, hook: F) -> Self
        where
            F: Fn(StageContext<C>) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), StageError>> + Send + 'static,
        {
            self.common.reset = Some(stage_fn(hook));
            self
        }
    };
}

/// A stage that runs once per run; see [`Stage::new`].
pub struct SingleStage<C> {
    common: Common<C>,
    handler: StageFn<C>,
    failover: Option<StageFn<C>>,
}

impl<C> std::fmt::Debug for SingleStage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleStage")
            .field("name", &self.common.name)
            .field("timeout", &self.common.timeout)
            .field("retry", &self.common.retry)
            .field("max_restarts", &self.common.max_restarts)
            .field("failover", &self.failover.is_some())
            .field("rollback", &self.common.rollback.is_some())
            .field("reset", &self.common.reset.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static> SingleStage<C> {
    common_settings!();

    /// The alternate handler the `failover` action switches to.
    pub fn failover<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(StageContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StageError>> + Send + 'static,
    {
        self.failover = Some(stage_fn(handler));
        self
    }
}

impl<C: Send + Sync + 'static> From<SingleStage<C>> for Stage<C> {
    fn from(stage: SingleStage<C>) -> Self {
        let work = Arc::new(SingleWork {
            handler: stage.handler,
            failover: stage.failover,
        });
        stage.common.into_stage(1, work)
    }
}

/// A stage that fans out over items; see [`Stage::for_each`].
pub struct EachStage<C, T> {
    common: Common<C>,
    source: ItemSource<C, T>,
    handler: ItemFn<C, T>,
    failover: Option<ItemFn<C, T>>,
    rollback_item: Option<ItemFn<C, T>>,
    concurrency: usize,
}

impl<C, T> std::fmt::Debug for EachStage<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EachStage")
            .field("name", &self.common.name)
            .field("timeout", &self.common.timeout)
            .field("retry", &self.common.retry)
            .field("max_restarts", &self.common.max_restarts)
            .field("concurrency", &self.concurrency)
            .field("failover", &self.failover.is_some())
            .field("rollback", &self.common.rollback.is_some())
            .field("rollback_item", &self.rollback_item.is_some())
            .field("reset", &self.common.reset.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static, T: Item> EachStage<C, T> {
    common_settings!();

    /// How many items run at once (default 1). The `scale` action changes it live.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The alternate item handler the `failover` action switches to.
    pub fn failover<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(ItemContext<C, T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StageError>> + Send + 'static,
    {
        self.failover = Some(item_fn(handler));
        self
    }

    /// Compensation for one completed item, run in reverse completion order on rollback.
    /// Completed items are kept in memory for it, so only register it when it is needed.
    pub fn rollback_item<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ItemContext<C, T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StageError>> + Send + 'static,
    {
        self.rollback_item = Some(item_fn(hook));
        self
    }
}

impl<C: Send + Sync + 'static, T: Item> From<EachStage<C, T>> for Stage<C> {
    fn from(stage: EachStage<C, T>) -> Self {
        let work = Arc::new(EachWork {
            source: stage.source,
            handler: stage.handler,
            failover: stage.failover,
            rollback: stage.rollback_item,
        });
        stage.common.into_stage(stage.concurrency, work)
    }
}
