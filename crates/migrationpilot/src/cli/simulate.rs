//! `simulate`: what a file's healing does against modelled faults, beside the other
//! contenders, in virtual time; nothing is run, probed or sent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use migrationpilot::error::CliError;
use migrationpilot::file;
use migrationpilot::simulate::{Contender, Job, Simulator, report, run_all};
use self_healing::chaos::{CATALOG, COMMON, KINDS, Scenario};

use super::{Outcome as Exit, print_json};

#[derive(Args)]
pub(super) struct SimulateArgs {
    /// The pipeline file (.yaml, .yml or .toml).
    #[arg(required_unless_present = "list")]
    file: Option<PathBuf>,
    /// A scenario, `NAME[:key=value,…]` (`outage:for=1m`); repeat for several. Default: the
    /// twelve of `--list`.
    #[arg(long, value_name = "SPEC")]
    scenario: Vec<String>,
    /// How many seeds each scenario and contender runs with.
    #[arg(long, value_name = "N", default_value_t = 5)]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,
    /// Print one JSON document: the notes, a row per run and a sentence per scenario.
    #[arg(long)]
    json: bool,
    /// List the scenarios and their parameters.
    #[arg(long)]
    list: bool,
}

pub(super) fn exec(args: SimulateArgs) -> Exit {
    if args.list {
        list();
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = args.file else {
        return Err(CliError::Invalid("give a pipeline file".into()));
    };
    if args.seeds == 0 {
        return Err(CliError::Invalid("--seeds must be at least 1".into()));
    }
    let scenarios: Vec<Scenario> = if args.scenario.is_empty() {
        Scenario::catalog()
    } else {
        args.scenario
            .iter()
            .map(|spec| {
                spec.parse()
                    .map_err(|e| CliError::Invalid(format!("--scenario: {e}")))
            })
            .collect::<Result<_, _>>()?
    };
    let loaded = file::load(&path).map_err(|e| report_errors(&path, vec![e]))?;
    let simulator = Simulator::new(loaded.file, &path, loaded.text)
        .map_err(|errors| report_errors(&path, errors))?;
    if !args.json {
        for note in simulator.notes() {
            say!("note: {note}");
        }
    }
    let seeds: Vec<u64> = (args.seed..args.seed.saturating_add(args.seeds)).collect();
    let mut jobs = Vec::new();
    for scenario in &scenarios {
        for contender in Contender::ALL {
            for &seed in &seeds {
                jobs.push(Job {
                    simulator: &simulator,
                    scenario,
                    contender,
                    seed,
                });
            }
        }
    }
    let outcomes = run_all(&jobs).map_err(|e| report_errors(&path, e))?;
    let sentences = report::sentences(&outcomes);
    if args.json {
        print_json(&serde_json::json!({
            "file": path.display().to_string(),
            "notes": simulator.notes(),
            "rows": outcomes.iter().map(report::row).collect::<Vec<_>>(),
            "summary": sentences,
        }));
    } else {
        say!(
            "{} in virtual time; seeds {}..={}: medians (ranges)\n",
            path.display(),
            seeds[0],
            seeds[seeds.len() - 1]
        );
        say!("{}", report::table(&outcomes));
        for sentence in &sentences {
            say!("{sentence}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each problem with its place, as `validate` does.
fn report_errors(path: &std::path::Path, errors: Vec<file::FileError>) -> CliError {
    for error in &errors {
        migrationpilot::terminal::eprint_line(format_args!("{error}"));
    }
    CliError::File {
        path: path.display().to_string(),
        count: errors.len(),
    }
}

fn list() {
    say!("scenarios (`--scenario NAME[:key=value,…]`; with none, the twelve below):\n");
    for kind in KINDS {
        say!("{}: {}", kind.name, kind.about);
        for param in kind.params {
            say!("    {}={}  {}", param.key, param.default, param.about);
        }
    }
    say!("\nevery scenario also takes:");
    for param in COMMON {
        say!("    {}={}  {}", param.key, param.default, param.about);
    }
    say!("\nrun when none is named:");
    for (spec, scenario) in CATALOG.iter().zip(Scenario::catalog()) {
        say!("    {spec:<20} {scenario}");
    }
    say!(
        "\ncontenders: {}",
        Contender::ALL.map(Contender::name).join(", ")
    );
}
