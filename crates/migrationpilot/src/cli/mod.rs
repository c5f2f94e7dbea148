//! The command line, laid out as cargo's: this module parses and dispatches, and a subcommand's
//! file holds its arguments, what it does and what it prints, so a change to one subcommand
//! reads and reviews in one place (`healing` is still here). `main` only parses, starts the
//! runtime and turns the outcome into an exit status.
//!
//! What several subcommands share is defined once: their arguments in [`args`], their JSON
//! output in [`print_json`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use self_healing::healing::{Mode, StrategyOverride};

use migrationpilot::control;
use migrationpilot::error::CliError;
use migrationpilot::session::open_store;
use migrationpilot::store::{self, iso8601};

use args::{ProjectArgs, parse_duration};

mod alerts;
mod args;
mod health;
mod logs;
mod run;
mod runs;
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
    Health(args::ProjectArgs),
    /// List runs, newest first (every project's, or one's); `runs show RUN` shows one.
    #[command(args_conflicts_with_subcommands = true)]
    Runs(runs::RunsArgs),
    /// Show what each attempt of a run wrote (its standard output and error, as kept).
    Logs(logs::LogsArgs),
    /// Serve the HTTP API, server-sent events, `/metrics` and the dashboard over the store.
    Serve(serve::ServeArgs),
    /// The project's alerts: firing first, with each channel's deliveries.
    Alerts(alerts::AlertsArgs),
    /// Inspect and steer healing.
    #[command(subcommand)]
    Healing(HealingCommand),
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
            Commands::Health(args) => health::exec(store_url, args).await,
            Commands::Runs(args) => runs::exec(store_url, args).await,
            Commands::Logs(args) => logs::exec(store_url, args).await,
            Commands::Alerts(args) => alerts::exec(store_url, args).await,
            Commands::Healing(command) => healing(store_url, command).await,
        }
    }
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
