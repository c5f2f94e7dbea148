//! One stage of a pipeline file as the pipeline runs it: its commands, where its attempts run,
//! and the settings of the file's stage.

use std::path::Path;
use std::sync::Arc;

use self_healing::classify::Classifier;
use self_healing::pipeline::{ItemSource, Stage};
use self_healing::resilience::RetryPolicy;
use self_healing::{BoxFuture, InvalidConfig, StageContext, StageError};

use super::items::{file_items, glob_items};
use super::{Commands, Remote};
use crate::command::{Command, Context};
use crate::file::{Items, StageFile};
use crate::inject::Chaos;
use crate::secrets::Secrets;
use crate::store::work::Role;

/// One attempt of a stage's command, as a [`Runner`] is asked for it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The item, for a stage with items.
    pub item: Option<&'a str>,
    /// The item's idempotency key.
    pub key: Option<&'a str>,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// Which of the stage's commands.
    pub role: Role,
}

/// Where a stage's attempts run when not here: the work queue's dispatcher (a worker runs the
/// command) or a simulation (a model answers, nothing runs). The attempt's metric lines and
/// output reach `stage` as if it had run here.
pub trait Runner: Send + Sync {
    /// Runs `attempt` and gives its outcome.
    fn run<'a>(
        &'a self,
        attempt: Attempt<'a>,
        stage: &'a StageContext<()>,
    ) -> BoxFuture<'a, Result<(), StageError>>;
}

/// What every stage of a file is built with.
pub struct Bound<'a> {
    /// The folder relative paths resolve from.
    pub base: &'a Path,
    /// The project.
    pub project: &'a Arc<str>,
    /// The values to mask in what the stage's commands print.
    pub secrets: &'a Secrets,
    /// The global retry policy a stage's own takes its unset keys from.
    pub global_retry: &'a RetryPolicy,
    /// The metric names a command's metric lines may record.
    pub metrics: &'a Arc<[String]>,
    /// What a command's failure means: the file's `errors:`, then the built-in rules.
    pub classifier: &'a Arc<Classifier>,
    /// Where attempts run once the run shares its work.
    pub remote: &'a Remote,
    /// The faults `run --chaos` injects before each attempt of a stage's command.
    pub chaos: Option<&'a Arc<Chaos>>,
}

/// One stage of the file as the pipeline runs it; its commands go into `commands`.
pub fn stage_of(
    stage: &StageFile,
    on: &Bound<'_>,
    commands: &mut Commands,
) -> Result<Stage<()>, InvalidConfig> {
    let Bound {
        base,
        project,
        secrets,
        global_retry,
        metrics,
        classifier,
        remote,
        chaos,
    } = *on;
    let workdir = stage
        .workdir
        .as_ref()
        .map_or_else(|| base.to_owned(), |w| base.join(w));
    let command = |argv: &[String], field: &'static str| -> Result<Arc<Command>, InvalidConfig> {
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            return Err(InvalidConfig::new(field, "needs a program to run"));
        }
        Ok(Arc::new(Command {
            argv: argv.to_vec(),
            env: stage.env.clone(),
            workdir: workdir.clone(),
            secrets: secrets.clone(),
            classifier: Arc::clone(classifier),
            metrics: Arc::clone(metrics),
        }))
    };
    if stage.name.trim().is_empty() {
        return Err(InvalidConfig::new("name", "a stage needs a name"));
    }
    let main = command(&stage.command, "command")?;
    let failover = stage
        .failover
        .as_deref()
        .map(|a| command(a, "failover"))
        .transpose()?;
    let rollback = stage
        .rollback
        .as_deref()
        .map(|a| command(a, "rollback"))
        .transpose()?;
    let reset = stage
        .reset
        .as_deref()
        .map(|a| command(a, "reset"))
        .transpose()?;
    if stage.concurrency == Some(0) {
        return Err(InvalidConfig::new("concurrency", "must be at least 1"));
    }
    if stage.items.is_none() && stage.concurrency.is_some_and(|c| c > 1) {
        return Err(InvalidConfig::new(
            "concurrency",
            "applies to stages with `items`",
        ));
    }
    if stage.timeout.is_some_and(|t| t.is_zero()) {
        return Err(InvalidConfig::new("timeout", "must be longer than zero"));
    }
    let retry = stage
        .retry_policy
        .as_ref()
        .map(|policy| policy.build(global_retry))
        .transpose()
        .map_err(|e| e.within("retryPolicy"))?;
    if !workdir.is_dir() {
        return Err(InvalidConfig::new(
            "workdir",
            format!("`{}` is not a directory", workdir.display()),
        ));
    }

    for (role, command) in [
        (Role::Command, Some(&main)),
        (Role::Failover, failover.as_ref()),
        (Role::Rollback, rollback.as_ref()),
        (Role::Reset, reset.as_ref()),
    ] {
        if let Some(command) = command {
            commands.insert((stage.name.clone(), role), Arc::clone(command));
        }
    }
    // A handler that runs `cmd` for a stage (or one item of it).
    fn run_single(
        cmd: Arc<Command>,
        role: Role,
        project: Arc<str>,
        remote: Remote,
        chaos: Option<Arc<Chaos>>,
    ) -> impl Fn(StageContext<()>) -> BoxFuture<'static, Result<(), StageError>> + Send + Sync + 'static
    {
        move |ctx| {
            let (cmd, project, remote, chaos) = (
                Arc::clone(&cmd),
                Arc::clone(&project),
                Arc::clone(&remote),
                chaos.clone(),
            );
            Box::pin(async move {
                let context = Context {
                    project: &project,
                    run: ctx.run_id().as_str(),
                    stage: ctx.stage(),
                    attempt: ctx.attempt(),
                    item: None,
                    idempotency_key: None,
                };
                attempt(&cmd, role, &remote, chaos.as_deref(), &ctx, &context).await
            })
        }
    }
    fn run_item(
        cmd: Arc<Command>,
        role: Role,
        project: Arc<str>,
        remote: Remote,
        chaos: Option<Arc<Chaos>>,
    ) -> impl Fn(self_healing::ItemContext<(), String>) -> BoxFuture<'static, Result<(), StageError>>
    + Send
    + Sync
    + 'static {
        move |ctx| {
            let (cmd, project, remote, chaos) = (
                Arc::clone(&cmd),
                Arc::clone(&project),
                Arc::clone(&remote),
                chaos.clone(),
            );
            Box::pin(async move {
                let key = ctx.idempotency_key();
                let context = Context {
                    project: &project,
                    run: ctx.run_id().as_str(),
                    stage: ctx.stage(),
                    attempt: ctx.attempt(),
                    item: Some(ctx.item()),
                    idempotency_key: Some(&key),
                };
                attempt(&cmd, role, &remote, chaos.as_deref(), &ctx, &context).await
            })
        }
    }
    let single = |cmd: Arc<Command>, role: Role| {
        run_single(
            cmd,
            role,
            Arc::clone(project),
            Arc::clone(remote),
            chaos.cloned(),
        )
    };
    let each = |cmd: Arc<Command>, role: Role| {
        run_item(
            cmd,
            role,
            Arc::clone(project),
            Arc::clone(remote),
            chaos.cloned(),
        )
    };

    // The settings both kinds of stage take.
    macro_rules! common {
        ($built:expr) => {{
            let mut built = $built
                .depends_on(stage.depends_on.iter().map(String::as_str))
                .restart_from(stage.restart_from);
            if let Some(timeout) = stage.timeout {
                built = built.timeout(timeout);
            }
            if let Some(restarts) = stage.max_restarts {
                built = built.max_restarts(restarts);
            }
            if let Some(retry) = retry {
                built = built.retry_policy(retry);
            }
            if let Some(breaker) = &stage.breaker {
                built = built.breaker(breaker.as_str());
            }
            if let Some(backoff) = stage.restart_backoff {
                built = built.restart_backoff(backoff);
            }
            built
        }};
    }
    let name = stage.name.as_str();
    let built: Stage<()> = match &stage.items {
        None => {
            let mut built = Stage::new(name, single(main, Role::Command));
            if let Some(failover) = failover {
                built = built.failover(single(failover, Role::Failover));
            }
            if let Some(rollback) = rollback {
                built = built.rollback(single(rollback, Role::Rollback));
            }
            if let Some(reset) = reset {
                built = built.reset(single(reset, Role::Reset));
            }
            common!(built).into()
        }
        Some(items) => {
            let source = match items {
                Items::List(list) => ItemSource::list(list.clone()),
                Items::File(path) => file_items(base.join(path)),
                Items::Glob(pattern) => glob_items(base, pattern)?,
            };
            let mut built = Stage::for_each(name, source, each(main, Role::Command))
                .concurrency(stage.concurrency.unwrap_or(1));
            if let Some(failover) = failover {
                built = built.failover(each(failover, Role::Failover));
            }
            // A rollback that names `{item}` compensates each item; otherwise the whole stage.
            if let Some(rollback) = rollback {
                if rollback.argv.iter().any(|a| a.contains("{item}")) {
                    built = built.rollback_item(each(rollback, Role::Rollback));
                } else {
                    built = built.rollback(single(rollback, Role::Rollback));
                }
            }
            if let Some(reset) = reset {
                built = built.reset(single(reset, Role::Reset));
            }
            common!(built).into()
        }
    };
    Ok(built)
}

/// Runs `cmd` for one attempt: here, or where the run's [`Runner`] runs it once it has one;
/// `--chaos` faults come first, whichever it is.
async fn attempt(
    cmd: &Command,
    role: Role,
    remote: &Remote,
    chaos: Option<&Chaos>,
    stage: &StageContext<()>,
    ctx: &Context<'_>,
) -> Result<(), StageError> {
    if let Some(chaos) = chaos
        && matches!(role, Role::Command | Role::Failover)
    {
        chaos.before(ctx.stage, ctx.item).await?;
    }
    let Some(runner) = remote.get() else {
        return cmd.run(stage, ctx).await;
    };
    let attempt = Attempt {
        stage: ctx.stage,
        item: ctx.item,
        key: ctx.idempotency_key,
        attempt: ctx.attempt,
        role,
    };
    runner.run(attempt, stage).await
}
