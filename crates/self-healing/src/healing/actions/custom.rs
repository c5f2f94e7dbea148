//! `custom`: a remedy of your own.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, DecisiveAction, Subject};
use crate::BoxFuture;
use crate::error::{InvalidConfig, StageError};
use crate::event::{ActionKind, RunId};
use crate::metrics::MetricsCollector;
use crate::pipeline::{Failure, Remedy, StageControl};

type CustomFn =
    Arc<dyn Fn(ActionContext) -> BoxFuture<'static, Result<Remedy, StageError>> + Send + Sync>;

/// A remedy of your own (the seed's `handler`). When it heals a failed attempt, the
/// [`Remedy`] it returns decides that attempt's fate (`Remedy::Retry { after: ZERO }` to run it
/// again at once); when it runs on the evaluation tick, the remedy is ignored.
///
/// ```
/// use self_healing::healing::{Action, CustomAction, HealingStrategy, Trigger};
/// use self_healing::pipeline::Remedy;
///
/// let clear_cache = CustomAction::new(|ctx| async move {
///     println!("clearing the cache of {}", ctx.stage);
///     Ok(Remedy::Retry { after: std::time::Duration::ZERO })
/// });
/// let strategy = HealingStrategy::new("clear-cache", clear_cache).trigger(Trigger::error());
/// # let _ = strategy;
/// ```
#[derive(Clone)]
pub struct CustomAction {
    handler: CustomFn,
}

impl CustomAction {
    /// An action that runs `handler` with an `ActionContext` each time it applies.
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Remedy, StageError>> + Send + 'static,
    {
        CustomAction {
            handler: Arc::new(move |ctx| Box::pin(handler(ctx))),
        }
    }

    /// Runs the handler.
    pub fn run(&self, ctx: ActionContext) -> BoxFuture<'static, Result<Remedy, StageError>> {
        (self.handler)(ctx)
    }

    fn context(&self, subject: &Subject<'_>, error: Option<&StageError>) -> ActionContext {
        ActionContext {
            run: subject.run().cloned(),
            stage: Arc::clone(subject.stage),
            item: subject.item.cloned(),
            strategy: Arc::clone(subject.strategy),
            error: error.cloned(),
            metrics: subject.metrics().cloned().unwrap_or_default(),
            control: subject.control().cloned(),
        }
    }
}

/// `custom`'s `config` in a file, where a closure cannot be written: a `command` (argv, no
/// shell) that runs with `MIGRATIONPILOT_STAGE`, `MIGRATIONPILOT_STRATEGY` and, where they
/// apply, `MIGRATIONPILOT_ITEM` and `MIGRATIONPILOT_ERROR`. Exit 0 retries the failed work at
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomConfig {
    /// The program and its arguments; required, and run without a shell.
    pub command: Option<Vec<String>>,
}

impl CustomConfig {
    /// The action that runs `command`; fails if it is missing or names no program.
    pub fn build(&self) -> Result<CustomAction, InvalidConfig> {
        let command = self.command.as_ref().ok_or_else(|| {
            InvalidConfig::new("command", "a custom action in a file runs a `command`")
        })?;
        crate::process::check_argv(command)?;
        let argv: Arc<[String]> = command.as_slice().into();
        Ok(CustomAction::new(move |ctx| {
            let argv = Arc::clone(&argv);
            async move {
                let mut env = vec![
                    ("MIGRATIONPILOT_STAGE", ctx.stage.to_string()),
                    ("MIGRATIONPILOT_STRATEGY", ctx.strategy.to_string()),
                ];
                if let Some(item) = &ctx.item {
                    env.push(("MIGRATIONPILOT_ITEM", item.to_string()));
                }
                if let Some(error) = &ctx.error {
                    env.push(("MIGRATIONPILOT_ERROR", error.message().to_owned()));
                }
                crate::process::run_owned(&argv, &env).await?;
                Ok(Remedy::Retry {
                    after: Duration::ZERO,
                })
            }
        }))
    }
}

impl fmt::Debug for CustomAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomAction")
    }
}

impl From<CustomAction> for Action {
    fn from(action: CustomAction) -> Self {
        Action::Decisive(Arc::new(action))
    }
}

impl DecisiveAction for CustomAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Custom
    }

    fn on_failure<'a>(
        &'a self,
        subject: &'a Subject<'a>,
        failure: &'a Failure<'a>,
    ) -> BoxFuture<'a, Applied> {
        let ctx = self.context(subject, Some(failure.error));
        Box::pin(async move {
            match (self.handler)(ctx).await {
                Ok(remedy) => Applied::remedy(remedy, format!("custom remedy answered {remedy:?}")),
                Err(error) => Applied::failed(format!("custom remedy failed: {error}")),
            }
        })
    }

    fn on_stage<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let ctx = self.context(subject, None);
        Box::pin(async move {
            match (self.handler)(ctx).await {
                Ok(_) => Applied::done("custom remedy ran"),
                Err(error) => Applied::failed(format!("custom remedy failed: {error}")),
            }
        })
    }
}

/// What a custom action is given.
#[derive(Clone)]
pub struct ActionContext {
    /// The run it acts in, while the pipeline runs.
    pub run: Option<RunId>,
    /// The stage acted on.
    pub stage: Arc<str>,
    /// The item, when a failed attempt of one is why the action runs.
    pub item: Option<Arc<str>>,
    /// The strategy whose action this is.
    pub strategy: Arc<str>,
    /// The error being healed, if a failed attempt is why the action runs.
    pub error: Option<StageError>,
    /// The run's metrics; an empty collector when no pipeline is running.
    pub metrics: MetricsCollector,
    /// The stage's live controls, when the pipeline is running.
    pub control: Option<Arc<StageControl>>,
}

impl fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionContext")
            .field("run", &self.run)
            .field("stage", &self.stage)
            .field("item", &self.item)
            .field("strategy", &self.strategy)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}
