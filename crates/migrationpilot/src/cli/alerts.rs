//! `alerts`: a project's alerts, firing first, with each channel's deliveries.

use std::process::ExitCode;

use clap::Args;

use migrationpilot::control;
use migrationpilot::session::open_store;
use migrationpilot::store::Access;
use migrationpilot::store::{self, iso8601};

use super::args::{self, ProjectArgs};
use super::{Outcome, print_json};

#[derive(Args)]
pub(super) struct AlertsArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// How many alerts to list (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = args::limit(1000))]
    limit: u32,
}

pub(super) async fn exec(store_url: Option<String>, args: AlertsArgs) -> Outcome {
    let AlertsArgs {
        project: ProjectArgs { project, json },
        limit,
    } = args;
    let store = open_store(store_url, Access::ReadOnly).await?;
    control::known_project(&*store, &project).await?;
    let rows = store.alerts(&project, limit).await?;
    if json {
        print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        say!("project `{project}` has raised no alerts");
        return Ok(ExitCode::SUCCESS);
    }
    for row in rows {
        let a = &row.alert;
        let since = iso8601(store::millis(a.starts_at));
        let until = a
            .ends_at
            .map(|e| format!(" until {}", iso8601(store::millis(e))))
            .unwrap_or_default();
        say!(
            "{:<9} {:<9} {}  since {since}{until}",
            a.status.as_str(),
            a.severity.as_str(),
            row.fingerprint
        );
        say!("          {}", a.title);
        if let Some(runbook) = &a.runbook {
            say!("          runbook: {runbook}");
        }
        for d in &row.deliveries {
            let when = d
                .delivered_ms
                .map(|ms| format!(" at {}", iso8601(ms)))
                .unwrap_or_default();
            let error = d
                .last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            say!(
                "          → {:<14} {:<9} {}{when}, {} attempt(s){error}",
                d.channel,
                d.about.as_str(),
                d.status,
                d.attempts
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
