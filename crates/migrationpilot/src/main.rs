//! `migrationpilot`: runs self-healing pipelines declared in YAML or TOML files.
//!
//! Exit status: 0 the run succeeded (or the file is valid); 1 the run failed; 2 the input is
//! wrong (command line or pipeline file); 3 the run was rolled back; 130 it was cancelled
//! (Ctrl-C).

mod alert;
mod build;
mod command;
mod file;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use self_healing::event::{Event, EventKind};
use self_healing::{RunOptions, RunStatus};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "migrationpilot",
    version,
    about = "Runs self-healing pipelines declared in YAML or TOML files"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Check a pipeline file and report every problem found, with file, line, column and key.
    Validate {
        /// The pipeline file (.yaml, .yml or .toml).
        file: PathBuf,
    },
    /// Run a pipeline file.
    Run {
        /// The pipeline file (.yaml, .yml or .toml).
        file: PathBuf,
        /// Run under this project name instead of the file's `project`.
        #[arg(long)]
        project: Option<String>,
        /// Print every event as one JSON object per line instead of progress lines.
        #[arg(long)]
        json_events: bool,
        /// Seed run ids and retry jitter, for reproducible runs.
        #[arg(long)]
        seed: Option<u64>,
    },
}

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
const EXIT_ROLLED_BACK: u8 = 3;
const EXIT_CANCELLED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("migrationpilot: cannot start: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Commands::Validate { file } => validate(file),
            Commands::Run {
                file,
                project,
                json_events,
                seed,
            } => run(file, project, json_events, seed).await,
        }
    })
}

/// Loads and builds a file, printing every problem found.
fn load(
    path: &std::path::Path,
    project: Option<&str>,
    seed: Option<u64>,
) -> Result<build::Built, u8> {
    let (file, text) = file::load(path).map_err(|e| {
        eprintln!("{e}");
        EXIT_INVALID
    })?;
    build::build(&file, path, &text, project, seed).map_err(|errors| {
        for error in &errors {
            eprintln!("{error}");
        }
        eprintln!("{}: {} error(s)", path.display(), errors.len());
        EXIT_INVALID
    })
}

fn validate(path: PathBuf) -> ExitCode {
    match load(&path, None, None) {
        Ok(built) => {
            let stages = built.pipeline.stage_names().count();
            let strategies = built.healer.strategies().len();
            let checks = built.monitor.as_ref().map_or(0, |m| m.report().len());
            println!(
                "{}: ok: project `{}`, {stages} stage(s), {strategies} strategy(ies), {checks} health check(s)",
                path.display(),
                built.project
            );
            ExitCode::SUCCESS
        }
        Err(code) => ExitCode::from(code),
    }
}

async fn run(
    path: PathBuf,
    project: Option<String>,
    json_events: bool,
    seed: Option<u64>,
) -> ExitCode {
    let built = match load(&path, project.as_deref(), seed) {
        Ok(built) => built,
        Err(code) => return ExitCode::from(code),
    };
    let events = built.pipeline.events().subscribe();
    let printer = tokio::spawn(print_events(events, json_events));
    if let Some(monitor) = &built.monitor {
        monitor.start();
    }
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: work in flight gets its grace period, nothing new starts");
            on_signal.cancel();
        }
    });
    let report = built
        .pipeline
        .execute_with(
            (),
            RunOptions {
                cancel,
                ..RunOptions::default()
            },
        )
        .await;
    if let Some(monitor) = &built.monitor {
        monitor.stop();
    }
    drop(built.pipeline);
    let _ = printer.await;

    let mut out = std::io::stdout().lock();
    if json_events {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({ "type": "run-report", "report": report })
        );
    } else {
        let _ = writeln!(out, "\nrun {} {}", report.run_id, report.status.as_str());
        if let Some(error) = &report.error {
            let _ = writeln!(out, "error: {error}");
        }
        for failure in &report.compensation_failures {
            let _ = writeln!(
                out,
                "compensation failed: {}/{}: {}",
                failure.stage,
                failure.item.as_deref().unwrap_or("-"),
                failure.error
            );
        }
        let _ = writeln!(out, "\nPipelineMetrics\n{}", report.metrics);
    }
    ExitCode::from(match report.status {
        RunStatus::Succeeded => 0,
        RunStatus::Failed => EXIT_FAILED,
        RunStatus::RolledBack => EXIT_ROLLED_BACK,
        RunStatus::Cancelled => EXIT_CANCELLED,
    })
}

/// Prints events as they come: progress lines for people, or JSON lines for scripts.
async fn print_events(mut events: self_healing::event::Subscription, json: bool) {
    while let Some(event) = events.recv().await {
        let mut out = std::io::stdout().lock();
        if json {
            if let Ok(line) = serde_json::to_string(&*event) {
                let _ = writeln!(out, "{line}");
            }
            continue;
        }
        if let Some(line) = describe(&event) {
            let _ = writeln!(out, "{line}");
        }
        if matches!(event.kind, EventKind::RunFinished { .. }) {
            break;
        }
    }
}

fn describe(event: &Event) -> Option<String> {
    let item = |item: &Option<std::sync::Arc<str>>| {
        item.as_deref().map(|i| format!("/{i}")).unwrap_or_default()
    };
    Some(match &event.kind {
        EventKind::RunStarted { pipeline, stages } => {
            format!("{pipeline}: {} stage(s)", stages.len())
        }
        EventKind::StageStarted { stage } => format!("▶ {stage}"),
        EventKind::StageSucceeded {
            stage,
            duration,
            items,
        } => {
            format!("✔ {stage}: {items} unit(s) in {duration:.1?}")
        }
        EventKind::StageFailed { stage, error, .. } => format!("✘ {stage}: {error}"),
        EventKind::AttemptFailed {
            stage,
            item: it,
            attempt,
            error,
            ..
        } => {
            format!(
                "  ✗ {stage}{} attempt {attempt}: {}",
                item(it),
                error.message()
            )
        }
        EventKind::ItemFailed {
            stage,
            item,
            attempts,
            error,
        } => {
            format!("  ✗ {stage}/{item} after {attempts} attempt(s): {error}")
        }
        EventKind::HealingApplied {
            stage,
            item: it,
            action,
            detail,
        } => {
            format!("  ⟳ {action} {stage}{}: {detail}", item(it))
        }
        EventKind::CompensationFinished {
            stage,
            item: it,
            error,
        } => match error {
            None => format!("  ↶ compensated {stage}{}", item(it)),
            Some(error) => format!("  ↶ compensation of {stage}{} failed: {error}", item(it)),
        },
        EventKind::HealthChanged { change } => format!(
            "  ♥ {}: {} → {}",
            change.check, change.old_status, change.new_status
        ),
        EventKind::AlertFailed { channel, error, .. } => {
            format!("  ! alert via {channel} failed: {error}")
        }
        _ => return None,
    })
}
