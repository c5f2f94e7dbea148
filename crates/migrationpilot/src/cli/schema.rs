//! `schema`: the JSON Schema of pipeline files, for editors (yaml-language-server, taplo) and
//! validators, generated from the configuration types the loader reads.

use std::process::ExitCode;

use clap::Args;

use super::Outcome;

#[derive(Args)]
pub(super) struct SchemaArgs {}

pub(super) fn exec(_: SchemaArgs) -> Outcome {
    migrationpilot::terminal::print_raw(&text());
    Ok(ExitCode::SUCCESS)
}

/// The schema as `schema` prints it and `init` writes it: pretty JSON and a final newline.
pub(super) fn text() -> String {
    let schema = migrationpilot::schema::schema();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}
