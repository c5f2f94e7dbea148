//! `run`: runs a pipeline file against the store, optionally serving the API while it lasts,
//! and prints its report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use self_healing::RunStatus;

use migrationpilot::error::{CliError, EXIT_CANCELLED, EXIT_FAILED, EXIT_ROLLED_BACK};
use migrationpilot::secrets::Secrets;
use migrationpilot::serve;
use migrationpilot::session::{RunRequest, Session};

use super::args::TokenArgs;
use super::serve::LimitArgs;
use super::{Outcome, print_json};

#[derive(Args)]
pub(super) struct RunArgs {
    /// The pipeline file (.yaml, .yml or .toml).
    file: PathBuf,
    /// Run under this project name instead of the file's `project`.
    #[arg(long)]
    project: Option<String>,
    /// Continue the project's latest run if it did not finish (crash or Ctrl-C): completed
    /// stages and items are not run again.
    #[arg(long)]
    resume: bool,
    /// Print every committed event as one JSON object per line instead of progress lines.
    #[arg(long)]
    json_events: bool,
    /// Seed retry jitter, for reproducible runs (run ids are always fresh).
    #[arg(long)]
    seed: Option<u64>,
    /// Serve the HTTP API, `/metrics` (fed live by this run) and the dashboard on this
    /// address while the run lasts.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// On a shared store, coordinate only: every item is left to `worker` processes.
    #[arg(long)]
    no_work: bool,
    /// Inject faults, for staging: `fail=P%[,code=C][,stage=S]`, `latency=D[,stage=S]` or
    /// `down=CHECK,at=T,for=D`; repeat for several. Injected failures are journaled as such;
    /// `--seed` draws the same ones again.
    #[arg(long, value_name = "SPEC")]
    chaos: Vec<String>,
}

pub(super) async fn exec(store_url: Option<String>, args: RunArgs) -> Outcome {
    let RunArgs {
        file,
        project,
        resume,
        json_events,
        seed,
        listen,
        token,
        limits,
        no_work,
        chaos,
    } = args;
    let token = match listen {
        Some(_) => token.read()?,
        None => None,
    };
    let mut secrets = Secrets::default();
    if let Some(token) = &token {
        token.mask_in(&mut secrets);
    }
    let request = RunRequest {
        file,
        project,
        resume,
        json_events,
        seed,
        no_work,
        secrets,
        chaos,
    };
    let session = Session::open(store_url, request).await?;
    let bound = match listen {
        Some(listen) => {
            let bound = serve::bind(&listen, token, limits.read()?).await?;
            let addr = bound
                .local_addr()
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if !json_events {
                say!("serving this run on http://{addr}");
            }
            Some(bound)
        }
        None => None,
    };
    let report = session.run(bound).await?;
    if json_events {
        print_json(&serde_json::json!({ "type": "run-report", "report": report }));
    } else {
        say!("\nrun {} {}", report.run_id, report.status.as_str());
        if let Some(error) = &report.error {
            // `error: …` or `critical: …`, with its code.
            say!("{error}");
        }
        for failure in &report.compensation_failures {
            say!(
                "compensation failed: {}/{}: {}",
                failure.stage,
                failure.item.as_deref().unwrap_or("-"),
                failure.error
            );
        }
        say!("\nPipelineMetrics\n{}", report.metrics);
    }
    Ok(ExitCode::from(match report.status {
        RunStatus::Succeeded => 0,
        RunStatus::Failed => EXIT_FAILED,
        RunStatus::RolledBack => EXIT_ROLLED_BACK,
        RunStatus::Cancelled => EXIT_CANCELLED,
    }))
}
