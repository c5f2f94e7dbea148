//! `runs`: the store's runs, newest first, and `runs show RUN`: one run's stages and metrics.
//! A run whose process is gone shows as `lost`, not as the `running` its row still says.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use migrationpilot::control;
use migrationpilot::error::CliError;
use migrationpilot::session::open_store;
use migrationpilot::store::Access;
use migrationpilot::store::{self, RunRow, StageRow, iso8601};

use super::{Outcome, args, print_json};

/// A run as `--json` prints it: the row and whether a process still drives it, the shape of
/// the API's `Run`, so a script reads the same from either.
#[derive(Serialize)]
struct LiveRun<'a> {
    #[serde(flatten)]
    row: &'a RunRow,
    live: bool,
}

impl<'a> LiveRun<'a> {
    fn new(row: &'a RunRow, now_ms: i64) -> Self {
        LiveRun {
            row,
            live: row.is_alive(now_ms),
        }
    }
}

/// `runs show --json`: the API's `RunDetail`.
#[derive(Serialize)]
struct LiveRunDetail<'a> {
    run: LiveRun<'a>,
    stages: &'a [StageRow],
    metrics: &'a Option<self_healing::PipelineMetrics>,
    failures: &'a [migrationpilot::store::FailureCount],
    chaos: &'a Option<migrationpilot::store::ChaosRow>,
}

#[derive(Args)]
pub(super) struct RunsArgs {
    #[command(subcommand)]
    show: Option<RunsCommand>,
    /// Only this project's runs.
    #[arg(long)]
    project: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How many runs to list (1 to 500).
    #[arg(long, default_value_t = 20, value_parser = args::limit(500))]
    limit: u32,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// A run's stages (status, items, times) and its PipelineMetrics.
    Show {
        /// The run.
        run: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn exec(store_url: Option<String>, args: RunsArgs) -> Outcome {
    match args.show {
        Some(RunsCommand::Show { run, json }) => show(store_url, run, json).await,
        None => list(store_url, args.project, args.json, args.limit).await,
    }
}

async fn list(
    store_url: Option<String>,
    project: Option<String>,
    json: bool,
    limit: u32,
) -> Outcome {
    let store = open_store(store_url, Access::ReadOnly).await?;
    let projects = match project {
        Some(project) => {
            control::known_project(&*store, &project).await?;
            vec![project]
        }
        None => store.projects().await?,
    };
    let mut runs = Vec::new();
    for project in &projects {
        runs.extend(store.runs(project, limit).await?);
    }
    runs.sort_by_key(|run| std::cmp::Reverse(run.started_ms));
    runs.truncate(limit as usize);
    let now = store::millis(std::time::SystemTime::now());
    if json {
        let runs: Vec<LiveRun> = runs.iter().map(|run| LiveRun::new(run, now)).collect();
        print_json(&runs);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        match projects.as_slice() {
            [project] => say!("project `{project}` has no runs"),
            _ => say!("the store has no runs"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{:<22} {:<24} {:<12} {:<22} error",
        "RUN",
        "PROJECT",
        "STATUS",
        "STARTED"
    );
    for run in runs {
        say!(
            "{:<22} {:<24} {:<12} {:<22} {}",
            run.id,
            run.project,
            run.shown_status(now),
            iso8601(run.started_ms),
            run.error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(store_url: Option<String>, run: String, json: bool) -> Outcome {
    let store = open_store(store_url, Access::ReadOnly).await?;
    let detail = store.run(&run).await?.ok_or_else(|| no_such_run(&run))?;
    let now = store::millis(std::time::SystemTime::now());
    if json {
        print_json(&LiveRunDetail {
            run: LiveRun::new(&detail.run, now),
            stages: &detail.stages,
            metrics: &detail.metrics,
            failures: &detail.failures,
            chaos: &detail.chaos,
        });
        return Ok(ExitCode::SUCCESS);
    }
    let r = &detail.run;
    say!("run       {} ({})", r.id, r.project);
    say!("status    {}", status_line(r, now));
    say!("started   {}", iso8601(r.started_ms));
    if let Some(finished) = r.finished_ms {
        say!("finished  {}", iso8601(finished));
    }
    if let Some(error) = &r.error {
        say!("error     {error}");
    }
    if let Some(chaos) = &detail.chaos {
        say!(
            "chaos     {} (seed {})",
            chaos.faults.join("; "),
            chaos.seed
        );
    }
    say!(
        "\n{:<20} {:<10} {:>8} {:<22} {:>12}",
        "STAGE",
        "STATUS",
        "ITEMS",
        "STARTED",
        "DURATION"
    );
    for stage in &detail.stages {
        say!(
            "{:<20} {:<10} {:>8} {:<22} {:>12}",
            stage.stage,
            stage.status,
            stage.items,
            stage.started_ms.map_or_else(|| "-".to_owned(), iso8601),
            stage
                .duration_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{:.1} ms", ms))
        );
    }
    if !detail.failures.is_empty() {
        say!("\n{:<20} {:<24} {:>8}", "FAILED ATTEMPTS", "CODE", "COUNT");
        for failure in &detail.failures {
            say!(
                "{:<20} {:<24} {:>8}{}",
                failure.stage,
                failure.code.as_deref().unwrap_or("-"),
                failure.count,
                if failure.injected {
                    "  injected by --chaos"
                } else {
                    ""
                }
            );
        }
    }
    match &detail.metrics {
        Some(metrics) => say!("\nPipelineMetrics\n{metrics}"),
        None => say!("\nno PipelineMetrics: the run has not ended"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The run's status, with the process that drives it while it has not ended: `lost` (and
/// when it was last seen) once that process is gone.
fn status_line(run: &RunRow, now_ms: i64) -> String {
    let process = run
        .owner
        .as_ref()
        .map_or_else(|| "its process".to_owned(), |o| format!("process {o}"));
    let seen = run.heartbeat_ms.map_or_else(|| "never".to_owned(), iso8601);
    if run.is_lost(now_ms) {
        format!(
            "lost: never ended, and nothing drives it now (it was {} when {process} was last seen, {seen}); `run --resume` continues it",
            run.status
        )
    } else if run.status.is_unended() {
        format!("{} (driven by {process}, last seen {seen})", run.status)
    } else {
        run.status.to_string()
    }
}

/// A run the store does not know, said so (`runs show` and `logs` refuse it alike).
pub(super) fn no_such_run(run: &str) -> CliError {
    CliError::Invalid(format!("the store knows no run `{run}`"))
}
