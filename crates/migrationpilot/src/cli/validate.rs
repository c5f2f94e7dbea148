//! `validate`: checks a pipeline file without running it or opening a store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use migrationpilot::session;

use super::Outcome;

#[derive(Args)]
pub(super) struct ValidateArgs {
    /// The pipeline file (.yaml, .yml or .toml).
    file: PathBuf,
}

pub(super) fn exec(args: ValidateArgs) -> Outcome {
    let path = args.file;
    let built = session::load(&path, None, None, None)?;
    let stages = built.pipeline.stage_names().count();
    let strategies = built.healer.strategies().len();
    let checks = built.monitor.as_ref().map_or(0, |m| m.report().len());
    let thresholds = built.healer.thresholds().len();
    let channels = built.healer.alerts().channels().len();
    say!(
        "{}: ok: project `{}`, {stages} stage(s), {strategies} strategy(ies), {checks} health check(s), {thresholds} alert threshold(s), {channels} alert channel(s)",
        path.display(),
        built.project
    );
    Ok(ExitCode::SUCCESS)
}
