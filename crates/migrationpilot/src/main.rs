//! `migrationpilot`: runs self-healing pipelines declared in YAML or TOML files.
//!
//! Exit status: 0 the run succeeded (or the file is valid); 1 the run failed; 2 the input is
//! wrong (command line or pipeline file); 3 the run was rolled back; 130 it was cancelled
//! (Ctrl-C).
//!
//! Everything it prints goes through `migrationpilot::terminal` (control characters from stages
//! escaped, no panic on a closed pipe); the lints below keep a stray `println!` out.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

use migrationpilot::error::EXIT_FAILED;
use migrationpilot::terminal::eprint_line;

mod cli;

fn main() -> ExitCode {
    // SAFETY: nothing else runs yet: no thread reads or writes the environment concurrently.
    unsafe { cli::take_token_from_env() };
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprint_line(format_args!("migrationpilot: cannot start: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(cli.exec()).unwrap_or_else(|error| {
        // Errors name runs, stages and items as the store has them: escaped like the rest.
        if error.is_located() {
            eprint_line(format_args!("{error}"));
        } else {
            eprint_line(format_args!("migrationpilot: {error}"));
        }
        error.exit_code()
    })
}
