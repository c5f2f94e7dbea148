//! The command line, laid out as cargo's: this module parses and dispatches, and a subcommand's
//! file holds its arguments, what it does and what it prints, so a change to one subcommand
//! reads and reviews in one place. `main` only parses, starts the runtime and turns the
//! outcome into an exit status.
//!
//! What several subcommands share is defined once: their arguments in [`args`], their
//! output in `say!` and [`print_json`], which print through
//! [`terminal`](migrationpilot::terminal) (escaped, and quiet when the reader has gone).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use migrationpilot::error::CliError;

/// `println!` for what the command line shows a person: every line escaped, and nothing
/// printed (no panic) once standard output is closed.
macro_rules! say {
    ($($arg:tt)*) => {
        migrationpilot::terminal::print_line(format_args!($($arg)*))
    };
}

mod alerts;
mod args;
mod classify;
mod completions;
mod healing;
mod health;
mod init;
mod logs;
mod manpages;
mod run;
mod runs;
mod schema;
mod serve;
mod simulate;
mod validate;
mod worker;

pub(crate) use args::take_token_from_env;

/// What `--version` prints: the version, the commit built and the features enabled.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MIGRATIONPILOT_COMMIT"),
    "; features: ",
    env!("MIGRATIONPILOT_FEATURES"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "migrationpilot",
    version = VERSION,
    about = "Runs self-healing pipelines declared in YAML or TOML files"
)]
pub(crate) struct Cli {
    /// Where runs, history and controls are kept: sqlite://PATH (default: journal.db in the
    /// user's data directory) or postgres://USER:PASSWORD@HOST/DB, which machines share.
    #[arg(long, env = "MIGRATIONPILOT_STORE", global = true)]
    store: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Write a first pipeline, commented, with the recommended healing and the scripts it
    /// calls, ready to run; never overwrites a file.
    Init(init::InitArgs),
    /// Check a pipeline file and report every problem found, with file, line, column and key.
    Validate(validate::ValidateArgs),
    /// Show what a failed command's output becomes: its code, severity, whether it is retried,
    /// and the rule that said so.
    Classify(classify::ClassifyArgs),
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
    /// Simulate the file's healing against modelled faults in virtual time, beside retry
    /// only, no healing and the recommended configuration; nothing is run.
    Simulate(simulate::SimulateArgs),
    /// Inspect and steer healing.
    #[command(subcommand)]
    Healing(healing::HealingCommand),
    /// Print the JSON Schema of pipeline files, for editors and validators.
    Schema(schema::SchemaArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(completions::CompletionsArgs),
    /// Write the man pages: migrationpilot.1 and one per subcommand.
    Manpages(manpages::ManpagesArgs),
}

/// What a subcommand ends with: its exit status, or the error `main` reports and turns into
/// one.
type Outcome = Result<ExitCode, CliError>;

impl Cli {
    /// Runs the subcommand; `main` turns what it ends with into the exit status.
    pub(crate) async fn exec(self) -> Outcome {
        let store_url = self.store;
        match self.command {
            Commands::Init(args) => init::exec(args),
            Commands::Validate(args) => validate::exec(args),
            Commands::Classify(args) => classify::exec(args),
            Commands::Run(args) => run::exec(store_url, args).await,
            Commands::Worker(args) => worker::exec(store_url, args).await,
            Commands::Health(args) => health::exec(store_url, args).await,
            Commands::Runs(args) => runs::exec(store_url, args).await,
            Commands::Logs(args) => logs::exec(store_url, args).await,
            Commands::Serve(args) => serve::exec(store_url, args).await,
            Commands::Alerts(args) => alerts::exec(store_url, args).await,
            Commands::Healing(command) => healing::exec(store_url, command).await,
            Commands::Simulate(args) => simulate::exec(store_url, args).await,
            Commands::Schema(args) => schema::exec(args),
            Commands::Completions(args) => completions::exec(args),
            Commands::Manpages(args) => manpages::exec(args),
        }
    }
}

/// Prints `value` as one line of JSON, as every `--json` does, so scripts read each command's
/// output the same way.
fn print_json(value: &impl serde::Serialize) {
    migrationpilot::terminal::print_json(value);
}
