//! A session: one pipeline file run against one store, wired once. It opens the store, takes
//! the steering already set, journals every event, prints progress, polls for operators'
//! requests, runs the health monitor and turns Ctrl-C into a cancellation. `run`, `serve` and
//! workers build on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self_healing::event::RunId;
use self_healing::pipeline::Completed;
use self_healing::{RunOptions, RunReport};

use crate::build::{self, Built};
use crate::control::Steering;
use crate::error::CliError;
use crate::store::{self, Store};
use crate::{file, journal, progress};

/// Opens the store `url` names, or the default one.
pub async fn open_store(url: Option<String>) -> Result<Arc<dyn Store>, CliError> {
    let url = url.or_else(store::default_url).ok_or_else(|| {
        CliError::Invalid("no store: give --store sqlite://PATH (HOME is not set)".to_owned())
    })?;
    store::open(&url).await.map_err(|e| {
        CliError::Failed(format!(
            "cannot open the store {}: {e}",
            self_healing::health::redact_url(&url)
        ))
    })
}

/// Loads and builds a pipeline file. Every problem found is printed to standard error, each
/// with its file, line, column and key.
pub fn load(path: &Path, project: Option<&str>, seed: Option<u64>) -> Result<Built, CliError> {
    let loaded = file::load(path)?;
    build::build(&loaded.file, path, &loaded.text, project, seed).map_err(|errors| {
        for error in &errors {
            eprintln!("{error}");
        }
        CliError::File {
            path: path.display().to_string(),
            count: errors.len(),
        }
    })
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
    /// Seeds run ids and retry jitter.
    pub seed: Option<u64>,
}

/// A pipeline file built and bound to a store, ready to run.
pub struct Session {
    /// The project name the run is recorded under.
    pub project: Arc<str>,
    /// The store the run is journaled in and steered through.
    pub store: Arc<dyn Store>,
    /// What the file built: pipeline, healer and health monitor.
    pub built: Built,
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
        let built = load(&request.file, request.project.as_deref(), request.seed)?;
        let store = open_store(store_url).await?;
        Ok(Session {
            project: Arc::clone(&built.project),
            store,
            built,
            request,
        })
    }

    /// The run to start: a fresh id, or the unfinished run to resume and what it completed.
    async fn run_to_start(&self) -> Result<(RunId, Option<Arc<dyn Completed>>), CliError> {
        if !self.request.resume {
            let mut rng = self
                .request
                .seed
                .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
            return Ok((RunId::new(format!("run-{:016x}", rng.u64(..))), None));
        }
        let Some(unfinished) = self.store.unfinished_run(&self.project).await? else {
            return Err(CliError::Invalid(format!(
                "project `{}` has no unfinished run to resume",
                self.project
            )));
        };
        let run = RunId::new(unfinished.id);
        let completed = self.store.completed(&run).await?;
        if !self.request.json_events {
            println!(
                "resuming {run}: {} stage(s) and {} item(s) already completed",
                completed.stages.len(),
                completed.items.len()
            );
        }
        Ok((run, Some(Arc::new(completed))))
    }

    /// Runs the pipeline to its end and returns its report once every event is journaled.
    pub async fn run(self) -> Result<RunReport, CliError> {
        let (run_id, completed) = self.run_to_start().await?;
        let Built {
            pipeline,
            healer,
            monitor,
            ..
        } = self.built;
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
        let (journal, committed) = journal::spawn(
            Arc::clone(&self.store),
            Arc::clone(&self.project),
            pipeline
                .events()
                .subscribe_pacing(|_| true, journal::MAX_BACKLOG),
            cancel.clone(),
        );
        let printer = tokio::spawn(progress::print(
            committed,
            progress::Output::choose(self.request.json_events),
        ));
        let poller = tokio::spawn(steering.poll());
        if let Some(monitor) = &monitor {
            monitor.start();
        }
        let on_signal = cancel.clone();
        let signals = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ncancelling: nothing new starts, work in flight gets its grace period; `run --resume` continues"
                );
                on_signal.cancel();
            }
        });
        let report = pipeline
            .execute_with(
                (),
                RunOptions {
                    run_id: Some(run_id),
                    cancel,
                    completed,
                },
            )
            .await;
        if let Some(monitor) = &monitor {
            monitor.stop();
        }
        poller.abort();
        signals.abort();
        let journaled = journal
            .await
            .unwrap_or_else(|e| Err(format!("the journal writer failed: {e}")));
        let _ = printer.await;
        journaled.map_err(CliError::Failed)?;
        Ok(report)
    }
}
