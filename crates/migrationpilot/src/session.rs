//! A session: one pipeline file run against one store, wired once. It opens the store, takes
//! the steering already set, journals every event, prints progress, polls for operators'
//! requests, runs the health monitor and turns Ctrl-C into a cancellation. `run`, `serve` and
//! workers build on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self_healing::alert::{RUN_LOST, fingerprint};
use self_healing::event::{EventKind, RunId};
use self_healing::export::PrometheusExporter;
use self_healing::health::HealthMonitor;
use self_healing::pipeline::Resume;
use self_healing::{RunOptions, RunReport};

use crate::build::{self, Built};
use crate::control::Steering;
use crate::dispatch::Dispatcher;
use crate::error::CliError;
use crate::inject::Chaos;
use crate::secrets::Secrets;
use crate::store::work::{Filter, RunFile};
use crate::store::{self, CheckSeen, DeclaredCheck, Owner, RunClaim, RunRow, Store, StoreOutbox};
use crate::worker::{self, Worked, WorkerOptions};
use crate::{file, journal, progress, project_alerts, serve};

/// Opens the store `url` names, or the default one, as `access` allows.
pub async fn open_store(
    url: Option<String>,
    access: store::Access,
) -> Result<Arc<dyn Store>, CliError> {
    let url = url.or_else(store::default_url).ok_or_else(|| {
        CliError::Invalid("no store: give --store sqlite://PATH (HOME is not set)".to_owned())
    })?;
    store::open_with(&url, access).await.map_err(|e| match e {
        store::StoreError::Unusable(why) => CliError::Invalid(why),
        e => CliError::Failed(format!(
            "cannot open the store {}: {e}",
            self_healing::health::redact_url(&url)
        )),
    })
}

/// Loads and builds a pipeline file, with `chaos`'s faults injected if given. Every problem
/// found is printed to standard error, each with its file, line, column and key.
pub fn load(
    path: &Path,
    project: Option<&str>,
    seed: Option<u64>,
    chaos: Option<&Arc<Chaos>>,
) -> Result<Built, CliError> {
    let loaded = file::load(path)?;
    let mut built = build::build(
        &loaded.file,
        path,
        &loaded.text,
        &loaded.secrets,
        project,
        seed,
        chaos,
    )
    .map_err(|errors| file_errors(path, &errors, &loaded.secrets))?;
    built.alert_settings = loaded.alert_settings;
    Ok(built)
}

/// Prints each of a file's problems to standard error, with its file, line, column and key and
/// the file's secrets masked; the error that ends the command.
pub fn file_errors(path: &Path, errors: &[file::FileError], secrets: &Secrets) -> CliError {
    for error in errors {
        crate::terminal::eprint_line(format_args!("{}", secrets.mask(&error.to_string())));
    }
    CliError::File {
        path: path.display().to_string(),
        count: errors.len(),
    }
}

/// How long a run's end waits for alert deliveries in flight before leaving them owed.
pub const ALERT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits for Ctrl-C or, on Unix, SIGTERM; `false` if no signal can be waited for.
pub async fn terminated() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                interrupted = tokio::signal::ctrl_c() => interrupted.is_ok(),
                _ = term.recv() => true,
            };
        }
    }
    tokio::signal::ctrl_c().await.is_ok()
}

/// What `run` asks of a session.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// The pipeline file to run.
    pub file: PathBuf,
    /// Run under this project name instead of the file's.
    pub project: Option<String>,
    /// Continue the project's latest unfinished run.
    pub resume: bool,
    /// Print every committed event as one JSON object per line instead of progress.
    pub json_events: bool,
    /// Seeds retry jitter.
    pub seed: Option<u64>,
    /// On a shared store, leave every item to workers.
    pub no_work: bool,
    /// Secrets of this process besides the file's (the steering token), masked as theirs.
    pub secrets: Secrets,
    /// `--chaos` faults to inject, as written.
    pub chaos: Vec<String>,
}

/// A pipeline file built and bound to a store, ready to run.
pub struct Session {
    /// This process, as the store knows the owner of the run.
    owner: Owner,
    /// The project name the run is recorded under.
    pub project: Arc<str>,
    /// The store the run is journaled in and steered through.
    pub store: Arc<dyn Store>,
    /// What the file built: pipeline, healer and health monitor.
    pub built: Built,
    /// The faults `--chaos` injects, if any.
    chaos: Option<Arc<Chaos>>,
    request: RunRequest,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("project", &self.project)
            .field("built", &self.built)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Builds the file, then opens the store: a file with mistakes never touches it.
    pub async fn open(store_url: Option<String>, request: RunRequest) -> Result<Self, CliError> {
        let chaos = Chaos::new(&request.chaos, request.seed)
            .map_err(|e| CliError::Invalid(format!("--chaos: {e}")))?;
        let mut built = load(
            &request.file,
            request.project.as_deref(),
            request.seed,
            chaos.as_ref(),
        )?;
        if let Some(chaos) = &chaos {
            let stages: Vec<&str> = built.pipeline.stage_names().collect();
            let checks: Vec<String> = built
                .monitor
                .as_ref()
                .map(|m| m.report().into_iter().map(|c| c.name.to_string()).collect())
                .unwrap_or_default();
            let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
            let wrong = chaos.unknown_names(&stages, &checks);
            if !wrong.is_empty() {
                return Err(CliError::Invalid(wrong.join("\n")));
            }
        }
        built.secrets.extend(&request.secrets);
        let store = open_store(store_url, store::Access::Create).await?;
        Ok(Session {
            owner: Owner::this_process(),
            project: Arc::clone(&built.project),
            store,
            built,
            chaos,
            request,
        })
    }

    /// The run to start: a fresh id, or the unfinished run to resume and what it did; and the
    /// project's latest run when a fresh one starts while it is lost. Refused when a run of the
    /// project is still alive, here or on another machine.
    async fn run_to_start(&self) -> Result<(RunId, Option<Arc<Resume>>, Option<RunRow>), CliError> {
        let now = store::millis(std::time::SystemTime::now());
        let mut lost = None;
        let (run, resume) = if self.request.resume {
            let Some(unfinished) = self.store.unfinished_run(&self.project).await? else {
                return Err(CliError::Invalid(format!(
                    "project `{}` has no unfinished run to resume: its latest run ended, or it has none",
                    self.project
                )));
            };
            if unfinished.is_alive(now) {
                return Err(live_run(&self.project, &unfinished, now));
            }
            let run = RunId::new(unfinished.id);
            let resume = self.store.resume(&run).await?;
            if !self.request.json_events {
                match resume.rollback() {
                    Some((stage, _)) => crate::terminal::print_line(format_args!(
                        "resuming {run} as a rollback (stage `{stage}` failed): compensating what is left"
                    )),
                    None => crate::terminal::print_line(format_args!(
                        "resuming {run}: {} stage(s) and {} item(s) already completed",
                        resume.stages_completed(),
                        resume.all_items_completed()
                    )),
                }
            }
            (run, Some(Arc::new(resume)))
        } else {
            lost = project_alerts::lost_run(&*self.store, &self.project).await?;
            // Always a fresh id, whatever `--seed` says: it seeds jitter, never identities.
            (RunId::new(format!("run-{:016x}", fastrand::u64(..))), None)
        };
        let built = &self.built;
        let claim = RunClaim {
            project: self.project.to_string(),
            run: run.to_string(),
            resuming: resume.is_some(),
            pipeline: built.pipeline.name().to_owned(),
            owner: self.owner.clone(),
            stages: built.pipeline.stage_names().map(str::to_owned).collect(),
            strategies: built
                .healer
                .strategies()
                .iter()
                .map(|s| s.name().to_owned())
                .collect(),
            checks: built
                .monitor
                .as_ref()
                .map(|m| {
                    m.report()
                        .into_iter()
                        .map(|c| DeclaredCheck {
                            name: c.name.to_string(),
                            stage: c.stage.as_deref().map(str::to_owned),
                            target: built.secrets.mask(&c.target).into_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        if let Some(live) = self.store.claim_run(&claim).await? {
            return Err(live_run(&self.project, &live, now));
        }
        Ok((run, resume, lost))
    }

    /// Runs the pipeline to its end and returns its report once every event is journaled.
    /// With `listen`, serves the HTTP API beside the run, `/metrics` fed by the run's bus,
    /// until the run ends.
    pub async fn run(self, listen: Option<serve::Bound>) -> Result<RunReport, CliError> {
        let (run_id, resume, lost) = self.run_to_start().await?;
        let own_worker = self.share(&run_id).await?;
        let Built {
            pipeline,
            healer,
            monitor,
            secrets,
            ..
        } = self.built;
        // Alerts are kept in the store: those an earlier run left firing can resolve, and
        // what it left undelivered goes out now.
        let alerting = healer.alerts().clone();
        alerting.keep_in(Arc::new(StoreOutbox::new(
            Arc::clone(&self.store),
            Some(&self.project),
            secrets.clone(),
        )));
        // The alert settings as written, or none: `serve` delivers what is owed through their
        // channels, and raises `run-lost` as they say.
        let settings = self
            .built
            .alert_settings
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        self.store
            .set_alert_settings(&self.project, &settings)
            .await?;
        if let Err(error) = alerting.restore(&self.project).await {
            crate::terminal::eprint_line(format_args!(
                "  ! alerts earlier runs left firing could not be read: {error}"
            ));
        }
        // A resume ends the run's being lost; a fresh run tells of the one it leaves lost,
        // unless `serve` did already.
        if resume.is_some() {
            let lost = fingerprint(&self.project, None, RUN_LOST);
            alerting.resolve(&format!("{lost}/{run_id}"), None);
        } else if let Some(alert) = lost
            .as_ref()
            .and_then(|run| project_alerts::run_lost(run, &alerting.builtins().run_lost))
            && self.store.raise_once(&alert).await?
        {
            alerting.fire(alert);
        }
        // Steering set while nothing ran applies from the start.
        let mut steering = Steering::new(
            Arc::clone(&self.store),
            Arc::clone(&self.project),
            healer,
            run_id.clone(),
        );
        steering.sync().await?;

        let pipeline = Arc::new(pipeline);
        let cancel = CancellationToken::new();
        let stop_serving = CancellationToken::new();
        let server = match listen {
            Some(bound) => {
                let exporter = PrometheusExporter::builder()
                    .build()
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                exporter.attach(pipeline.events(), &self.project);
                Some(tokio::spawn(bound.serve(
                    Arc::clone(&self.store),
                    serve::Figures::Live(exporter),
                    stop_serving.clone(),
                )))
            }
            None => None,
        };
        let finish_journal = CancellationToken::new();
        let (journal, committed) = journal::spawn(
            Arc::clone(&self.store),
            Arc::clone(&self.project),
            journal::subscribe(pipeline.events(), self.request.json_events),
            secrets.clone(),
            cancel.clone(),
            finish_journal.clone(),
        );
        // What an earlier process left owed goes out now, its outcomes journaled.
        alerting.report_to(pipeline.events(), None);
        alerting.deliver_owed().await;
        let printer = tokio::spawn(progress::print(
            committed,
            progress::Output::choose(self.request.json_events),
        ));
        let poller = tokio::spawn(steering.poll());
        if let Some(monitor) = &monitor {
            monitor.start();
        }
        let lease = tokio::spawn(keep_alive(
            Arc::clone(&self.store),
            Arc::clone(&self.project),
            run_id.clone(),
            self.owner.clone(),
            monitor.clone(),
            secrets.clone(),
        ));
        let on_signal = cancel.clone();
        let signals = tokio::spawn(async move {
            if terminated().await {
                crate::terminal::eprint_line(format_args!(
                    "\ncancelling: nothing new starts, work in flight gets its grace period; `run --resume` continues"
                ));
                on_signal.cancel();
            }
        });
        if let Some(chaos) = &self.chaos {
            // Journaled with the run: whoever reads it later knows its faults and seed.
            chaos.begin();
            pipeline.events().publish(
                Some(&run_id),
                EventKind::ChaosInjecting {
                    faults: chaos.faults().iter().map(ToString::to_string).collect(),
                    seed: chaos.seed(),
                },
            );
        }
        let report = pipeline
            .execute_with(
                (),
                RunOptions {
                    run_id: Some(run_id),
                    cancel,
                    resume,
                },
            )
            .await;
        if let Some(monitor) = &monitor {
            monitor.stop();
        }
        // Nothing waits for the run's jobs any more: those left (an attempt given up, a
        // cancelled run) are cancelled, so no worker runs them later, and the run's own worker
        // is stopped, its processes killed.
        if let Some(queue) = self.store.work_queue()
            && let Err(error) = queue.cancel_run_jobs(report.run_id.as_str()).await
        {
            crate::terminal::eprint_line(format_args!(
                "  ! the run's unfinished jobs could not be cancelled: {error}"
            ));
        }
        if let Some(worker) = own_worker {
            worker.abort();
        }
        poller.abort();
        signals.abort();
        // Alerts still gathering go out now; a dead or slow channel gets a short grace, and
        // what it has not taken stays owed in the store for the next start. Their outcomes are
        // journaled with the run's last events.
        let going = alerting.settle(ALERT_GRACE).await;
        if going > 0 {
            crate::terminal::eprint_line(format_args!(
                "  ! {going} alert delivery(ies) unfinished: what was not delivered goes out on the next start"
            ));
        }
        finish_journal.cancel();
        let journaled = journal
            .await
            .unwrap_or_else(|e| Err(format!("the journal writer failed: {e}")));
        let _ = printer.await;
        lease.abort();
        stop_serving.cancel();
        if let Some(server) = server {
            match server.await {
                Ok(Err(error)) => crate::terminal::eprint_line(format_args!("  ! {error}")),
                Err(error) => crate::terminal::eprint_line(format_args!(
                    "  ! the HTTP server failed: {error}"
                )),
                Ok(Ok(())) => {}
            }
        }
        journaled.map_err(CliError::Failed)?;
        self.store
            .record_metrics(report.run_id.as_str(), &report.metrics)
            .await?;
        // Its errors, items and codes, as everything else shown.
        Ok(secrets.mask_value(report))
    }

    /// On a shared store, makes the run's attempts jobs any worker may take: keeps the file
    /// for the workers, cancels what an earlier coordinator of the run left queued, and,
    /// unless told not to, starts this process's own worker on the run's jobs.
    async fn share(
        &self,
        run: &RunId,
    ) -> Result<Option<tokio::task::JoinHandle<Result<Worked, String>>>, CliError> {
        let (Some(queue), Some(dispatcher)) = (
            self.store.work_queue(),
            Dispatcher::start(&self.store, run.as_str(), &self.project),
        ) else {
            return Ok(None);
        };
        // A run taken over: its earlier coordinator's jobs have no one waiting for them.
        queue.cancel_run_jobs(run.as_str()).await?;
        let name = self
            .request
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        queue
            .keep_file(
                run.as_str(),
                &RunFile {
                    project: self.project.to_string(),
                    name,
                    text: self.built.source.clone(),
                },
            )
            .await?;
        let _ = self.built.remote.set(dispatcher);
        if self.request.no_work {
            if !self.request.json_events {
                crate::terminal::print_line(format_args!(
                    "coordinating only: `migrationpilot worker` processes run the items"
                ));
            }
            return Ok(None);
        }
        let options = WorkerOptions {
            name: self.owner.to_string(),
            filter: Filter {
                projects: Vec::new(),
                run: Some(run.to_string()),
            },
            concurrency: self.built.concurrency,
            workdir: build::folder_of(&self.request.file),
            lease: worker::LEASE,
            verbose: false,
        };
        Ok(Some(tokio::spawn(worker::work(
            Arc::clone(&self.store),
            options,
            CancellationToken::new(),
        ))))
    }
}

/// The refusal to start while `live` still runs.
fn live_run(project: &str, live: &RunRow, now_ms: i64) -> CliError {
    let owner = live.owner.as_ref().map_or_else(
        || "an unknown process".to_owned(),
        |o| format!("process {o}"),
    );
    let seen = live
        .heartbeat_ms
        .map(|beat| format!(", alive {:.0}s ago", (now_ms - beat).max(0) as f64 / 1000.0))
        .unwrap_or_default();
    CliError::Invalid(format!(
        "project `{project}` has a live run: {} ({owner}{seen}); wait for it to end or stop it, then `run --resume` continues it",
        live.id
    ))
}

/// How often a run renews its lease and records what its checks found.
const BEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Renews the run's lease and records its checks' latest results, every [`BEAT`], until
/// aborted. A store that cannot be written is reported once when it starts failing.
async fn keep_alive(
    store: Arc<dyn Store>,
    project: Arc<str>,
    run: RunId,
    owner: Owner,
    monitor: Option<HealthMonitor>,
    secrets: Secrets,
) {
    let mut ticks = tokio::time::interval(BEAT);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let mut result = store.heartbeat(run.as_str(), &owner).await;
        if let (Ok(()), Some(monitor)) = (&result, &monitor) {
            let seen: Vec<CheckSeen> = monitor
                .report()
                .into_iter()
                .filter_map(|check| {
                    Some(CheckSeen {
                        checked_ms: store::millis(check.last_checked?),
                        name: check.name.to_string(),
                        status: check.status,
                        last_error: check.last_error.map(|e| secrets.mask(&e).into_owned()),
                    })
                })
                .collect();
            if !seen.is_empty() {
                result = store.checks_seen(&project, &seen).await;
            }
        }
        match (result, failing) {
            (Err(error), false) => {
                crate::terminal::eprint_line(format_args!(
                    "  ! the run's lease cannot be renewed: {error}"
                ));
                failing = true;
            }
            (Ok(()), true) => failing = false,
            _ => {}
        }
    }
}
