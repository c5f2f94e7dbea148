//! `manpages DIR`: a man page for the command and one per subcommand (`migrationpilot-run.1`,
//! `migrationpilot-healing-history.1`…), from the same definitions the command line parses
//! with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use migrationpilot::error::CliError;

use super::{Cli, Outcome};

#[derive(Args)]
pub(super) struct ManpagesArgs {
    /// The folder to write them to (made if missing); existing pages are replaced.
    dir: PathBuf,
}

pub(super) fn exec(args: ManpagesArgs) -> Outcome {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", args.dir.display())))?;
    let mut written = 0;
    let mut command = Cli::command();
    // Global options (`--store`) on every subcommand's page too.
    command.build();
    write_pages(&command, "migrationpilot", &args.dir, &mut written)?;
    say!("{written} man pages written to {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `command`'s page as `name.1`, then each subcommand's as `name-sub.1`; a page's
/// synopsis spells the command as it is typed (`migrationpilot healing history`).
fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut usize,
) -> Result<(), CliError> {
    let command = command
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .and_then(|()| std::fs::write(&path, page))
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
