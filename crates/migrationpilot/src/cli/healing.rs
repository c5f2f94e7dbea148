//! `healing`: a project's healing decisions, and steering its healing from another process
//! (trigger an action, override a strategy, manual mode on and off).

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use self_healing::healing::{Mode, StrategyOverride};

use migrationpilot::control;
use migrationpilot::session::open_store;
use migrationpilot::store::{self, iso8601};

use super::args::{self, ProjectArgs, parse_duration};
use super::{Outcome, print_json};

#[derive(Subcommand)]
pub(super) enum HealingCommand {
    /// Healing decisions, newest first.
    History {
        #[command(flatten)]
        project: ProjectArgs,
        /// How many decisions to list (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = args::limit(1000))]
        limit: u32,
        /// Only decisions from this long ago on (`1h`, `30m`, or milliseconds).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
    },
    /// Ask the project's running pipeline to take an action now.
    Trigger {
        /// The project (a pipeline file's `project`).
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
        /// The project (a pipeline file's `project`).
        #[arg(long)]
        project: String,
        /// The strategy to change, by name.
        #[arg(long)]
        strategy: String,
        /// A retry strategy's attempts, the first included (1 or more).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// The least time between two of its actions on one stage (`30s`, `5m`…).
        #[arg(long, value_parser = parse_duration)]
        cooldown: Option<Duration>,
        /// Higher goes first.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i64>,
        /// Whether it takes part at all (`true` or `false`).
        #[arg(long)]
        enabled: Option<bool>,
        /// act or dry-run.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
    },
    /// Manual mode: matches are recorded as would-have and nothing acts.
    Disable {
        /// The project (a pipeline file's `project`).
        #[arg(long)]
        project: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Back to healing by itself.
    Enable {
        /// The project (a pipeline file's `project`).
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

pub(super) async fn exec(store_url: Option<String>, command: HealingCommand) -> Outcome {
    // The history only reads. A project's mode may be set before its first run (a change
    // freeze), so disable and enable make the store; trigger and configure name a run's
    // stages and strategies, which only a store that holds the run knows.
    let access = match command {
        HealingCommand::History { .. } => store::Access::ReadOnly,
        HealingCommand::Disable { .. } | HealingCommand::Enable { .. } => store::Access::Create,
        _ => store::Access::Existing,
    };
    let store = open_store(store_url, access).await?;
    match command {
        HealingCommand::History {
            project,
            limit,
            since,
        } => {
            control::known_project(&*store, &project.project).await?;
            let since_ms = since.map(|d| store::millis(SystemTime::now() - d));
            let records = store.history(&project.project, limit, since_ms).await?;
            if project.json {
                print_json(&records);
                return Ok(ExitCode::SUCCESS);
            }
            if records.is_empty() {
                say!(
                    "project `{}` has no healing decisions{}",
                    project.project,
                    if since.is_some() { " in that time" } else { "" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            say!(
                "{:<20} {:<14} {:<22} {:<14} {:<17} detail",
                "TIME",
                "STAGE",
                "STRATEGY",
                "ACTION",
                "OUTCOME"
            );
            for r in records {
                say!(
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
            say!(
                "queued {} of stage `{stage}` for project `{project}` (request {})",
                queued.action,
                queued.id
            );
            if !queued.running {
                say!("no run of `{project}` is running: the next run takes it");
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
            say!(
                "strategy `{strategy}` of project `{project}` configured; running pipelines apply it within {:?}",
                control::POLL_INTERVAL
            );
        }
        HealingCommand::Disable { project, reason } => {
            store
                .set_healing_mode(&project, false, reason.as_deref())
                .await?;
            say!(
                "healing disabled for `{project}`: matches are recorded as would-have, nothing acts"
            );
        }
        HealingCommand::Enable { project } => {
            store.set_healing_mode(&project, true, None).await?;
            say!("healing enabled for `{project}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}
