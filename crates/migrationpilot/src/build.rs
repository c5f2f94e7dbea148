//! From a parsed pipeline file to the objects that run it, collecting every error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::io::AsyncBufReadExt;

use self_healing::alert::{Alert, Alerting, Notifier, NotifyError, Rules};
use self_healing::healing::{AlertThreshold, AutoHealer};
use self_healing::health::HealthMonitor;
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::resilience::RetryPolicy;
use self_healing::{InvalidConfig, Severity, StageError};

use crate::command::{Command, Context};
use crate::dispatch::{Attempt, Dispatcher};
use crate::env::Secrets;
use crate::file::{FileError, Items, PipelineFile, StageFile, locate};
use crate::store::work::Role;

/// Everything a run needs.
pub struct Built {
    /// The project name: the one given on the command line, else the file's `project`.
    pub project: Arc<str>,
    /// The pipeline with every stage of the file, the healer installed.
    pub pipeline: SelfHealingPipeline<()>,
    /// The healer built from the file's `healing` section.
    pub healer: AutoHealer,
    /// The health monitor, watched by the healer; `None` when the file has no
    /// `healing.healthMonitor`. Not started yet.
    pub monitor: Option<HealthMonitor>,
    /// The values of the secret-looking variables the file used, masked in what is shown or
    /// stored.
    pub secrets: Secrets,
    /// The file's alert channels as written (`${NAME}`s unsubstituted), for the store.
    pub alert_channels: Option<serde_json::Value>,
    /// Every command of every stage, by stage and role: what a worker runs for a job.
    pub commands: Commands,
    /// Where the stages' attempts run: here, until a dispatcher is set; then on whichever
    /// worker takes them.
    pub remote: Remote,
    /// The most items any stage runs at once.
    pub concurrency: usize,
    /// The file's text as written: what a shared run keeps for its workers.
    pub source: String,
}

/// Every command of a pipeline, by stage and role.
pub type Commands = BTreeMap<(String, Role), Arc<Command>>;

/// Set once a run shares its attempts with workers: its handlers hand them to this dispatcher.
pub type Remote = Arc<OnceLock<Arc<Dispatcher>>>;

/// An alert channel that masks the file's secrets in the text of every alert it sends.
struct MaskedNotifier {
    inner: Arc<dyn Notifier>,
    secrets: Secrets,
}

impl Notifier for MaskedNotifier {
    fn notify<'a>(
        &'a self,
        alerts: &'a [Alert],
    ) -> self_healing::BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            if self.secrets.is_empty() {
                return self.inner.notify(alerts).await;
            }
            let clean: Vec<Alert> = alerts
                .iter()
                .map(|alert| Alert {
                    title: self.secrets.mask(&alert.title).into_owned(),
                    message: self.secrets.mask(&alert.message).into_owned(),
                    ..alert.clone()
                })
                .collect();
            self.inner.notify(&clean).await
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn min_severity(&self) -> Severity {
        self.inner.min_severity()
    }
}

/// The alert channels a project's file declared, as the store keeps them (`${NAME}`s
/// unsubstituted), built with the variables `lookup` gives: how `serve` reaches them. Secret
/// values are masked in what the channels send.
pub fn stored_channels(
    raw: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Arc<dyn Notifier>>, String> {
    let env = crate::env::Env::new(lookup);
    let configs: Vec<self_healing::alert::ChannelConfig> =
        serde::Deserialize::deserialize(crate::env::Substituting::new(raw.clone(), &env))
            .map_err(|e| e.to_string())?;
    let secrets = env.into_secrets();
    configs
        .iter()
        .map(|config| {
            let inner = config.build().map_err(|e| e.to_string())?;
            Ok(Arc::new(MaskedNotifier {
                inner,
                secrets: secrets.clone(),
            }) as Arc<dyn Notifier>)
        })
        .collect()
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("project", &self.project)
            .field("healer", &self.healer)
            .field("monitor", &self.monitor)
            .finish_non_exhaustive()
    }
}

/// Checks and builds a pipeline file. Every problem found is returned, each located in the file.
pub fn build(
    file: &PipelineFile,
    path: &Path,
    text: &str,
    secrets: &Secrets,
    project: Option<&str>,
    seed: Option<u64>,
) -> Result<Built, Vec<FileError>> {
    let base = folder_of(path);
    let mut errors = Vec::new();
    let mut fail = |key: String, message: String| {
        let (line, column) = locate(text, &key).map_or((None, None), |(l, c)| (Some(l), Some(c)));
        errors.push(FileError {
            file: path.to_owned(),
            line,
            column,
            path: Some(key),
            message,
        });
    };
    let mut from = |prefix: &str, error: InvalidConfig| {
        let key = if prefix.is_empty() {
            error.field().to_owned()
        } else {
            format!("{prefix}.{}", error.field())
        };
        fail(key, error.reason().to_owned());
    };

    let project: Arc<str> = project.unwrap_or(&file.project).into();
    if project.trim().is_empty() {
        from(
            "",
            InvalidConfig::new("project", "a pipeline needs a project name"),
        );
    }
    let healing = &file.healing;

    let metrics_config = healing.metrics_collector.clone().unwrap_or_default();
    let collector = metrics_config
        .build()
        .map_err(|e| from("healing.metricsCollector", e))
        .unwrap_or_default();
    let known_metrics = metrics_config.known_metrics();

    let retry = match &healing.retry_policy {
        Some(policy) => policy
            .build(&RetryPolicy::default())
            .map_err(|e| from("healing.retryPolicy", e))
            .unwrap_or_default(),
        None => RetryPolicy::default(),
    };
    let mut healer = AutoHealer::builder().enabled(healing.enabled);
    if healing.retry_policy.is_some() {
        // Given, the global policy retries its retryableErrors by itself.
        healer = healer.retry_policy(retry.clone());
    }
    if let Some(breaker) = &healing.circuit_breaker {
        match breaker.build() {
            Ok(Some(settings)) => healer = healer.circuit_breaker(settings),
            Ok(None) => {}
            Err(e) => from("healing.circuitBreaker", e),
        }
    }
    for (name, breaker) in &healing.breakers {
        match breaker.build() {
            Ok(Some(settings)) => healer = healer.shared_breaker(name.as_str(), settings),
            Ok(None) => from(
                &format!("healing.breakers.{name}"),
                InvalidConfig::new(
                    "enabled",
                    "a shared breaker cannot be disabled: take `breaker:` off its stages instead",
                ),
            ),
            Err(e) => from(&format!("healing.breakers.{name}"), e),
        }
    }
    if let Some(budget) = healing.budget {
        healer = healer.budget(budget.max_actions, budget.window);
    }
    if let Some(settings) = healing.retry_budget {
        match settings.validate() {
            Ok(()) => healer = healer.retry_budget(settings),
            Err(e) => from("healing.retryBudget", e),
        }
    }
    if let Some(interval) = healing.evaluation_interval {
        healer = healer.evaluation_interval(interval);
    }
    let stage_names: Vec<&str> = file.stages.iter().map(|s| s.name.as_str()).collect();
    for (i, strategy) in healing.strategies.iter().enumerate() {
        for stage in strategy.stages.iter().flatten() {
            if !stage_names.contains(&stage.as_str()) {
                from(
                    &format!("healing.strategies[{i}]"),
                    InvalidConfig::new(
                        "stages",
                        format!(
                            "no stage is named `{stage}`{} (the stages are {})",
                            self_healing::config::did_you_mean(stage, stage_names.iter().copied()),
                            stage_names.join(", ")
                        ),
                    ),
                );
            }
        }
        match strategy.build(&known_metrics) {
            Ok(strategy) => healer = healer.strategy(strategy),
            Err(e) => from(&format!("healing.strategies[{i}]"), e),
        }
    }
    if let Some(alerts) = &healing.alerts {
        if !alerts.thresholds.is_empty() && alerts.channels.is_empty() {
            from(
                "healing.alerts",
                InvalidConfig::new(
                    "thresholds",
                    "alert thresholds need a channel in `alerts.channels` to alert through",
                ),
            );
        }
        for (i, threshold) in alerts.thresholds.iter().enumerate() {
            let at = format!("healing.alerts.thresholds[{i}]");
            if !known_metrics.contains(&threshold.metric) {
                from(
                    &at,
                    InvalidConfig::new(
                        "metric",
                        format!("`{}` is not a known metric", threshold.metric),
                    ),
                );
                continue;
            }
            let threshold = AlertThreshold {
                metric: threshold.metric.as_str().into(),
                warning: threshold.warning,
                critical: threshold.critical,
            };
            match threshold.validate() {
                Ok(()) => healer = healer.threshold(threshold),
                Err(e) => from(&at, e),
            }
        }
        let mut alerting = Alerting::builder().rules(Rules {
            group_wait: alerts.group_wait.unwrap_or(Rules::default().group_wait),
            repeat_interval: alerts
                .repeat_interval
                .unwrap_or(Rules::default().repeat_interval),
        });
        let mut names: Vec<String> = Vec::new();
        for (i, channel) in alerts.channels.iter().enumerate() {
            let at = format!("healing.alerts.channels[{i}]");
            match channel.build() {
                Ok(notifier) if names.iter().any(|n| n == notifier.name()) => from(
                    &at,
                    InvalidConfig::new(
                        "name",
                        format!(
                            "another channel is named `{}`: give each a `name` of its own",
                            notifier.name()
                        ),
                    ),
                ),
                Ok(notifier) => {
                    names.push(notifier.name().to_owned());
                    alerting = alerting.channel(Arc::new(MaskedNotifier {
                        inner: notifier,
                        secrets: secrets.clone(),
                    }));
                }
                Err(e) => from(&at, e),
            }
        }
        healer = healer.alerting(alerting.build());
    }
    let healer = healer.build().map_err(|e| from("healing", e)).ok();

    let monitor_builder = healing.health_monitor.as_ref().map(|config| {
        let mut monitor = HealthMonitor::builder();
        if let Some(interval) = config.check_interval {
            monitor = monitor.check_interval(interval);
        }
        let thresholds = config.thresholds.unwrap_or(crate::file::ThresholdsFile {
            consecutive_failures: None,
            consecutive_successes: None,
        });
        monitor = monitor.thresholds(
            thresholds
                .consecutive_failures
                .or(config.consecutive_failures)
                .unwrap_or(3),
            thresholds
                .consecutive_successes
                .or(config.consecutive_successes)
                .unwrap_or(5),
        );
        for (i, check) in config.checks.iter().enumerate() {
            match check.build() {
                Ok(spec) => monitor = monitor.check(spec),
                Err(e) => from(&format!("healing.healthMonitor.checks[{i}]"), e),
            }
        }
        monitor
    });

    if file.stages.is_empty() {
        from(
            "",
            InvalidConfig::new("stages", "a pipeline needs at least one stage"),
        );
    }
    let mut builder = SelfHealingPipeline::builder()
        .name(Arc::clone(&project))
        .metrics(collector.clone());
    if let Some(seed) = seed {
        builder = builder.seed(seed);
    }
    if let Some(healer) = &healer {
        builder = healer.install(builder);
    }
    let command_metrics: Arc<[String]> = known_metrics.clone().into();
    let mut stages_ok = true;
    let remote = Remote::default();
    let mut commands = Commands::new();
    let on = Bound {
        base: &base,
        project: &project,
        secrets,
        global_retry: &retry,
        metrics: &command_metrics,
        remote: &remote,
    };
    let checks: Vec<&str> = healing
        .health_monitor
        .iter()
        .flat_map(|m| m.checks.iter().map(|c| c.name()))
        .collect();
    for (i, stage) in file.stages.iter().enumerate() {
        for (j, check) in stage.depends_on.iter().enumerate() {
            if !checks.contains(&check.as_str()) {
                from(
                    &format!("stages[{i}]"),
                    InvalidConfig::new(
                        format!("dependsOn[{j}]"),
                        no_such("check", check, &checks, "healing.healthMonitor.checks"),
                    ),
                );
            }
        }
        if let Some(breaker) = &stage.breaker
            && !healing.breakers.contains_key(breaker)
        {
            stages_ok = false;
            let known: Vec<&str> = healing.breakers.keys().map(String::as_str).collect();
            from(
                &format!("stages[{i}]"),
                InvalidConfig::new(
                    "breaker",
                    no_such("breaker", breaker, &known, "healing.breakers"),
                ),
            );
        }
        match stage_of(stage, &on, &mut commands) {
            Ok(stage) => builder = builder.stage(stage),
            Err(e) => {
                stages_ok = false;
                from(&format!("stages[{i}]"), e);
            }
        }
    }
    // With a stage or the healer missing, what the builder says about the rest would only
    // echo that.
    let pipeline = if stages_ok && healer.is_some() {
        builder.build().map_err(|e| from("", e)).ok()
    } else {
        None
    };
    // Health changes go on the pipeline's bus; the healer's health-check triggers read the
    // monitor.
    let monitor = match (monitor_builder, &pipeline) {
        (Some(monitor), Some(pipeline)) => monitor
            .events(pipeline.events().clone())
            .build()
            .map_err(|e| from("healing.healthMonitor", e))
            .ok(),
        _ => None,
    };
    if let (Some(monitor), Some(healer)) = (&monitor, &healer) {
        healer.watch(monitor);
    }

    errors.sort_by_key(|e| (e.line, e.column));
    match (errors.is_empty(), pipeline, healer) {
        (true, Some(pipeline), Some(healer)) => Ok(Built {
            project,
            pipeline,
            healer,
            monitor,
            secrets: secrets.clone(),
            alert_channels: None,
            commands,
            remote,
            concurrency: file
                .stages
                .iter()
                .map(|s| s.concurrency.unwrap_or(1))
                .max()
                .unwrap_or(1),
            source: text.to_owned(),
        }),
        _ => Err(errors),
    }
}

/// Why `name` names no `kind` of the file: the names it has (with a close one suggested), or
/// that `list`, where they would be, has none.
fn no_such(kind: &str, name: &str, known: &[&str], list: &str) -> String {
    if known.is_empty() {
        format!("no {kind} is named `{name}`: `{list}` has none")
    } else {
        format!(
            "no {kind} is named `{name}`{} (the {kind}s are {})",
            self_healing::config::did_you_mean(name, known.iter().copied()),
            known.join(", ")
        )
    }
}

/// The folder a pipeline file's relative paths (stage `workdir`s, `items` files, commands)
/// resolve from: the file's own, `.` for a bare name.
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// What every stage of a file is built with.
struct Bound<'a> {
    base: &'a Path,
    project: &'a Arc<str>,
    secrets: &'a Secrets,
    global_retry: &'a RetryPolicy,
    metrics: &'a Arc<[String]>,
    remote: &'a Remote,
}

/// One stage of the file as the pipeline runs it; its commands go into `commands`.
fn stage_of(
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
        remote,
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
    ) -> impl Fn(
        self_healing::StageContext<()>,
    ) -> self_healing::BoxFuture<'static, Result<(), StageError>>
    + Send
    + Sync
    + 'static {
        move |ctx| {
            let (cmd, project, remote) =
                (Arc::clone(&cmd), Arc::clone(&project), Arc::clone(&remote));
            Box::pin(async move {
                let context = Context {
                    project: &project,
                    run: ctx.run_id().as_str(),
                    stage: ctx.stage(),
                    attempt: ctx.attempt(),
                    item: None,
                    idempotency_key: None,
                };
                attempt(&cmd, role, &remote, &ctx, &context).await
            })
        }
    }
    fn run_item(
        cmd: Arc<Command>,
        role: Role,
        project: Arc<str>,
        remote: Remote,
    ) -> impl Fn(
        self_healing::ItemContext<(), String>,
    ) -> self_healing::BoxFuture<'static, Result<(), StageError>>
    + Send
    + Sync
    + 'static {
        move |ctx| {
            let (cmd, project, remote) =
                (Arc::clone(&cmd), Arc::clone(&project), Arc::clone(&remote));
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
                attempt(&cmd, role, &remote, &ctx, &context).await
            })
        }
    }
    let single = |cmd: Arc<Command>, role: Role| {
        run_single(cmd, role, Arc::clone(project), Arc::clone(remote))
    };
    let each = |cmd: Arc<Command>, role: Role| {
        run_item(cmd, role, Arc::clone(project), Arc::clone(remote))
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

/// Runs `cmd` for one attempt: here, or, once the run shares its work, on whichever worker
/// takes the job; the job's metric lines and log reach the attempt as if it had run here.
async fn attempt(
    cmd: &Command,
    role: Role,
    remote: &Remote,
    stage: &self_healing::StageContext<()>,
    ctx: &Context<'_>,
) -> Result<(), StageError> {
    let Some(dispatcher) = remote.get() else {
        return cmd.run(stage, ctx).await;
    };
    let result = dispatcher
        .dispatch(Attempt {
            stage: ctx.stage,
            item: ctx.item,
            key: ctx.idempotency_key,
            attempt: ctx.attempt,
            role,
        })
        .await?;
    for (metric, value) in &result.metrics {
        stage.record(metric, *value);
    }
    stage.attach_output(result.output);
    result.error.map_or(Ok(()), Err)
}

/// Items from a file, one per line, read as the stage pulls them. Blank lines and lines
/// starting with `#` are skipped.
fn file_items(path: PathBuf) -> ItemSource<(), String> {
    ItemSource::stream(move |_: &()| {
        let path = path.clone();
        futures_util::stream::unfold(
            None,
            move |lines: Option<tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>>| {
                let path = path.clone();
                async move {
                    let mut lines = match lines {
                        Some(lines) => lines,
                        None => match tokio::fs::File::open(&path).await {
                            Ok(file) => tokio::io::BufReader::new(file).lines(),
                            Err(e) => {
                                let error =
                                    StageError::new(format!("items file {}: {e}", path.display()));
                                return Some((Err(error), None));
                            }
                        },
                    };
                    loop {
                        match lines.next_line().await {
                            Ok(Some(line)) => {
                                let item = line.trim();
                                if item.is_empty() || item.starts_with('#') {
                                    continue;
                                }
                                return Some((Ok(item.to_owned()), Some(lines)));
                            }
                            Ok(None) => return None,
                            Err(e) => {
                                let error =
                                    StageError::new(format!("items file {}: {e}", path.display()));
                                return Some((Err(error), None));
                            }
                        }
                    }
                }
            },
        )
    })
}

/// Items from a glob, as paths relative to the pipeline file's folder, in sorted order. The
/// folder's own path is matched literally, whatever characters it holds (`[`, `*`, `?`).
fn glob_items(base: &Path, pattern: &str) -> Result<ItemSource<(), String>, InvalidConfig> {
    glob::Pattern::new(pattern)
        .map_err(|e| InvalidConfig::new("items.glob", format!("`{pattern}`: {e}")))?;
    let base = base.to_owned();
    let full = Path::new(&glob::Pattern::escape(&base.to_string_lossy()))
        .join(pattern)
        .to_string_lossy()
        .into_owned();
    Ok(ItemSource::stream(move |_: &()| {
        let base = base.clone();
        let paths: Box<dyn Iterator<Item = Result<String, StageError>> + Send> =
            match glob::glob(&full) {
                Ok(paths) => Box::new(paths.map(move |entry| {
                    entry
                        .map(|path| {
                            path.strip_prefix(&base)
                                .unwrap_or(&path)
                                .to_string_lossy()
                                .into_owned()
                        })
                        .map_err(|e| StageError::new(format!("glob: {e}")))
                })),
                Err(e) => Box::new(std::iter::once(Err(StageError::new(format!(
                    "items.glob `{full}`: {e}"
                ))))),
            };
        futures_util::stream::iter(paths)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(base: &Path, pattern: &str) -> Vec<String> {
        let source = glob_items(base, pattern).unwrap();
        let stage = Stage::for_each("s", source, |_| async { Ok(()) });
        let pipeline = SelfHealingPipeline::builder().stage(stage).build().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        pipeline
            .events()
            .add_sink(std::sync::Arc::new(move |e: &self_healing::Event| {
                if let self_healing::EventKind::ItemSucceeded { item, .. } = &e.kind {
                    sink.lock().unwrap().push(item.to_string());
                }
            }));
        assert!(pipeline.execute(()).await.is_success());
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        seen
    }

    #[tokio::test]
    async fn a_glob_under_a_folder_with_pattern_characters_matches_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        for odd in ["legacy [v2]", "what?", "all*", "x[", "plain"] {
            let base = dir.path().join(odd);
            std::fs::create_dir_all(base.join("src")).unwrap();
            std::fs::write(base.join("src/a.cbl"), "").unwrap();
            std::fs::write(base.join("src/b.cbl"), "").unwrap();
            std::fs::write(base.join("src/c.txt"), "").unwrap();
        }
        // A sibling the unescaped pattern `legacy [v2]` would match (`legacy 2`).
        std::fs::create_dir_all(dir.path().join("legacy 2/src")).unwrap();
        std::fs::write(dir.path().join("legacy 2/src/z.cbl"), "").unwrap();
        for odd in ["legacy [v2]", "what?", "all*", "x[", "plain"] {
            assert_eq!(
                items(&dir.path().join(odd), "src/*.cbl").await,
                ["src/a.cbl", "src/b.cbl"],
                "{odd}"
            );
        }
    }
}
