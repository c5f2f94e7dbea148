//! `logs`: what each attempt of a run wrote to its standard output and error, as the store
//! kept it.

use std::process::ExitCode;

use clap::Args;

use migrationpilot::session::open_store;
use migrationpilot::store::Access;
use migrationpilot::store::{LogFilter, iso8601};

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
    #[arg(long)]
    attempt: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) async fn exec(store_url: Option<String>, args: LogsArgs) -> Outcome {
    let LogsArgs {
        run,
        stage,
        item,
        attempt,
        json,
    } = args;
    let filter = LogFilter {
        stage,
        item,
        attempt,
    };
    let store = open_store(store_url, Access::ReadOnly).await?;
    if store.run(&run).await?.is_none() {
        return Err(no_such_run(&run));
    }
    let logs = store.logs(&run, &filter).await?;
    if json {
        print_json(&logs);
        return Ok(ExitCode::SUCCESS);
    }
    if logs.is_empty() {
        println!("run `{run}` has no logs that match");
        return Ok(ExitCode::SUCCESS);
    }
    for log in logs {
        println!(
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
                println!("[{name}: {cut} earlier byte(s) cut]");
            } else {
                println!("[{name}]");
            }
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
