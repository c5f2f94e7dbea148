//! What simulated runs achieved: a table for people (medians over the seeds, with ranges), one
//! JSON row per run, and one sentence per scenario comparing the file's healing with the best
//! other contender.

use std::time::Duration;

use self_healing::RunStatus;
use serde_json::{Value, json};

use super::Outcome;
use super::contender::Contender;

/// One JSON object per run.
pub fn row(o: &Outcome) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    json!({
        "scenario": o.scenario,
        "contender": o.contender,
        "seed": o.seed,
        "recoverable": o.recoverable,
        "faultBegan": o.fault_began,
        "status": o.status.as_str(),
        "completedPct": (o.completed_pct * 10.0).round() / 10.0,
        "durationMs": o.duration.as_millis() as u64,
        "attempts": o.attempts,
        "callsWhileDown": o.calls_while_down,
        "avoidableCallsWhileDown": o.avoidable,
        "timeToDetectMs": ms(o.time_to_detect),
        "timeToRecoverMs": ms(o.time_to_recover),
        "healingActions": o.healing_actions,
        "alerts": o.alerts,
    })
}

/// A column over the runs of one scenario and contender: the median, and the range when the
/// runs differ.
pub fn spread<T: Copy + PartialOrd>(values: &[T], show: impl Fn(T) -> String) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return "-".to_owned();
    };
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    if lo == hi {
        show(median)
    } else {
        format!("{} ({}–{})", show(median), show(lo), show(hi))
    }
}

/// The statuses of the runs, counted: `succeeded` or `failed 3, succeeded 2`.
pub fn statuses(runs: &[&Outcome]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for run in runs {
        let status = run.status.as_str();
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    if counts.len() == 1 {
        return counts[0].0.to_owned();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// The table's header.
pub const HEADER: [&str; 11] = [
    "scenario",
    "contender",
    "status",
    "done %",
    "attempts",
    "down-hits",
    "avoidable",
    "detect s",
    "recover s",
    "actions",
    "duration s",
];

/// The table's row for the runs of one scenario and contender.
pub fn table_row(runs: &[&Outcome]) -> Vec<String> {
    let column = |f: &dyn Fn(&Outcome) -> u64| {
        spread(&runs.iter().map(|o| f(o)).collect::<Vec<_>>(), |v| {
            v.to_string()
        })
    };
    let times = |f: &dyn Fn(&Outcome) -> Option<Duration>| {
        spread(&runs.iter().filter_map(|o| f(o)).collect::<Vec<_>>(), secs)
    };
    let first = runs[0];
    vec![
        first.scenario.clone(),
        first.contender.to_owned(),
        statuses(runs),
        spread(
            &runs.iter().map(|o| o.completed_pct).collect::<Vec<_>>(),
            |v| format!("{v:.1}"),
        ),
        column(&|o| o.attempts),
        column(&|o| o.calls_while_down),
        column(&|o| o.avoidable),
        times(&|o| o.time_to_detect),
        times(&|o| o.time_to_recover),
        column(&|o| o.healing_actions),
        spread(&runs.iter().map(|o| o.duration).collect::<Vec<_>>(), secs),
    ]
}

/// A markdown table: one row per scenario and contender, in the order of `outcomes`.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    );
    for group in groups(outcomes) {
        out.push_str(&format!("| {} |\n", table_row(&group).join(" | ")));
    }
    out
}

/// The runs of each scenario and contender, in the order first seen.
fn groups(outcomes: &[Outcome]) -> Vec<Vec<&Outcome>> {
    let mut groups: Vec<Vec<&Outcome>> = Vec::new();
    for o in outcomes {
        match groups
            .iter_mut()
            .find(|g| g[0].scenario == o.scenario && g[0].contender == o.contender)
        {
            Some(group) => group.push(o),
            None => groups.push(vec![o]),
        }
    }
    groups
}

/// How well a contender did in a scenario, over its seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    /// Runs that ended as they should: succeeded, or rolled back where nothing could succeed.
    ended_well: usize,
    /// The median share done (recoverable scenarios only; else 0).
    done: f64,
    /// The median calls to the dependency while it was known to be down.
    avoidable: u64,
    /// The median duration, in seconds.
    seconds: f64,
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn score(runs: &[&Outcome]) -> Score {
    let recoverable = runs[0].recoverable;
    let well = |o: &&&Outcome| match o.status {
        RunStatus::Succeeded => recoverable,
        RunStatus::RolledBack => !recoverable,
        _ => false,
    };
    Score {
        ended_well: runs.iter().filter(well).count(),
        done: if recoverable {
            median(runs.iter().map(|o| o.completed_pct).collect())
        } else {
            0.0
        },
        avoidable: median(runs.iter().map(|o| o.avoidable).collect()),
        seconds: median(runs.iter().map(|o| o.duration.as_secs_f64()).collect()),
    }
}

/// What runs achieved, in words: `completes 100 % in 34.2 s` or `ends failed at 40 % after
/// 11.5 s (3 of 5 seeds)`.
fn achieved(runs: &[&Outcome]) -> String {
    let n = runs.len();
    let ended = median(runs.iter().map(|o| o.duration.as_secs_f64()).collect());
    let done = median(runs.iter().map(|o| o.completed_pct).collect());
    let mut text = match statuses(runs).as_str() {
        "succeeded" => format!("completes {done:.0} % in {ended:.1} s"),
        "rolled-back" => format!("rolls back after {ended:.1} s"),
        status if !status.contains(',') => {
            format!("ends {status} at {done:.1} % after {ended:.1} s")
        }
        mixed => format!("ends {mixed} of {n} seeds, {done:.1} % done in {ended:.1} s"),
    };
    let avoidable = median(runs.iter().map(|o| o.avoidable).collect());
    if avoidable > 0 {
        text.push_str(&format!(
            ", calling the dead dependency {avoidable} times after it was known down"
        ));
    }
    text
}

/// One sentence per scenario: what the file's healing achieves, and which contender does
/// better, if one does.
pub fn sentences(outcomes: &[Outcome]) -> Vec<String> {
    let groups = groups(outcomes);
    let mut scenarios: Vec<&str> = Vec::new();
    for g in &groups {
        if !scenarios.contains(&g[0].scenario.as_str()) {
            scenarios.push(&g[0].scenario);
        }
    }
    let mut said = Vec::new();
    for scenario in scenarios {
        let of: Vec<&Vec<&Outcome>> = groups
            .iter()
            .filter(|g| g[0].scenario == scenario)
            .collect();
        let Some(ours) = of
            .iter()
            .find(|g| g[0].contender == Contender::ThisFile.name())
        else {
            continue;
        };
        // The contender no later one beats: the one named if it beats the file.
        let best = of
            .iter()
            .filter(|g| g[0].contender != Contender::ThisFile.name())
            .fold(None::<&&Vec<&Outcome>>, |best, g| match best {
                Some(b) if !better(score(g), score(b)) => Some(b),
                _ => Some(g),
            });
        if !ours.iter().any(|o| o.fault_began) {
            said.push(format!(
                "{scenario}: this file {}, before the fault begins: give the scenario an \
                 earlier `at=` to see its healing.",
                achieved(ours)
            ));
            continue;
        }
        let mut sentence = format!("{scenario}: this file {}", achieved(ours));
        match best {
            Some(best) if better(score(best), score(ours)) => sentence.push_str(&format!(
                "; {} does better: it {}.",
                best[0].contender,
                achieved(best)
            )),
            _ => sentence.push_str("; no other contender does better."),
        }
        said.push(sentence);
    }
    said
}

/// Whether `a` is better than `b` by more than noise: more runs ending well, more done, or as
/// much done at least 5 % quicker without calling a dependency known to be down more often.
fn better(a: Score, b: Score) -> bool {
    if a.ended_well != b.ended_well {
        return a.ended_well > b.ended_well;
    }
    if (a.done - b.done).abs() >= 0.1 {
        return a.done > b.done;
    }
    a.seconds < b.seconds * 0.95 && a.avoidable <= b.avoidable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(contender: &'static str, status: RunStatus, pct: f64, secs: u64) -> Outcome {
        Outcome {
            scenario: "outage 30s".into(),
            contender,
            seed: 1,
            recoverable: true,
            fault_began: true,
            status,
            completed_pct: pct,
            duration: Duration::from_secs(secs),
            attempts: 10,
            calls_while_down: 0,
            avoidable: 0,
            time_to_detect: None,
            time_to_recover: None,
            healing_actions: 0,
            alerts: 0,
        }
    }

    #[test]
    fn the_sentence_names_a_better_contender_and_only_a_better_one() {
        let runs = [
            outcome("this file", RunStatus::Failed, 40.0, 11),
            outcome("recommended", RunStatus::Succeeded, 100.0, 34),
            outcome("retry only", RunStatus::Failed, 40.0, 12),
        ];
        assert_eq!(
            sentences(&runs),
            [
                "outage 30s: this file ends failed at 40.0 % after 11.0 s; recommended does \
              better: it completes 100 % in 34.0 s."
            ]
        );
        let runs = [
            outcome("this file", RunStatus::Succeeded, 100.0, 30),
            outcome("recommended", RunStatus::Succeeded, 100.0, 29),
        ];
        assert_eq!(
            sentences(&runs),
            ["outage 30s: this file completes 100 % in 30.0 s; no other contender does better."]
        );
    }

    #[test]
    fn a_row_has_the_documented_keys() {
        let row = row(&outcome("this file", RunStatus::Succeeded, 100.0, 3));
        for key in [
            "scenario",
            "contender",
            "seed",
            "recoverable",
            "status",
            "completedPct",
            "durationMs",
            "attempts",
            "callsWhileDown",
            "healingActions",
        ] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
        assert_eq!(row["durationMs"], 3000);
    }
}
