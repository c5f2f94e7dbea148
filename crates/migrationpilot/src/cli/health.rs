//! `health`: a project's health checks, healing mode and latest run, as the store last saw
//! them.

use std::process::ExitCode;

use migrationpilot::control;
use migrationpilot::session::open_store;
use migrationpilot::store::Access;
use migrationpilot::store::{self, iso8601};

use super::args::ProjectArgs;
use super::{Outcome, print_json};

pub(super) async fn exec(store_url: Option<String>, args: ProjectArgs) -> Outcome {
    let store = open_store(store_url, Access::ReadOnly).await?;
    control::known_project(&*store, &args.project).await?;
    let checks = store.health(&args.project).await?;
    let mode = store.healing_mode(&args.project).await?;
    let latest = store.runs(&args.project, 1).await?.into_iter().next();
    let now = store::millis(std::time::SystemTime::now());
    let live = latest.as_ref().is_some_and(|run| run.is_alive(now));
    if args.json {
        print_json(&serde_json::json!({
            "project": args.project,
            "healing": mode,
            "checks": checks,
            "latestRun": latest,
            "live": live,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    say!("project   {}", args.project);
    match &mode.reason {
        Some(reason) if !mode.enabled => say!("healing   disabled: {reason}"),
        _ => say!(
            "healing   {}",
            if mode.enabled { "enabled" } else { "disabled" }
        ),
    }
    if let Some(run) = &latest {
        say!(
            "last run  {} {} (started {})",
            run.id,
            run.shown_status(now),
            iso8601(run.started_ms)
        );
    }
    if checks.is_empty() {
        say!("checks    none declared or recorded");
        return Ok(ExitCode::SUCCESS);
    }
    match (&latest, live) {
        (_, true) => say!("checks    live, from the running pipeline"),
        (Some(run), false) => say!(
            "checks    as last seen by run {}, which {} {}: not checked since",
            run.id,
            if run.status.is_unended() {
                "stopped"
            } else {
                "ended"
            },
            run.finished_ms
                .or(run.heartbeat_ms)
                .map_or_else(|| "-".to_owned(), iso8601)
        ),
        (None, false) => {}
    }
    say!(
        "\n{:<24} {:<14} {:<10} {:<22} {:<22} target / last error",
        "CHECK",
        "STAGE",
        "STATUS",
        "SINCE",
        "LAST CHECKED"
    );
    for check in checks {
        let status = check.status.map_or("unchecked", |s| s.as_str());
        let since = check.changed_ms.map_or_else(|| "-".to_owned(), iso8601);
        let seen = check.checked_ms.map_or_else(|| "never".to_owned(), iso8601);
        let note = match (&check.last_error, &check.target) {
            (Some(error), _) => error.clone(),
            (None, Some(target)) => target.clone(),
            (None, None) => String::new(),
        };
        say!(
            "{:<24} {:<14} {:<10} {:<22} {:<22} {note}",
            check.check,
            check.stage.as_deref().unwrap_or("-"),
            status,
            since,
            seen
        );
    }
    Ok(ExitCode::SUCCESS)
}
