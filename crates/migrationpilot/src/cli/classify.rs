//! `classify`: what a failed command's output becomes, by the rules a run uses, so a file's
//! `errors:` can be tried on a line copied from a log before anything runs.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use migrationpilot::error::CliError;
use migrationpilot::session;
use self_healing::classify::{Classifier, Failed};

use super::{Outcome, print_json};

#[derive(Args)]
pub(super) struct ClassifyArgs {
    /// What the command wrote on standard error (`-` reads it from standard input).
    text: String,
    /// A pipeline file whose `errors:` rules come before the built-in ones.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The command's exit status (default 1).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    exit: i32,
    /// The program that wrote it (`curl`, `psql`…): some rules are a tool's exit statuses.
    #[arg(long, default_value = "command")]
    program: String,
    /// What it wrote on standard output, for rules that look there.
    #[arg(long, value_name = "TEXT")]
    stdout: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn exec(args: ClassifyArgs) -> Outcome {
    let stderr = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Invalid(format!("standard input: {e}")))?;
        text
    } else {
        args.text.replace("\\n", "\n")
    };
    let classifier = match &args.file {
        Some(path) => session::load(path, None, None, None)?.classifier,
        None => Arc::new(Classifier::builtin().clone()),
    };
    let stdout = args.stdout.unwrap_or_default();
    let error = self_healing::process::error_of(
        &Failed {
            program: &args.program,
            stderr: &stderr,
            stdout: &stdout,
            exit: Some(args.exit),
        },
        &classifier,
    );
    if args.json {
        print_json(&error);
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |value: bool| if value { "yes" } else { "no" };
    say!("code        {}", error.code().unwrap_or("-"));
    say!("severity    {}", error.severity());
    say!(
        "retried     {}",
        error
            .retryable()
            .map_or("by the retry policy's patterns", yes_no)
    );
    if let Some(after) = error.retry_after() {
        say!("retryAfter  {after:?}");
    }
    say!(
        "rule        {}",
        error
            .rule()
            .unwrap_or("none: the last line is the message, with no code")
    );
    say!("message     {}", error.message());
    if let Some(why) = error.invalid_json() {
        say!("note        the last line starts like a JSON error line but is {why}");
    }
    Ok(ExitCode::SUCCESS)
}
