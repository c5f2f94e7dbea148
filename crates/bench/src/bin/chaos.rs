//! The chaos harness: `migrationpilot simulate`'s simulator (one model of a failing
//! dependency, `self_healing::chaos`) run over pipeline files of four shapes, each healed by
//! four contenders: the recommended configuration (docs/HEALING.md); the seed's strategy list;
//! retry only with the seed's attempt budget (backon's style: backoff and nothing else); and no
//! healing. Each runs with several seeds; the table gives medians and ranges, `--json` every run.
//!
//! cargo run --release -p bench --bin chaos [-- --json] [--seed N] [--runs N]

use std::path::Path;

use migrationpilot::file::{self, Format};
use migrationpilot::simulate::{Contender, Job, Outcome, Simulator, report, run_all};
use self_healing::chaos::Scenario;

const ITEMS: u32 = 400;
const CONCURRENCY: usize = 8;

/// Which stages call the downstream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// One stage of 400 items.
    One,
    /// A local stage first (5 s, the `check-first` scenario's `local`), then one of 400 items:
    /// a fault that begins during the first is seen by a health check before any call.
    PrepareFirst,
    /// Two stages of 200 items that call the one downstream.
    Two,
    /// Three stages of 200 items that call the one downstream.
    Three,
}

impl Shape {
    /// The stages calling the downstream, with their items.
    fn callers(self) -> &'static [(&'static str, u32)] {
        match self {
            Shape::One | Shape::PrepareFirst => &[("load", ITEMS)],
            Shape::Two => &[("charge", 200), ("refund", 200)],
            Shape::Three => &[("extract", 200), ("transform", 200), ("load", 200)],
        }
    }

    /// The pipeline file of this shape, with `healing` as its healing section.
    fn file(self, healing: &str) -> String {
        let mut text = String::from("project: chaos\nstages:\n");
        if self == Shape::PrepareFirst {
            text.push_str("  - { name: prepare, command: [prepare] }\n");
        }
        for &(name, items) in self.callers() {
            let items: Vec<String> = (0..items).map(|i| i.to_string()).collect();
            text.push_str(&format!(
                "  - name: {name}\n    command: [call, \"{{item}}\"]\n    items: [{}]\n    \
                 concurrency: {CONCURRENCY}\n    timeout: 10s\n    maxRestarts: 10\n    \
                 reset: [reset]\n",
                items.join(", ")
            ));
        }
        text.push_str(healing);
        text
    }
}

/// Every contender samples metrics each second.
const BASE: &str = "healing:\n  metricsCollector: { sampleInterval: 1s }\n";

/// The seed's retry: five attempts, exponential from 1 s to 30 s, jittered, every error.
const RETRY_ONLY: &str = "healing:
  metricsCollector: { sampleInterval: 1s }
  retryPolicy: { maxAttempts: 5, backoff: exponential, initialDelay: 1000, maxDelay: 30000, jitter: true }
";

/// The seed's \"Strategy Configuration\" list, with the global `circuitBreaker` of the seed's
/// `SelfHealingConfig` (5 consecutive failures open it for 60 s; 3 probes, all must pass).
const SEED: &str = "healing:
  metricsCollector: { sampleInterval: 1s }
  circuitBreaker: { failureThreshold: 5, successThreshold: 3, breakDuration: 60000, halfOpenRequests: 3 }
  strategies:
    - name: retry-transient
      priority: 10
      triggers: [{ type: error, pattern: \"ECONNRESET|ETIMEDOUT|ECONNREFUSED\" }]
      action: retry
      config: { maxAttempts: 5, backoff: exponential, initialDelay: 1000, maxDelay: 30000, jitter: true }
    - name: circuit-breaker
      priority: 20
      triggers: [{ type: metrics, metric: errorRate, operator: gt, value: 0.5 }]
      action: circuit-break
      config: { breakDuration: 60000, halfOpenRequests: 3 }
      cooldown: 120000
    - name: scale-on-latency
      priority: 30
      triggers: [{ type: metrics, metric: latencyP95, operator: gt, value: 5000 }]
      action: scale
      config: { direction: up, amount: 2, maxInstances: 10 }
      cooldown: 300000
    - name: rollback-critical
      priority: 100
      triggers: [{ type: error, severity: critical }]
      action: rollback
      cooldown: 600000
";

/// The harness's contenders: a healing section, and how the simulator runs the file.
const CONTENDERS: [(&str, &str, Contender); 4] = [
    ("healer (recommended)", BASE, Contender::Recommended),
    ("healer (seed strategies)", SEED, Contender::ThisFile),
    ("retry only", RETRY_ONLY, Contender::ThisFile),
    ("no healing", BASE, Contender::NoHealing),
];

/// The harness's twelve scenarios: `simulate`'s catalog, on the shapes that show each, under
/// the labels the tables have always had.
const SCENARIOS: [(&str, &str, Shape); 12] = [
    ("transient 5%", "transient:rate=5%", Shape::One),
    ("transient 20%", "transient:rate=20%", Shape::One),
    // Recoverable by retrying long enough; not within the seed's budget of 5 attempts:
    // 0.5^5 = 3.1 % of the items fail every one of them.
    ("transient 50%", "transient:rate=50%", Shape::One),
    ("outage 30s", "outage", Shape::One),
    (
        "outage a check sees first",
        "check-first",
        Shape::PrepareFirst,
    ),
    ("shared dependency down", "shared", Shape::Two),
    ("latency x10 60s", "latency", Shape::One),
    // Meant to end in a rollback.
    ("critical error", "critical", Shape::One),
    ("flapping 1-3s", "flapping", Shape::One),
    // A restart running the stage's reset cures it.
    ("slow leak", "leak", Shape::One),
    ("crash loop", "crash-loop", Shape::One),
    ("50% errors on three stages", "stages", Shape::Three),
];

fn simulator(shape: Shape, healing: &str) -> Simulator {
    let path = Path::new("chaos.yaml");
    let loaded = file::parse(path, shape.file(healing), Format::Yaml, &|_| None)
        .unwrap_or_else(|e| panic!("the harness's file: {e}"));
    Simulator::new(loaded.file, path, loaded.text).unwrap_or_else(|errors| {
        panic!(
            "the harness's file: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let number = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{flag} takes a number, not `{s}`"))
            })
            .unwrap_or(default)
    };
    let first_seed = number("--seed", 42);
    let runs = number("--runs", 5).max(1);
    let seeds: Vec<u64> = (first_seed..first_seed + runs).collect();

    let scenarios: Vec<(Scenario, Shape)> = SCENARIOS
        .iter()
        .map(|&(label, spec, shape)| {
            let mut scenario: Scenario = spec.parse().expect("the harness's scenarios parse");
            scenario.label = label.to_owned();
            (scenario, shape)
        })
        .collect();
    // One simulator per shape and healing section.
    let mut simulators: Vec<(Shape, &str, Simulator)> = Vec::new();
    for &(_, shape) in &scenarios {
        for (_, healing, _) in CONTENDERS {
            if !simulators
                .iter()
                .any(|(s, h, _)| *s == shape && *h == healing)
            {
                simulators.push((shape, healing, simulator(shape, healing)));
            }
        }
    }
    let of = |shape: Shape, healing: &str| {
        &simulators
            .iter()
            .find(|(s, h, _)| *s == shape && *h == healing)
            .expect("made above")
            .2
    };
    let mut jobs = Vec::new();
    let mut names = Vec::new();
    for (scenario, shape) in &scenarios {
        for (name, healing, contender) in CONTENDERS {
            for &seed in &seeds {
                jobs.push(Job {
                    simulator: of(*shape, healing),
                    scenario,
                    contender,
                    seed,
                });
                names.push(name);
            }
        }
    }
    let outcomes: Vec<Outcome> = run_all(&jobs)
        .unwrap_or_else(|errors| panic!("{}", errors[0]))
        .into_iter()
        .zip(names)
        .map(|(outcome, name)| Outcome {
            contender: name,
            ..outcome
        })
        .collect();
    if json {
        let rows: Vec<String> = outcomes
            .iter()
            .map(|o| report::row(o).to_string())
            .collect();
        println!("[{}]", rows.join(",\n "));
        return;
    }
    println!(
        "{ITEMS} items, concurrency {CONCURRENCY} (the recommended healer adapts it), base latency \
         100ms up to 16 calls at once (600ms in the latency scenario), outages, spikes and \
         flapping from 2s, virtual time; seeds {first_seed}..={}: medians (ranges)\n",
        first_seed + runs - 1
    );
    print!("{}", report::table(&outcomes));
}
