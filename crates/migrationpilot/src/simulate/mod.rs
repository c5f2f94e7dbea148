//! `simulate`: a pipeline file's own pipeline, healer and health monitor, built by the code
//! `run` builds them with, run in virtual time against a modelled dependency
//! (`self_healing::chaos`) instead of the world: no command runs, no check reaches out, no
//! alert is sent. Beside the file's own healing run three other contenders (`contender.rs`);
//! `report.rs` tells what each achieved.
//!
//! Each simulated run has its own single-threaded runtime on paused time, so runs are
//! independent of each other and of the machine's speed: the same file, scenario, contender
//! and seed give the same outcome.

pub mod contender;
mod model;
pub mod replay;
pub mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::chaos::{Downstream, Fault, Scenario};
use self_healing::event::{Event, EventKind, HealthStatus};
use self_healing::{PipelineMetrics, RunReport, RunStatus};

use crate::build;
use crate::file::{FileError, PipelineFile};
pub use contender::Contender;
use model::{Kept, Model};

/// The longest a simulated run may last, in virtual time: past it, it is reported as not
/// ending rather than left to run for ever.
pub const LONGEST_RUN: Duration = Duration::from_secs(90 * 24 * 3600);

/// A pipeline file ready to be simulated.
#[derive(Debug)]
pub struct Simulator {
    file: PipelineFile,
    path: PathBuf,
    text: String,
    /// What the simulation leaves out of the file, said once.
    notes: Vec<String>,
    /// The items of each stage with items, counted once.
    items: HashMap<String, u64>,
}

/// What one contender achieved in one scenario with one seed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's label.
    pub scenario: String,
    /// Who healed.
    pub contender: &'static str,
    /// The seed of the run's randomness (jitter, the dependency's failures).
    pub seed: u64,
    /// Whether all the work could complete in principle.
    pub recoverable: bool,
    /// Whether the fault had begun before the run ended: a short run can end first.
    pub fault_began: bool,
    /// How the run ended.
    pub status: RunStatus,
    /// The share of the calling stages' work done, in percent.
    pub completed_pct: f64,
    /// The run's length, in virtual time.
    pub duration: Duration,
    /// Calls to the dependency.
    pub attempts: u64,
    /// Calls made while it was down.
    pub calls_while_down: u64,
    /// Of those, the ones made after the spell was known.
    pub avoidable: u64,
    /// From the fault's start to the first healing action, if any.
    pub time_to_detect: Option<Duration>,
    /// From the fault's end to the first call that succeeded, for faults that end.
    pub time_to_recover: Option<Duration>,
    /// Healing actions applied.
    pub healing_actions: u64,
    /// Alerts that would have been sent.
    pub alerts: u64,
}

impl Simulator {
    /// The file at `path`, as read (`text`) and parsed; what it does that a simulation cannot
    /// (run commands as triggers and actions) is left out and said in [`notes`](Self::notes).
    /// The file is built, and its stages' items counted, by a run in which nothing fails.
    pub fn new(file: PipelineFile, path: &Path, text: String) -> Result<Self, Vec<FileError>> {
        let mut file = file;
        let notes = contender::without_commands(&mut file);
        let mut simulator = Simulator {
            file,
            path: path.to_owned(),
            text,
            notes,
            items: HashMap::new(),
        };
        // Counted by a run in which every call succeeds at once.
        let census: Scenario = "transient:rate=0,latency=0ms,local=0ms"
            .parse()
            .expect("the census scenario parses");
        let (_, items) = simulator.simulate(&census, Contender::NoHealing, 0)?;
        simulator.items = items;
        Ok(simulator)
    }

    /// What the simulation leaves out of the file.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The units of work `stage` has: its items, or its one attempt for a stage without.
    fn units_of(&self, stage: &str) -> u64 {
        self.items.get(stage).copied().unwrap_or(1).max(1)
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.file.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// The stages' names, with whether each has items.
    fn stages(&self) -> Vec<(&str, bool)> {
        self.file
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.items.is_some()))
            .collect()
    }

    /// Runs `contender` against `scenario` with `seed`, on a runtime of its own.
    pub fn run(
        &self,
        scenario: &Scenario,
        contender: Contender,
        seed: u64,
    ) -> Result<Outcome, Vec<FileError>> {
        self.simulate(scenario, contender, seed)
            .map(|(outcome, _)| outcome)
    }

    fn simulate(
        &self,
        scenario: &Scenario,
        contender: Contender,
        seed: u64,
    ) -> Result<(Outcome, HashMap<String, u64>), Vec<FileError>> {
        let stages = self.stages();
        let callers: Vec<String> = scenario
            .callers
            .of(&stages)
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Items a stage without items stands for: its one attempt.
        let mut scenario = scenario.clone();
        if let Fault::Critical { item: None } = scenario.fault {
            let first = callers.first().map_or(1, |stage| self.units_of(stage));
            scenario.fault = Fault::Critical {
                item: Some(first / 2),
            };
        }
        let file = contender.fit(&self.file);
        // On a thread of its own: the caller may be inside a runtime already (the command line).
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.on_paused_time(&scenario, contender, seed, &callers, &file))
                .join()
                .expect("a simulated run does not panic")
        })
    }

    fn on_paused_time(
        &self,
        scenario: &Scenario,
        contender: Contender,
        seed: u64,
        callers: &[String],
        file: &PipelineFile,
    ) -> Result<(Outcome, HashMap<String, u64>), Vec<FileError>> {
        paused_runtime().block_on(async {
            let downstream = Arc::new(Downstream::new(scenario, seed));
            let model = Arc::new(Model::new(
                Arc::clone(&downstream),
                callers.to_vec(),
                scenario.local,
                scenario.latency,
            ));
            let kept = Arc::new(Kept::default());
            let seen = Arc::clone(&downstream);
            let ran = self
                .execute(
                    file,
                    seed,
                    &model.modelled(Arc::clone(&kept)),
                    move || seen.seen_down(),
                    scenario.fault.starts(),
                )
                .await?;
            let report = &ran.report;
            let (mut done, mut total) = (0u64, 0u64);
            for stage in callers {
                let items = self.units_of(stage);
                total += items;
                let has_items = self.items.contains_key(stage);
                done += report
                    .stages
                    .iter()
                    .filter(|s| &*s.stage == stage)
                    .map(|s| {
                        if has_items {
                            s.items_completed.min(items)
                        } else {
                            u64::from(s.succeeded())
                        }
                    })
                    .max()
                    .unwrap_or(0);
            }
            let tally = downstream.tally();
            let outcome = Outcome {
                scenario: scenario.label.clone(),
                contender: contender.name(),
                seed,
                recoverable: scenario.recoverable,
                fault_began: report.duration >= scenario.fault.starts(),
                status: report.status,
                completed_pct: if total == 0 {
                    100.0
                } else {
                    100.0 * done as f64 / total as f64
                },
                duration: report.duration,
                attempts: tally.calls,
                calls_while_down: tally.calls_while_down,
                avoidable: tally.avoidable,
                time_to_detect: ran.detected,
                time_to_recover: tally.time_to_recover,
                healing_actions: ran.actions,
                alerts: kept.count(),
            };
            let seen = model
                .items_seen()
                .into_iter()
                .filter(|(stage, _)| {
                    self.file
                        .stages
                        .iter()
                        .any(|s| &s.name == stage && s.items.is_some())
                })
                .collect();
            Ok((outcome, seen))
        })
    }

    /// Builds `file` with `modelled` in place of the world and runs it on the current (paused)
    /// runtime; `on_unhealthy` hears each check going unhealthy; the first healing action
    /// from `fault_start` on is the detection.
    async fn execute(
        &self,
        file: &PipelineFile,
        seed: u64,
        modelled: &build::Modelled,
        on_unhealthy: impl Fn() + Send + Sync + 'static,
        fault_start: Duration,
    ) -> Result<Ran, Vec<FileError>> {
        let built = build::build_modelled(file, &self.path, &self.text, Some(seed), modelled)?;
        if let Some(monitor) = &built.monitor {
            monitor.on_health_changed(move |change| {
                if change.new_status == HealthStatus::Unhealthy {
                    on_unhealthy();
                }
            });
        }
        let detected: Arc<Mutex<Option<Duration>>> = Arc::default();
        let actions = Arc::new(AtomicU64::new(0));
        let decisions = Arc::new(AtomicU64::new(0));
        let (det, act, dec, start) = (
            Arc::clone(&detected),
            Arc::clone(&actions),
            Arc::clone(&decisions),
            tokio::time::Instant::now(),
        );
        built
            .pipeline
            .events()
            .add_sink(Arc::new(move |event: &Event| match event.kind {
                EventKind::HealingApplied { .. } => {
                    act.fetch_add(1, Ordering::Relaxed);
                    let t = start.elapsed();
                    let mut first = det.lock().expect("not poisoned");
                    if t >= fault_start && first.is_none() {
                        *first = Some(t - fault_start);
                    }
                }
                EventKind::HealingDecision { .. } => {
                    dec.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }));
        if let Some(monitor) = &built.monitor {
            monitor.start();
        }
        let report = tokio::time::timeout(LONGEST_RUN, built.pipeline.execute(())).await;
        if let Some(monitor) = &built.monitor {
            monitor.stop();
        }
        // Alerts still gathering (their `groupWait`) go out, so they are counted.
        built
            .healer
            .alerts()
            .settle(crate::session::ALERT_GRACE)
            .await;
        let report = report.map_err(|_| {
            vec![FileError {
                file: self.path.clone(),
                line: None,
                column: None,
                path: None,
                message: format!(
                    "the simulated run did not end within {} of virtual time",
                    self_healing::duration::display(LONGEST_RUN)
                ),
            }]
        })?;
        let detected = *detected.lock().expect("not poisoned");
        Ok(Ran {
            report,
            detected,
            actions: actions.load(Ordering::Relaxed),
            decisions: decisions.load(Ordering::Relaxed),
        })
    }
}

/// A recorded run and its replay against a file, side by side.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The recorded run's id.
    pub run: String,
    /// How the recording ended (`None`: it never did) and how the replay did.
    pub status: (Option<RunStatus>, RunStatus),
    /// The totals of each, as `runs show` gives them (`None`: the recording never ended).
    pub metrics: (Option<PipelineMetrics>, PipelineMetrics),
    /// The healing decisions of each.
    pub decisions: (u64, u64),
    /// The attempts of each.
    pub attempts: (u64, u64),
    /// Of the replay's attempts, those the recording lacked, drawn from their stage's recorded
    /// behaviour at the time.
    pub drawn: u64,
}

impl Simulator {
    /// Runs the file's own healing against `recording` in virtual time, `seed` drawing its
    /// jitter.
    pub fn replay(
        &self,
        recording: Arc<replay::Recording>,
        seed: u64,
    ) -> Result<Replayed, Vec<FileError>> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    paused_runtime().block_on(async {
                        let replayer = Arc::new(replay::Replayer::new(Arc::clone(&recording)));
                        let probes = Arc::clone(&replayer);
                        let modelled = build::Modelled {
                            runner: Arc::clone(&replayer) as Arc<dyn build::Runner>,
                            check: Arc::new(move |name: &str| probes.probe(name)),
                            channel: Arc::new(Kept::default()),
                        };
                        let ran = self
                            .execute(&self.file, seed, &modelled, || {}, Duration::ZERO)
                            .await?;
                        Ok(Replayed {
                            run: recording.run.clone(),
                            status: (recording.status, ran.report.status),
                            metrics: (recording.metrics.clone(), ran.report.metrics),
                            decisions: (recording.decisions, ran.decisions),
                            attempts: (recording.attempts, replayer.answered()),
                            drawn: replayer.drawn(),
                        })
                    })
                })
                .join()
                .expect("a replay does not panic")
        })
    }
}

/// What a simulated run did, besides its report.
struct Ran {
    report: RunReport,
    detected: Option<Duration>,
    actions: u64,
    decisions: u64,
}

/// A single-threaded runtime on paused time: its clock moves only when every task waits.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a single-threaded runtime")
}

/// One simulated run to make.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The file.
    pub simulator: &'a Simulator,
    /// What goes wrong.
    pub scenario: &'a Scenario,
    /// Who heals.
    pub contender: Contender,
    /// The seed of the run's randomness.
    pub seed: u64,
}

/// Makes every run, spread over the machine's cores; the outcomes in the order of `jobs`, or
/// the first file's problems.
pub fn run_all(jobs: &[Job<'_>]) -> Result<Vec<Outcome>, Vec<FileError>> {
    let next = AtomicUsize::new(0);
    type Slot = Mutex<Option<Result<Outcome, Vec<FileError>>>>;
    let results: Vec<Slot> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let outcome = job.simulator.run(job.scenario, job.contender, job.seed);
                    *results[i].lock().expect("not poisoned") = Some(outcome);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("not poisoned")
                .expect("every job ran")
        })
        .collect()
}
