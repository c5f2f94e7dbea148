//! `init [DIR] [--template T]`: a first pipeline, commented, with the recommended healing and
//! the small scripts it calls, ready to run as is, and the schema editors check it with. It
//! never overwrites a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use migrationpilot::error::CliError;

use super::Outcome;

#[derive(Args)]
pub(super) struct InitArgs {
    /// The folder to write the pipeline to (made if missing; default: this one).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// What the pipeline does.
    #[arg(long, value_enum, default_value_t = Template::CodeMigration)]
    template: Template,
}

/// The pipelines `init` writes.
#[derive(Clone, Copy, ValueEnum)]
enum Template {
    /// Analyse legacy programs, generate a skeleton for each, check the whole.
    CodeMigration,
    /// Extract batches of rows, transform each, load each into a warehouse once.
    Etl,
    /// List records from an HTTP API, fetch each with curl, check the copy.
    Http,
}

/// One file of a template: its path in the folder, its text, and whether it is a script.
type File<'t> = (&'static str, &'t str, bool);

/// A template's files, read from `templates/NAME/` when the binary is built.
macro_rules! files {
    ($template:literal: $($path:literal $(as $script:ident)?),+ $(,)?) => {
        &[$((
            $path,
            include_str!(concat!("../../templates/", $template, "/", $path)),
            files!(@script $($script)?),
        )),+]
    };
    (@script script) => { true };
    (@script) => { false };
}

impl Template {
    fn files(self) -> &'static [File<'static>] {
        match self {
            Template::CodeMigration => files!("code-migration":
                "pipeline.yaml",
                "scripts/analyze.sh" as script,
                "scripts/generate.sh" as script,
                "scripts/verify.sh" as script,
                "scripts/undo.sh" as script,
                "legacy/HELLO.cbl",
                "legacy/PAYROLL.cbl",
            ),
            Template::Etl => files!("etl":
                "pipeline.yaml",
                "scripts/extract.sh" as script,
                "scripts/transform.sh" as script,
                "scripts/load.sh" as script,
                "scripts/unload.sh" as script,
            ),
            Template::Http => files!("http":
                "pipeline.yaml",
                "scripts/list.sh" as script,
                "scripts/fetch.sh" as script,
                "scripts/check.sh" as script,
                "sample-api/records/index.txt",
                "sample-api/records/101.json",
                "sample-api/records/102.json",
                "sample-api/records/103.json",
                "sample-api/records/104.json",
                "sample-api/records/105.json",
            ),
        }
    }
}

/// The schema of pipeline files, which each template's first line points editors at; written
/// by the binary that writes the pipeline, so it describes what that version reads.
const SCHEMA: &str = "pipeline.schema.json";

pub(super) fn exec(args: InitArgs) -> Outcome {
    let schema = super::schema::text();
    let files: Vec<File<'_>> = args
        .template
        .files()
        .iter()
        .copied()
        .chain([(SCHEMA, schema.as_str(), false)])
        .collect();
    // Nothing is written when anything would be overwritten.
    let existing: Vec<String> = files
        .iter()
        .map(|(path, _, _)| args.dir.join(path))
        .filter(|path| path.symlink_metadata().is_ok())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(CliError::Invalid(format!(
            "init writes no file that exists, and these do: {}",
            existing.join(", ")
        )));
    }
    let mut written = Vec::new();
    for (path, text, script) in &files {
        let path = args.dir.join(path);
        if let Err(error) = write(&path, text, *script) {
            // Nothing half-written stays behind to block the next try.
            for done in &written {
                let _ = std::fs::remove_file(done);
            }
            return Err(error);
        }
        written.push(path);
    }
    let file = args.dir.join("pipeline.yaml");
    say!(
        "wrote {} ({} files); next: `cd {}` and `migrationpilot run pipeline.yaml`",
        file.display(),
        files.len(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a new file (never replacing one), executable when it is a script.
fn write(path: &Path, text: &str, script: bool) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::Failed(format!("{}: {e}", path.display()));
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if script { 0o755 } else { 0o644 });
    }
    let _ = script;
    std::io::Write::write_all(&mut options.open(path).map_err(failed)?, text.as_bytes())
        .map_err(failed)
}
