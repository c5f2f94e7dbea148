//! `simulate`: what a file's healing does against modelled faults, beside the other
//! contenders, in virtual time; nothing is run, probed or sent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use migrationpilot::error::CliError;
use migrationpilot::file;
use migrationpilot::session;
use migrationpilot::simulate::replay::{Recording, Unreplayable};
use migrationpilot::simulate::{Contender, Job, Replayed, Simulator, report, run_all};
use migrationpilot::store::Access;
use self_healing::chaos::{CATALOG, COMMON, Callers, KINDS, Scenario};
use self_healing::{PipelineMetrics, RunStatus};

use super::{Outcome as Exit, print_json};

/// The most seeds a scenario and contender run with.
const MOST_SEEDS: u64 = 1000;

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
    /// Replay a recorded run: its attempts and health changes, from the store's journal, are
    /// the model; prints the recorded run and the replay side by side.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["scenario", "list", "seeds"])]
    replay: Option<String>,
}

pub(super) async fn exec(store_url: Option<String>, args: SimulateArgs) -> Exit {
    if args.list {
        list();
        return Ok(ExitCode::SUCCESS);
    }
    let Some(path) = args.file else {
        return Err(CliError::Invalid("give a pipeline file".into()));
    };
    if !(1..=MOST_SEEDS).contains(&args.seeds) {
        return Err(CliError::Invalid(format!(
            "--seeds must be from 1 to {MOST_SEEDS}"
        )));
    }
    let last_seed = args.seed.checked_add(args.seeds - 1).ok_or_else(|| {
        CliError::Invalid(format!(
            "--seed {} leaves no room for {} seeds",
            args.seed, args.seeds
        ))
    })?;
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
    let loaded = file::load(&path)?;
    let secrets = loaded.secrets.clone();
    let report_errors =
        |errors: Vec<file::FileError>| session::file_errors(&path, &errors, &secrets);
    let simulator = Simulator::new(loaded.file, &path, loaded.text).map_err(report_errors)?;
    let stages = simulator.stage_names();
    for scenario in &scenarios {
        if let Callers::Named(names) = &scenario.callers {
            for name in names {
                if !stages.contains(&name.as_str()) {
                    return Err(CliError::Invalid(format!(
                        "--scenario {}: the file has no stage `{name}` (it has {})",
                        scenario.label,
                        stages.join(", ")
                    )));
                }
            }
        }
    }
    if !args.json {
        for note in simulator.notes() {
            say!("note: {note}");
        }
    }
    if let Some(run) = &args.replay {
        return replay(
            store_url,
            &simulator,
            run,
            args.seed,
            args.json,
            &report_errors,
        )
        .await;
    }
    let seeds: Vec<u64> = (args.seed..=last_seed).collect();
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
    let outcomes = run_all(&jobs).map_err(report_errors)?;
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

/// Replays `run` against the file and prints both side by side.
async fn replay(
    store_url: Option<String>,
    simulator: &Simulator,
    run: &str,
    seed: u64,
    json: bool,
    report_errors: &dyn Fn(Vec<file::FileError>) -> CliError,
) -> Exit {
    let store = session::open_store(store_url, Access::ReadOnly).await?;
    let recording = Recording::read(&*store, run)
        .await
        .map_err(|why| match why {
            Unreplayable::Store(error) => error.into(),
            Unreplayable::Refused(why) => CliError::Invalid(why),
        })?;
    let unreached: Vec<String> = recording
        .unreached(&simulator.stage_names())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let replayed = simulator
        .replay(std::sync::Arc::new(recording), seed)
        .map_err(report_errors)?;
    let side = |status: Option<RunStatus>,
                metrics: Option<&PipelineMetrics>,
                decisions: u64,
                attempts: u64| {
        serde_json::json!({
            "status": status.map(RunStatus::as_str),
            "metrics": metrics,
            "decisions": decisions,
            "attempts": attempts,
        })
    };
    let Replayed {
        status,
        metrics,
        decisions,
        attempts,
        drawn,
        ..
    } = &replayed;
    if json {
        print_json(&serde_json::json!({
            "run": replayed.run,
            "unreachedStages": unreached,
            "seed": seed,
            "recorded": side(status.0, metrics.0.as_ref(), decisions.0, attempts.0),
            "simulated": side(Some(status.1), Some(&metrics.1), decisions.1, attempts.1),
            "drawnAttempts": drawn,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    say!("replaying {run} in virtual time, seed {seed}\n");
    say!("{:<16} {:>14} {:>14}", "", "recorded", "replayed");
    let row = |name: &str, recorded: String, replayed: String| {
        say!("{name:<16} {recorded:>14} {replayed:>14}");
    };
    row(
        "status",
        status.0.map_or("unfinished", RunStatus::as_str).to_owned(),
        status.1.as_str().to_owned(),
    );
    let of = |f: &dyn Fn(&PipelineMetrics) -> String| {
        (
            metrics.0.as_ref().map_or_else(|| "-".to_owned(), f),
            f(&metrics.1),
        )
    };
    for (name, f) in [
        (
            "duration",
            &(|m: &PipelineMetrics| format!("{:.1} ms", m.total_duration.as_secs_f64() * 1000.0))
                as &dyn Fn(&PipelineMetrics) -> String,
        ),
        ("retries", &|m: &PipelineMetrics| m.retry_count.to_string()),
        ("healing events", &|m: &PipelineMetrics| {
            m.healing_events.to_string()
        }),
        ("rollbacks", &|m: &PipelineMetrics| {
            m.rollback_count.to_string()
        }),
        ("error rate", &|m: &PipelineMetrics| {
            format!("{:.3}", m.error_rate)
        }),
    ] {
        let (recorded, replayed) = of(f);
        row(name, recorded, replayed);
    }
    row(
        "decisions",
        decisions.0.to_string(),
        decisions.1.to_string(),
    );
    row("attempts", attempts.0.to_string(), attempts.1.to_string());
    say!(
        "\n{drawn} of the replay's attempts were not in the recording: drawn from their stage's recorded attempts nearest in time"
    );
    if !unreached.is_empty() {
        say!(
            "stages the recording never reached (their attempts succeed at once): {}",
            unreached.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
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
