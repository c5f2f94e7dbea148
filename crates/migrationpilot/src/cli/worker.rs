//! `worker`: takes items of runs from a shared store's work queue until stopped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use migrationpilot::error::{CliError, EXIT_CANCELLED};
use migrationpilot::session::{self, open_store};
use migrationpilot::store::Access;
use migrationpilot::store::Owner;
use migrationpilot::store::work::Filter;
use migrationpilot::worker::WorkerOptions;

use super::Outcome;
use super::args::parse_duration;

#[derive(Args)]
pub(super) struct WorkerArgs {
    /// Only this project's runs (repeatable; every project's when not given).
    #[arg(long)]
    project: Vec<String>,
    /// How many items to run at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Where the runs' pipeline files are read from and their commands run: the same
    /// checkout as the coordinating run's.
    #[arg(long, default_value = ".")]
    workdir: PathBuf,
    /// How long a job stays this worker's without a renewal: a worker killed or cut off
    /// gives its jobs back after this.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    lease: Duration,
    /// Its name in the queue and in job results (`host:pid` by default).
    #[arg(long)]
    name: Option<String>,
}

pub(super) async fn exec(store_url: Option<String>, args: WorkerArgs) -> Outcome {
    let options = WorkerOptions {
        name: args
            .name
            .unwrap_or_else(|| Owner::this_process().to_string()),
        filter: Filter {
            projects: args.project,
            run: None,
        },
        concurrency: args.concurrency,
        workdir: args.workdir,
        lease: args.lease,
        verbose: true,
    };
    if options.concurrency == 0 {
        return Err(CliError::Invalid(
            "--concurrency must be at least 1".to_owned(),
        ));
    }
    if options.lease < Duration::from_millis(300) {
        return Err(CliError::Invalid(
            "--lease must be at least 300ms".to_owned(),
        ));
    }
    if !options.workdir.is_dir() {
        return Err(CliError::Invalid(format!(
            "--workdir `{}` is not a directory",
            options.workdir.display()
        )));
    }
    let store = open_store(store_url, Access::Create).await?;
    if store.work_queue().is_none() {
        return Err(CliError::Invalid(
            "workers share runs through a PostgreSQL store: give --store postgres://…".to_owned(),
        ));
    }
    let projects = if options.filter.projects.is_empty() {
        "every project".to_owned()
    } else {
        options.filter.projects.join(", ")
    };
    say!(
        "worker {} taking items of {projects}, {} at a time, in {}; Ctrl-C stops it",
        options.name,
        options.concurrency,
        options.workdir.display()
    );
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if session::terminated().await {
            migrationpilot::terminal::eprint_line(format_args!(
                "\nstopping: the items in flight finish first (Ctrl-C again stops at once; their runs get them back when their leases run out)"
            ));
            on_signal.cancel();
            if session::terminated().await {
                std::process::exit(i32::from(EXIT_CANCELLED));
            }
        }
    });
    // Any live process on a shared store tells of runs nothing drives any more (`run-lost`),
    // and delivers what runs left owed.
    tokio::spawn(migrationpilot::project_alerts::keep_up(
        Arc::clone(&store),
        stop.clone(),
    ));
    let worked = migrationpilot::worker::work(store, options, stop)
        .await
        .map_err(CliError::Failed)?;
    say!(
        "worker stopped: {} item attempt(s) run, {} failed, {} stopped by their run",
        worked.finished,
        worked.failed,
        worked.stopped
    );
    Ok(ExitCode::SUCCESS)
}
