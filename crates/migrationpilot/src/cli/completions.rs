//! `completions`: the shell's completion script for every subcommand and flag, from the same
//! definitions the command line parses with.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Outcome};

#[derive(Args)]
pub(super) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub(super) fn exec(args: CompletionsArgs) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "migrationpilot",
        &mut script,
    );
    migrationpilot::terminal::print_raw(&String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}
