//! From a parsed pipeline file to the objects that run it, collecting every error.
//!
//! The file's `healing` section builds itself (`self_healing::config::HealingConfig`): the
//! healer, the collector and the health monitor. What is the binary's is wired here: each
//! stage's commands and items (`stage.rs`, `items.rs`), the names stages refer to across the
//! file (`dependsOn`, `breaker`), and the alert channels that mask the file's secrets
//! (`channels.rs`).

mod channels;
mod items;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use self_healing::InvalidConfig;
use self_healing::alert::Notifier;
use self_healing::classify::Classifier;
use self_healing::config::no_such;
use self_healing::healing::AutoHealer;
use self_healing::health::{Check, HealthMonitor};
use self_healing::pipeline::SelfHealingPipeline;

use crate::command::Command;
use crate::file::{FileError, PipelineFile, locate};
use crate::inject::Chaos;
use crate::secrets::Secrets;
use crate::store::work::Role;

use channels::MaskedNotifier;
pub use channels::{StoredAlerts, stored_alerts};
pub use stage::{Attempt, Runner};
use stage::{Bound, stage_of};

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
    /// The file's `healing.alerts` as written (`${NAME}`s unsubstituted), for the store.
    pub alert_settings: Option<serde_json::Value>,
    /// Every command of every stage, by stage and role: what a worker runs for a job.
    pub commands: Commands,
    /// Where the stages' attempts run: here, until a dispatcher is set; then on whichever
    /// worker takes them.
    pub remote: Remote,
    /// The most items any stage runs at once.
    pub concurrency: usize,
    /// The file's text as written: what a shared run keeps for its workers.
    pub source: String,
    /// What a failed command's output means: the file's `errors:`, then the built-in rules.
    pub classifier: Arc<Classifier>,
}

/// Every command of a pipeline, by stage and role.
pub type Commands = BTreeMap<(String, Role), Arc<Command>>;

/// Set once a run's attempts run elsewhere (on workers, or in a simulation): its handlers
/// hand them to this runner.
pub type Remote = Arc<OnceLock<Arc<dyn Runner>>>;

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
    chaos: Option<&Arc<Chaos>>,
) -> Result<Built, Vec<FileError>> {
    build_as(file, path, text, secrets, project, seed, World::Real(chaos))
}

/// What a build's stages, checks and channels reach.
#[derive(Clone, Copy)]
enum World<'a> {
    /// The real one: commands run, checks probe, alerts go out; with `run --chaos`'s faults
    /// injected, if any.
    Real(Option<&'a Arc<Chaos>>),
    /// A model: nothing runs, probes or sends.
    Modelled(&'a Modelled),
}

/// What each health check, by name, probes in a simulation.
pub type Probes = Arc<dyn Fn(&str) -> Arc<dyn Check> + Send + Sync>;

/// What a simulation puts in place of everything that reaches outside: the stages' attempts,
/// the health checks' probes and the alert channels.
pub struct Modelled {
    /// Runs every attempt of every stage (commands, failovers, rollbacks, resets).
    pub runner: Arc<dyn Runner>,
    /// What each health check of the file (by name) probes instead; it keeps its name,
    /// interval, timeout and stage.
    pub check: Probes,
    /// Where every alert goes instead of the file's channels.
    pub channel: Arc<dyn Notifier>,
}

impl std::fmt::Debug for Modelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modelled").finish_non_exhaustive()
    }
}

/// As [`build`], with every attempt, probe and alert going to `modelled`: the same pipeline,
/// healer and monitor a run gets, on which nothing runs, probes or sends.
pub fn build_modelled(
    file: &PipelineFile,
    path: &Path,
    text: &str,
    seed: Option<u64>,
    modelled: &Modelled,
) -> Result<Built, Vec<FileError>> {
    let built = build_as(
        file,
        path,
        text,
        &Secrets::default(),
        None,
        seed,
        World::Modelled(modelled),
    )?;
    let _ = built.remote.set(Arc::clone(&modelled.runner));
    Ok(built)
}

fn build_as(
    file: &PipelineFile,
    path: &Path,
    text: &str,
    secrets: &Secrets,
    project: Option<&str>,
    seed: Option<u64>,
    world: World<'_>,
) -> Result<Built, Vec<FileError>> {
    let base = folder_of(path);
    let mut errors = Vec::new();
    let mut from = |prefix: &str, error: InvalidConfig| {
        let key = if prefix.is_empty() {
            error.field().to_owned()
        } else {
            format!("{prefix}.{}", error.field())
        };
        let (line, column) = locate(text, &key).map_or((None, None), |(l, c)| (Some(l), Some(c)));
        errors.push(FileError {
            file: path.to_owned(),
            line,
            column,
            path: Some(key),
            message: error.reason().to_owned(),
        });
    };

    let project: Arc<str> = project.unwrap_or(&file.project).into();
    if project.trim().is_empty() {
        from(
            "",
            InvalidConfig::new("project", "a pipeline needs a project name"),
        );
    }
    let stage_names: Vec<&str> = file.stages.iter().map(|s| s.name.as_str()).collect();
    let (mut healing, problems) = file
        .healing
        .build_with(&stage_names, |channel| match world {
            World::Modelled(modelled) => Arc::clone(&modelled.channel),
            World::Real(_) => MaskedNotifier::wrap(channel, secrets.clone()),
        });
    if let Some(healing) = healing.as_mut() {
        match world {
            World::Modelled(modelled) => {
                healing.collector.without_process_metrics();
                healing.map_checks(|spec| {
                    let probe = (modelled.check)(spec.name());
                    spec.map_check(|_| probe)
                });
            }
            World::Real(Some(chaos)) => healing.map_checks(|spec| chaos.check(spec)),
            World::Real(None) => {}
        }
    }
    for problem in problems {
        from("healing", problem);
    }

    if file.stages.is_empty() {
        from(
            "",
            InvalidConfig::new("stages", "a pipeline needs at least one stage"),
        );
    }
    let mut builder = SelfHealingPipeline::builder().name(Arc::clone(&project));
    if let Some(seed) = seed {
        builder = builder.seed(seed);
    }
    let default_retry = self_healing::resilience::RetryPolicy::default();
    let (global_retry, metrics) = match &healing {
        Some(healing) => {
            builder = healing.install(builder);
            (&healing.retry_policy, healing.metrics.clone())
        }
        None => (&default_retry, Vec::new()),
    };
    let metrics: Arc<[String]> = metrics.into();
    let mut rules = Vec::new();
    for (i, rule) in file.errors.iter().enumerate() {
        match rule.build(i) {
            Ok(rule) => rules.push(rule),
            Err(e) => from(&format!("errors[{i}]"), e),
        }
    }
    let classifier = Arc::new(Classifier::with_rules(rules));
    let mut stages_ok = true;
    let remote = Remote::default();
    let mut commands = Commands::new();
    let on = Bound {
        base: &base,
        project: &project,
        secrets,
        global_retry,
        metrics: &metrics,
        classifier: &classifier,
        remote: &remote,
        chaos: match world {
            World::Real(chaos) => chaos,
            World::Modelled(_) => None,
        },
    };
    let checks = file.healing.check_names();
    let breakers: Vec<&str> = file.healing.breakers.keys().map(String::as_str).collect();
    for (i, stage) in file.stages.iter().enumerate() {
        let at = format!("stages[{i}]");
        for (j, check) in stage.depends_on.iter().enumerate() {
            if !checks.contains(&check.as_str()) {
                from(
                    &at,
                    InvalidConfig::new(
                        format!("dependsOn[{j}]"),
                        no_such("check", check, &checks, "healing.healthMonitor.checks"),
                    ),
                );
            }
        }
        if let Some(breaker) = &stage.breaker
            && !breakers.contains(&breaker.as_str())
        {
            stages_ok = false;
            from(
                &at,
                InvalidConfig::new(
                    "breaker",
                    no_such("breaker", breaker, &breakers, "healing.breakers"),
                ),
            );
        }
        match stage_of(stage, &on, &mut commands) {
            Ok(stage) => builder = builder.stage(stage),
            Err(e) => {
                stages_ok = false;
                from(&at, e);
            }
        }
    }
    // With a stage or the healing section missing, what the builder says about the rest would
    // only echo that.
    let built =
        match healing {
            Some(mut healing) if stages_ok => builder
                .build()
                .map_err(|e| from("", e))
                .ok()
                .and_then(|pipeline| {
                    // Health changes go on the pipeline's bus; the healer watches the monitor.
                    let monitor = healing
                        .monitor(&pipeline)
                        .map_err(|e| from("healing", e))
                        .ok()?;
                    Some((pipeline, healing.healer, monitor))
                }),
            _ => None,
        };

    errors.sort_by_key(|e| (e.line, e.column));
    match (errors.is_empty(), built) {
        (true, Some((pipeline, healer, monitor))) => Ok(Built {
            project,
            pipeline,
            healer,
            monitor,
            secrets: secrets.clone(),
            alert_settings: None,
            commands,
            remote,
            concurrency: file
                .stages
                .iter()
                .map(|s| s.concurrency.unwrap_or(1))
                .max()
                .unwrap_or(1),
            source: text.to_owned(),
            classifier,
        }),
        _ => Err(errors),
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
