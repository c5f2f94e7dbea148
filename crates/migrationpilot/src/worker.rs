//! A worker: claims jobs from the work queue (as many as it has room for, in one statement),
//! runs each with the command the run's file names, from its own `--workdir` and with `${NAME}`
//! taken from its own environment, and records what came of them in batches. It renews its
//! lease on the jobs it runs; a job it no longer holds (cancelled by the run, or taken by
//! another worker after its lease ran out) is stopped, its process group killed.
//!
//! `migrationpilot worker` runs one until Ctrl-C; a coordinating `run` on a shared store runs
//! one for its own run's jobs, unless told not to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self_healing::StageError;

use crate::build::{self, Commands};
use crate::command::Context;
use crate::file;
use crate::store::Store;
use crate::store::work::{Filter, Job, JobResult, POLL, Topic, WorkQueue};

/// How long a worker holds a job without renewing its lease: a worker killed or cut off
/// gives its jobs back after this.
pub const LEASE: Duration = Duration::from_secs(30);

/// The longest a worker goes without renewing its leases.
pub const RENEW_AT_LEAST: Duration = Duration::from_secs(1);

/// What a worker is told.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in the queue (`host:pid` by default).
    pub name: String,
    /// Which jobs it takes.
    pub filter: Filter,
    /// How many jobs it runs at once.
    pub concurrency: usize,
    /// Where the runs' files are read from and their commands run (the same checkout on every
    /// machine).
    pub workdir: PathBuf,
    /// How long its lease on a job lasts unrenewed.
    pub lease: Duration,
    /// Print a line per job finished.
    pub verbose: bool,
}

/// What a worker did, when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Worked {
    /// Jobs run to their end.
    pub finished: u64,
    /// Jobs among them that failed.
    pub failed: u64,
    /// Jobs stopped because the worker no longer held them.
    pub stopped: u64,
}

/// The commands of a run's file as this worker built them.
type Built = Arc<Commands>;

/// The most runs' files a worker keeps built; past it, it builds them again as needed.
const FILES_KEPT: usize = 64;

/// Runs jobs until `stop` is cancelled, then lets the jobs in flight finish and records them.
pub async fn work(
    store: Arc<dyn Store>,
    options: WorkerOptions,
    stop: CancellationToken,
) -> Result<Worked, String> {
    let queue = store
        .work_queue()
        .ok_or("workers need a store several machines share: --store postgres://…")?;
    let mut queued = queue.notifications(Topic::Queued).await.ok();
    let mut running: JoinSet<Option<JobResult>> = JoinSet::new();
    // Each task's job, and the jobs held: running, or finished with the result not recorded
    // yet (their leases are renewed until it is, so no other worker runs them again).
    let mut tasks: HashMap<tokio::task::Id, i64> = HashMap::new();
    let mut held: HashMap<i64, CancellationToken> = HashMap::new();
    let mut files: HashMap<(String, String), Built> = HashMap::new();
    let mut done: Vec<(i64, JobResult)> = Vec::new();
    let mut worked = Worked::default();
    let mut reported = 0;
    // Renewals also tell a worker which of its jobs were cancelled (a restart, a timeout, a
    // rollback): at least every second, so it stops them within one.
    let mut renew = tokio::time::interval((options.lease / 3).min(RENEW_AT_LEAST));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claim_now = true;
    loop {
        // Results go in and new jobs come out side by side: one round trip's wait, not two.
        let room = options.concurrency.saturating_sub(running.len());
        let claiming = claim_now && room > 0 && !stop.is_cancelled();
        let (finished, claimed) = tokio::join!(
            async {
                if done.is_empty() {
                    Ok(())
                } else {
                    queue.finish_jobs(&options.name, &done).await
                }
            },
            async {
                if claiming {
                    Some(
                        queue
                            .claim_jobs(&options.name, &options.filter, room, options.lease)
                            .await,
                    )
                } else {
                    None
                }
            }
        );
        match finished {
            Ok(()) => {
                for (id, _) in done.drain(..) {
                    held.remove(&id);
                }
            }
            // Kept, and recorded with the next ones; their leases are renewed meanwhile.
            Err(error) => eprintln!("  ! results could not be recorded: {error}"),
        }
        if claiming {
            claim_now = false;
        }
        match claimed {
            Some(Ok(jobs)) => {
                // A full batch may mean more are waiting.
                claim_now = jobs.len() == room;
                for job in jobs {
                    // Its own job, taken again after its lease ran out while renewals failed:
                    // it is running here already.
                    if held.contains_key(&job.id) {
                        continue;
                    }
                    let place = (job.job.run.clone(), job.file.clone());
                    let built = match files.get(&place) {
                        Some(built) => Ok(Arc::clone(built)),
                        None => match commands_of(queue, &job, &options.workdir).await {
                            Ok(built) => {
                                if files.len() >= FILES_KEPT {
                                    files.clear();
                                }
                                let built = Arc::new(built);
                                files.insert(place, Arc::clone(&built));
                                Ok(built)
                            }
                            // Not kept: the next job of the run tries again.
                            Err(why) => {
                                eprintln!("  ! run {}: {why}", job.job.run);
                                Err(why)
                            }
                        },
                    };
                    let token = CancellationToken::new();
                    held.insert(job.id, token.clone());
                    let id = job.id;
                    let task = running.spawn(run_job(built, job, options.name.clone(), token));
                    tasks.insert(task.id(), id);
                }
            }
            Some(Err(error)) => eprintln!("  ! jobs could not be claimed: {error}"),
            None => {}
        }
        if stop.is_cancelled() && running.is_empty() && done.is_empty() {
            break;
        }
        if options.verbose && worked.finished >= reported + 100 {
            reported = worked.finished;
            eprintln!("worker {}: {} job(s) done", options.name, worked.finished);
        }
        tokio::select! {
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                let mut finish = |joined: Result<(tokio::task::Id, Option<JobResult>), tokio::task::JoinError>| {
                    let (task, result) = match joined {
                        Ok((task, result)) => (task, result),
                        // A job whose task panicked is given up (its run retries or fails it
                        // when its lease runs out: it is no longer renewed).
                        Err(error) => (error.id(), None),
                    };
                    let Some(id) = tasks.remove(&task) else { return };
                    match result {
                        Some(result) => {
                            worked.finished += 1;
                            worked.failed += u64::from(result.error.is_some());
                            done.push((id, result));
                        }
                        None => {
                            held.remove(&id);
                            worked.stopped += 1;
                        }
                    }
                };
                finish(joined);
                while let Some(joined) = running.try_join_next_with_id() {
                    finish(joined);
                }
                claim_now = true;
            }
            note = next_note(&mut queued) => {
                if note.is_none() {
                    queued = None;
                }
                claim_now = true;
            }
            _ = poll.tick() => {
                claim_now = true;
                if queued.is_none() {
                    queued = queue.notifications(Topic::Queued).await.ok();
                }
            }
            _ = renew.tick(), if !held.is_empty() => {
                let ids: Vec<i64> = held.keys().copied().collect();
                match queue.renew_jobs(&options.name, &ids, options.lease).await {
                    Ok(lost) => for id in lost {
                        if let Some(token) = held.get(&id) {
                            token.cancel();
                        }
                    },
                    Err(error) => eprintln!("  ! leases could not be renewed: {error}"),
                }
            }
            () = stop.cancelled(), if !stop.is_cancelled() => {}
        }
    }
    Ok(worked)
}

/// The next notification, or never when there is no stream.
async fn next_note(
    stream: &mut Option<futures_util::stream::BoxStream<'static, ()>>,
) -> Option<()> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Builds the commands of the file `job`'s run runs, as this worker reads it.
async fn commands_of(queue: &dyn WorkQueue, job: &Job, workdir: &Path) -> Result<Commands, String> {
    let (file, _) = queue
        .run_file(&job.job.run)
        .await
        .map_err(|e| format!("its file cannot be read: {e}"))?
        .ok_or("its coordinator kept no file")?;
    let path = workdir.join(&file.name);
    let format = file::Format::of(&path)
        .ok_or_else(|| format!("`{}` is not a pipeline file's name", file.name))?;
    let loaded = file::parse(&path, file.text, format, &|name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    build::build(
        &loaded.file,
        &path,
        &loaded.text,
        &loaded.secrets,
        Some(&file.project),
        None,
        None,
    )
    .map(|built| built.commands)
    .map_err(|errors| {
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        loaded.secrets.mask(&text).into_owned()
    })
}

/// Runs one job to its end; `None` when it was stopped first.
async fn run_job(
    built: Result<Built, String>,
    job: Job,
    worker: String,
    stop: CancellationToken,
) -> Option<JobResult> {
    let failed = |why: String| JobResult {
        worker: worker.clone(),
        error: Some(StageError::new(why)),
        ..JobResult::default()
    };
    let new = &job.job;
    let commands = match built {
        Ok(commands) => commands,
        Err(why) => {
            return Some(failed(format!(
                "worker {worker} cannot build the run's file: {why}"
            )));
        }
    };
    let Some(command) = commands.get(&(new.stage.clone(), new.role)) else {
        return Some(failed(format!(
            "the run's file, as worker {worker} reads it, has no {} for stage `{}`",
            new.role.as_str(),
            new.stage
        )));
    };
    let context = Context {
        project: &new.project,
        run: &new.run,
        stage: &new.stage,
        attempt: new.attempt,
        item: new.item.as_deref(),
        idempotency_key: new.key.as_deref(),
    };
    let mut metrics = Vec::new();
    let mut on_metric = |metric: &str, value| metrics.push((metric.to_owned(), value));
    let executed = tokio::select! {
        executed = command.execute(&context, &mut on_metric) => Some(executed),
        () = stop.cancelled() => None,
    };
    executed.map(|(result, output)| JobResult {
        worker: worker.clone(),
        error: result.err(),
        output,
        metrics,
    })
}
