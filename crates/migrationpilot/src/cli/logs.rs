//! `logs`: what each attempt of a run wrote to its standard output and error, as the store
//! kept it.

use std::process::ExitCode;

use clap::Args;

use migrationpilot::error::CliError;
use migrationpilot::session::open_store;
use migrationpilot::store::Access;
use migrationpilot::store::{LogFilter, iso8601};
use migrationpilot::terminal;

use super::runs::no_such_run;
use super::{Outcome, print_json};

#[derive(Args)]
pub(super) struct LogsArgs {
    /// The run.
    run: String,
    /// Only this stage's attempts.
    #[arg(long)]
    stage: Option<String>,
    /// Only this item's attempts.
    #[arg(long)]
    item: Option<String>,
    /// Only this attempt (from 1).
    #[arg(long, value_parser = parse_attempt)]
    attempt: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print what the attempts wrote as they wrote it, control characters included (by
    /// default they are shown escaped, so output cannot act on the terminal).
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

/// Attempts count from 1, as the API's `attempt` does.
fn parse_attempt(text: &str) -> Result<i64, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("attempts count from 1".to_owned()),
        Ok(attempt) => Ok(i64::from(attempt)),
        Err(e) => Err(format!("not an attempt number: {e}")),
    }
}

pub(super) async fn exec(store_url: Option<String>, args: LogsArgs) -> Outcome {
    let LogsArgs {
        run,
        stage,
        item,
        attempt,
        json,
        raw,
    } = args;
    let store = open_store(store_url, Access::ReadOnly).await?;
    let detail = store.run(&run).await?.ok_or_else(|| no_such_run(&run))?;
    // A stage the run does not have is a mistake, not an empty answer (as in the API).
    if let Some(stage) = &stage
        && !detail.run.stages.contains(stage)
    {
        return Err(CliError::Invalid(format!(
            "run `{run}` has no stage `{stage}` (it has {})",
            detail.run.stages.join(", ")
        )));
    }
    let filter = LogFilter {
        stage,
        item,
        attempt,
    };
    let logs = store.logs(&run, &filter).await?;
    if json {
        print_json(&logs);
        return Ok(ExitCode::SUCCESS);
    }
    if logs.is_empty() {
        say!("run `{run}` has no logs that match");
        return Ok(ExitCode::SUCCESS);
    }
    for log in logs {
        say!(
            "── {}{} attempt {} ({})",
            log.stage,
            log.item
                .as_deref()
                .map(|i| format!("/{i}"))
                .unwrap_or_default(),
            log.attempt,
            iso8601(log.at)
        );
        for (name, text, cut) in [
            ("stdout", &log.stdout, log.stdout_cut),
            ("stderr", &log.stderr, log.stderr_cut),
        ] {
            if text.is_empty() {
                continue;
            }
            if cut > 0 {
                say!("[{name}: {cut} earlier byte(s) cut]");
            } else {
                say!("[{name}]");
            }
            let text = text.strip_suffix('\n').unwrap_or(text);
            if raw {
                terminal::print_raw(text);
                terminal::print_raw("\n");
            } else {
                say!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
