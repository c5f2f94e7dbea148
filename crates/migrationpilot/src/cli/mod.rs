//! The command line, laid out as cargo's: this module parses and dispatches, and a subcommand's
//! file holds its arguments, what it does and what it prints, so a change to one subcommand
//! reads and reviews in one place (`health`, `runs`, `logs`, `alerts` and `healing` are still
//! here). `main` only parses, starts the runtime and turns the outcome into an exit status.
//!
//! What several subcommands share is defined once: their arguments in [`args`], their JSON
//! output in [`print_json`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use self_healing::healing::{Mode, StrategyOverride};

use migrationpilot::control;
use migrationpilot::error::CliError;
use migrationpilot::session::open_store;
use migrationpilot::store::{self, LogFilter, iso8601};

use args::{ProjectArgs, parse_duration};

mod args;
mod run;
mod serve;
mod validate;
mod worker;

pub(crate) use args::take_token_from_env;

#[derive(Parser)]
#[command(
    name = "migrationpilot",
    version,
    about = "Runs self-healing pipelines declared in YAML or TOML files"
)]
pub(crate) struct Cli {
    /// Where runs, history and controls are kept: sqlite://PATH (default: journal.db in the
    /// user's data directory).
    #[arg(long, env = "MIGRATIONPILOT_STORE", global = true)]
    store: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Check a pipeline file and report every problem found, with file, line, column and key.
    Validate(validate::ValidateArgs),
    /// Run a pipeline file, journaling every event.
    Run(run::RunArgs),
    /// Work items of runs on a shared (PostgreSQL) store, until Ctrl-C.
    Worker(worker::WorkerArgs),
    /// Show the project's health checks, healing mode and latest run.
    Health(ProjectArgs),
    /// List runs, newest first (every project's, or one's); `runs show RUN` shows one.
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// Only this project's runs.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show what each attempt of a run wrote (its standard output and error, as kept).
    Logs {
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
    },
    /// Serve the HTTP API, server-sent events, `/metrics` and the dashboard over the store.
    Serve(serve::ServeArgs),
    /// The project's alerts: firing first, with each channel's deliveries.
    Alerts {
        #[command(flatten)]
        project: ProjectArgs,
        /// How many alerts to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Inspect and steer healing.
    #[command(subcommand)]
    Healing(HealingCommand),
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

#[derive(Subcommand)]
enum HealingCommand {
    /// Healing decisions, newest first.
    History {
        #[command(flatten)]
        project: ProjectArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only decisions from this long ago on (`1h`, `30m`, or milliseconds).
        #[arg(long, value_parser = parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// Ask the project's running pipeline to take an action now.
    Trigger {
        #[arg(long)]
        project: String,
        /// restart, rollback, failover or circuit-break.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(control::ACTIONS))]
        action: String,
        #[arg(long)]
        stage: String,
    },
    /// Override a strategy's settings for the project; running pipelines pick it up.
    Configure {
        #[arg(long)]
        project: String,
        #[arg(long)]
        strategy: String,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long, value_parser = parse_duration)]
        cooldown: Option<std::time::Duration>,
        #[arg(long)]
        priority: Option<i64>,
        #[arg(long)]
        enabled: Option<bool>,
        /// act or dry-run.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
    },
    /// Manual mode: matches are recorded as would-have and nothing acts.
    Disable {
        #[arg(long)]
        project: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Back to healing by itself.
    Enable {
        #[arg(long)]
        project: String,
    },
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "act" => Ok(Mode::Act),
        "dry-run" => Ok(Mode::DryRun),
        other => Err(format!("`{other}` is not act or dry-run")),
    }
}

/// What a subcommand ends with: its exit status, or the error `main` reports and turns into
/// one.
type Outcome = Result<ExitCode, CliError>;

impl Cli {
    /// Runs the subcommand; `main` turns what it ends with into the exit status.
    pub(crate) async fn exec(self) -> Outcome {
        let store_url = self.store;
        match self.command {
            Commands::Validate(args) => validate::exec(args),
            Commands::Run(args) => run::exec(store_url, args).await,
            Commands::Worker(args) => worker::exec(store_url, args).await,
            Commands::Serve(args) => serve::exec(store_url, args).await,
            Commands::Alerts { project, limit } => alerts(store_url, project, limit).await,
            Commands::Health(args) => health(store_url, args).await,
            Commands::Runs {
                show: Some(RunsCommand::Show { run, json }),
                ..
            } => show_run(store_url, run, json).await,
            Commands::Runs {
                show: None,
                project,
                json,
                limit,
            } => runs(store_url, project, json, limit).await,
            Commands::Logs {
                run,
                stage,
                item,
                attempt,
                json,
            } => {
                let filter = LogFilter {
                    stage,
                    item,
                    attempt,
                };
                logs(store_url, run, filter, json).await
            }
            Commands::Healing(command) => healing(store_url, command).await,
        }
    }
}

async fn health(store_url: Option<String>, args: ProjectArgs) -> Outcome {
    let store = open_store(store_url).await?;
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
    println!("project   {}", args.project);
    match &mode.reason {
        Some(reason) if !mode.enabled => println!("healing   disabled: {reason}"),
        _ => println!(
            "healing   {}",
            if mode.enabled { "enabled" } else { "disabled" }
        ),
    }
    if let Some(run) = &latest {
        println!(
            "last run  {} {} (started {})",
            run.id,
            run.status,
            iso8601(run.started_ms)
        );
    }
    if checks.is_empty() {
        println!("checks    none declared or recorded");
        return Ok(ExitCode::SUCCESS);
    }
    match (&latest, live) {
        (_, true) => println!("checks    live, from the running pipeline"),
        (Some(run), false) => println!(
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
    println!(
        "\n{:<24} {:<14} {:<10} {:<22} {:<22} target / last error",
        "CHECK", "STAGE", "STATUS", "SINCE", "LAST CHECKED"
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
        println!(
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

async fn runs(
    store_url: Option<String>,
    project: Option<String>,
    json: bool,
    limit: u32,
) -> Outcome {
    let store = open_store(store_url).await?;
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
    if json {
        print_json(&runs);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        match projects.as_slice() {
            [project] => println!("project `{project}` has no runs"),
            _ => println!("the store has no runs"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<24} {:<12} {:<22} error",
        "RUN", "PROJECT", "STATUS", "STARTED"
    );
    for run in runs {
        println!(
            "{:<22} {:<24} {:<12} {:<22} {}",
            run.id,
            run.project,
            run.status,
            iso8601(run.started_ms),
            run.error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A run the store does not know, said so.
fn no_such_run(run: &str) -> CliError {
    CliError::Invalid(format!("the store knows no run `{run}`"))
}

async fn alerts(store_url: Option<String>, args: ProjectArgs, limit: u32) -> Outcome {
    let store = open_store(store_url).await?;
    control::known_project(&*store, &args.project).await?;
    let rows = store.alerts(&args.project, limit).await?;
    if args.json {
        print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("project `{}` has raised no alerts", args.project);
        return Ok(ExitCode::SUCCESS);
    }
    for row in rows {
        let a = &row.alert;
        let since = iso8601(store::millis(a.starts_at));
        let until = a
            .ends_at
            .map(|e| format!(" until {}", iso8601(store::millis(e))))
            .unwrap_or_default();
        println!(
            "{:<9} {:<9} {}  since {since}{until}",
            a.status.as_str(),
            a.severity.as_str(),
            row.fingerprint
        );
        println!("          {}", a.title);
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
            println!(
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

async fn show_run(store_url: Option<String>, run: String, json: bool) -> Outcome {
    let store = open_store(store_url).await?;
    let detail = store.run(&run).await?.ok_or_else(|| no_such_run(&run))?;
    if json {
        print_json(&detail);
        return Ok(ExitCode::SUCCESS);
    }
    let r = &detail.run;
    println!("run       {} ({})", r.id, r.project);
    println!("status    {}", r.status);
    println!("started   {}", iso8601(r.started_ms));
    if let Some(finished) = r.finished_ms {
        println!("finished  {}", iso8601(finished));
    }
    if let Some(error) = &r.error {
        println!("error     {error}");
    }
    println!(
        "\n{:<20} {:<10} {:>8} {:<22} {:>12}",
        "STAGE", "STATUS", "ITEMS", "STARTED", "DURATION"
    );
    for stage in &detail.stages {
        println!(
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
    match &detail.metrics {
        Some(metrics) => println!("\nPipelineMetrics\n{metrics}"),
        None => println!("\nno PipelineMetrics: the run has not ended"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(store_url: Option<String>, run: String, filter: LogFilter, json: bool) -> Outcome {
    let store = open_store(store_url).await?;
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

async fn healing(store_url: Option<String>, command: HealingCommand) -> Outcome {
    let store = open_store(store_url).await?;
    match command {
        HealingCommand::History {
            project,
            limit,
            since,
        } => {
            control::known_project(&*store, &project.project).await?;
            let since_ms = since.map(|d| store::millis(std::time::SystemTime::now() - d));
            let records = store.history(&project.project, limit, since_ms).await?;
            if project.json {
                print_json(&records);
                return Ok(ExitCode::SUCCESS);
            }
            if records.is_empty() {
                println!(
                    "project `{}` has no healing decisions{}",
                    project.project,
                    if since.is_some() { " in that time" } else { "" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<14} {:<22} {:<14} {:<17} detail",
                "TIME", "STAGE", "STRATEGY", "ACTION", "OUTCOME"
            );
            for r in records {
                println!(
                    "{:<20} {:<14} {:<22} {:<14} {:<17} {}",
                    iso8601(store::millis(r.at)),
                    r.stage.as_deref().unwrap_or("-"),
                    r.strategy,
                    r.action.as_str(),
                    r.outcome.as_str(),
                    r.detail
                );
            }
        }
        HealingCommand::Trigger {
            project,
            action,
            stage,
        } => {
            let queued = control::trigger(&*store, &project, &action, &stage).await?;
            println!(
                "queued {} of stage `{stage}` for project `{project}` (request {})",
                queued.action, queued.id
            );
            if !queued.running {
                println!("no run of `{project}` is running: the next run takes it");
            }
        }
        HealingCommand::Configure {
            project,
            strategy,
            max_attempts,
            cooldown,
            priority,
            enabled,
            mode,
        } => {
            let changes = StrategyOverride {
                max_attempts,
                cooldown,
                priority,
                enabled,
                mode,
            };
            control::configure(&*store, &project, &strategy, &changes).await?;
            println!(
                "strategy `{strategy}` of project `{project}` configured; running pipelines apply it within {:?}",
                control::POLL_INTERVAL
            );
        }
        HealingCommand::Disable { project, reason } => {
            store
                .set_healing_mode(&project, false, reason.as_deref())
                .await?;
            println!(
                "healing disabled for `{project}`: matches are recorded as would-have, nothing acts"
            );
        }
        HealingCommand::Enable { project } => {
            store.set_healing_mode(&project, true, None).await?;
            println!("healing enabled for `{project}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as one line of JSON, as every `--json` does, so scripts read each command's
/// output the same way.
fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}
