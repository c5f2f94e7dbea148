//! Scenarios: a fault, which stages call the dependency that suffers it, and how a healthy call
//! behaves; read from `NAME[:key=value,…]`, with every name and parameter documented in
//! [`KINDS`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::{display, parse as parse_duration};

/// The longest duration a scenario takes for any of its times: faults of months are not what
/// a run sees.
pub const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest spell of flapping: shorter is noise no healing acts on, and a day of it would
/// take more memory than it is worth.
pub const SHORTEST_SPELL: Duration = Duration::from_millis(100);

/// What goes wrong with the dependency. Times count from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Each call fails with `code` with probability `rate` (0–1).
    Transient {
        /// The chance a call fails.
        rate: f64,
        /// The failed call's error code.
        code: Cow<'static, str>,
    },
    /// Every call is refused (`ECONNREFUSED`, fast) from `at` for `length`.
    Outage {
        /// When the dependency goes down.
        at: Duration,
        /// How long it stays down.
        length: Duration,
    },
    /// Calls take `factor` times as long from `at` for `length`.
    LatencySpike {
        /// When the spike starts.
        at: Duration,
        /// How long it lasts.
        length: Duration,
        /// How many times slower calls are.
        factor: u32,
    },
    /// One item's data is corrupt: every attempt at the `item`th item a stage calls with fails
    /// with a critical error that retries cannot fix. `None`: the middle item.
    Critical {
        /// The item's ordinal (from 0) among the items the stage called with.
        item: Option<u64>,
    },
    /// From `at`, the dependency goes down and comes back again and again, each spell lasting
    /// between `shortest` and `longest` (seeded). Not periodic: a fixed period that divides a
    /// breaker's break would put every probe in the same phase, a resonance real flapping lacks.
    Flapping {
        /// When the first spell begins.
        at: Duration,
        /// The shortest spell, up or down.
        shortest: Duration,
        /// The longest spell, up or down.
        longest: Duration,
    },
    /// Each call leaks: its latency grows by `per_call` for every call since the stage's last
    /// `reset`, until calls time out.
    Leak {
        /// The latency each call adds.
        per_call: Duration,
    },
    /// The caller's connection pool is exhausted after `calls` calls since the stage's last
    /// `reset`: every call then fails at once with `EPOOL`, retried or not, until a restart
    /// runs the reset.
    CrashLoop {
        /// Calls before the pool is exhausted.
        calls: u64,
    },
}

impl Fault {
    /// When the fault is over, if it ends: what time to recover counts from.
    pub fn ends(&self) -> Option<Duration> {
        match *self {
            Fault::Outage { at, length } | Fault::LatencySpike { at, length, .. } => {
                Some(at + length)
            }
            _ => None,
        }
    }

    /// When the fault begins: what time to detect counts from.
    pub fn starts(&self) -> Duration {
        match *self {
            Fault::Outage { at, .. }
            | Fault::LatencySpike { at, .. }
            | Fault::Flapping { at, .. } => at,
            _ => Duration::ZERO,
        }
    }
}

/// Which of a pipeline's stages call the dependency; the others do local work that takes
/// [`Scenario::local`] and never fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callers {
    /// The first stage with items (else the first stage): a pipeline's main work.
    Main,
    /// Every stage: one dependency they all share.
    All,
    /// Every stage but the first, which runs first as local work: a fault that begins during
    /// it is seen by a health check before any call.
    AllButFirst,
    /// These stages.
    Named(Vec<String>),
}

impl Callers {
    /// The calling stages among `stages` (name, whether it has items), in their order.
    pub fn of<'s>(&self, stages: &[(&'s str, bool)]) -> Vec<&'s str> {
        match self {
            Callers::Main => stages
                .iter()
                .find(|(_, items)| *items)
                .or(stages.first())
                .map(|(name, _)| *name)
                .into_iter()
                .collect(),
            Callers::All => stages.iter().map(|(name, _)| *name).collect(),
            Callers::AllButFirst => stages.iter().skip(1).map(|(name, _)| *name).collect(),
            Callers::Named(names) => stages
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| names.iter().any(|n| n == name))
                .collect(),
        }
    }
}

/// One scenario: a fault, its callers and the healthy dependency's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// What the table calls it: `outage 30s`.
    pub label: String,
    /// The kind, as written: `outage`.
    pub kind: &'static str,
    /// What goes wrong.
    pub fault: Fault,
    /// Which stages call the dependency.
    pub callers: Callers,
    /// A healthy call's latency (queueing past [`knee`](Self::knee) aside).
    pub latency: Duration,
    /// How long an attempt of a stage that does not call the dependency takes.
    pub local: Duration,
    /// Calls the dependency answers at once in its latency; beyond, they queue: latency grows
    /// in proportion to the calls in flight, so concurrency past this adds no throughput.
    pub knee: usize,
    /// Whether all the work can complete in principle (not after a critical error).
    pub recoverable: bool,
}

/// One parameter of a scenario kind.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The key.
    pub key: &'static str,
    /// Its default, as written.
    pub default: &'static str,
    /// What it sets.
    pub about: &'static str,
}

/// A scenario kind: its name, what it models and its parameters.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The name in `--scenario NAME[:k=v,…]`.
    pub name: &'static str,
    /// What it models.
    pub about: &'static str,
    /// Its own parameters (every kind also takes [`COMMON`]).
    pub params: &'static [Param],
}

const AT: Param = Param {
    key: "at",
    default: "2s",
    about: "when the fault begins, from the start of the run",
};
const FOR_OUTAGE: Param = Param {
    key: "for",
    default: "30s",
    about: "how long the dependency stays down",
};
const RATE: Param = Param {
    key: "rate",
    default: "5%",
    about: "the share of calls that fail (`20%` or `0.2`)",
};
const CODE: Param = Param {
    key: "code",
    default: "ECONNRESET",
    about: "the failed calls' error code",
};

/// The parameters every kind takes.
pub const COMMON: &[Param] = &[
    Param {
        key: "stage",
        default: "(the kind's)",
        about: "the stages that call the dependency, joined by `+` (`stage=load+verify`)",
    },
    Param {
        key: "latency",
        default: "100ms",
        about: "a healthy call's latency",
    },
    Param {
        key: "local",
        default: "100ms",
        about: "how long an attempt of a stage that does not call the dependency takes",
    },
    Param {
        key: "knee",
        default: "16",
        about: "calls answered at once; past it calls queue and take longer",
    },
];

/// Every scenario kind, in the order of [`Scenario::catalog`].
pub const KINDS: &[Kind] = &[
    Kind {
        name: "transient",
        about: "the main stage's calls fail at random (ECONNRESET)",
        params: &[RATE, CODE],
    },
    Kind {
        name: "outage",
        about: "the main stage's dependency refuses every call (ECONNREFUSED) for a while",
        params: &[AT, FOR_OUTAGE],
    },
    Kind {
        name: "check-first",
        about: "an outage that begins while the first stage does local work: a health check \
                can see it before any call (every stage but the first calls the dependency)",
        params: &[
            AT,
            FOR_OUTAGE,
            Param {
                key: "local",
                default: "5s",
                about: "how long the first stage's local work takes",
            },
        ],
    },
    Kind {
        name: "shared",
        about: "an outage of one dependency every stage calls",
        params: &[AT, FOR_OUTAGE],
    },
    Kind {
        name: "latency",
        about: "the main stage's calls become many times slower for a while",
        params: &[
            AT,
            Param {
                key: "for",
                default: "60s",
                about: "how long the spike lasts",
            },
            Param {
                key: "factor",
                default: "10",
                about: "how many times slower calls are",
            },
            Param {
                key: "latency",
                default: "600ms",
                about: "a healthy call's latency (slower here, so ten times it crosses the \
                        seed's `latencyP95 > 5000` trigger)",
            },
        ],
    },
    Kind {
        name: "critical",
        about: "one item's data is corrupt: a critical error retries cannot fix (meant to end \
                in a rollback)",
        params: &[Param {
            key: "item",
            default: "(the middle one)",
            about: "the ordinal (from 0) of the item that fails",
        }],
    },
    Kind {
        name: "flapping",
        about: "the main stage's dependency goes down and comes back, again and again",
        params: &[
            AT,
            Param {
                key: "min",
                default: "1s",
                about: "the shortest spell, up or down",
            },
            Param {
                key: "max",
                default: "3s",
                about: "the longest spell, up or down",
            },
        ],
    },
    Kind {
        name: "leak",
        about: "each call is slower than the last until the stage's reset runs (a restart \
                cures it)",
        params: &[Param {
            key: "per-call",
            default: "40ms",
            about: "the latency each call since the last reset adds",
        }],
    },
    Kind {
        name: "crash-loop",
        about: "the caller's pool is exhausted after some calls: every call then fails at once \
                (EPOOL) until a restart runs the stage's reset",
        params: &[Param {
            key: "calls",
            default: "100",
            about: "calls since the last reset before the pool is exhausted",
        }],
    },
    Kind {
        name: "stages",
        about: "every stage's calls fail at random",
        params: &[
            Param {
                key: "rate",
                default: "50%",
                about: "the share of calls that fail",
            },
            CODE,
        ],
    },
];

/// The twelve scenarios run when none is named: each kind with its defaults, and `transient`
/// at 5 %, 20 % and 50 %.
pub const CATALOG: [&str; 12] = [
    "transient:rate=5%",
    "transient:rate=20%",
    "transient:rate=50%",
    "outage",
    "check-first",
    "shared",
    "latency",
    "critical",
    "flapping",
    "leak",
    "crash-loop",
    "stages",
];

impl Scenario {
    /// The scenarios of [`CATALOG`].
    pub fn catalog() -> Vec<Scenario> {
        CATALOG
            .into_iter()
            .map(|spec| spec.parse().expect("the catalog's scenarios parse"))
            .collect()
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// `NAME[:key=value,…]`; the error names the kinds, or the keys the kind takes.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let name = name.trim();
        let kind = KINDS.iter().find(|k| k.name == name).ok_or_else(|| {
            format!(
                "`{name}` is not a scenario: use one of {}",
                KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        let given = pairs(rest, spec)?;
        for (key, _) in &given {
            if !kind.params.iter().chain(COMMON).any(|p| p.key == *key) {
                let keys: Vec<&str> = kind.params.iter().chain(COMMON).map(|p| p.key).collect();
                return Err(format!(
                    "`{key}` is not a parameter of `{name}` (it takes {})",
                    keys.join(", ")
                ));
            }
        }
        let get = |key: &str| given.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let duration = |key: &str, default: &str| -> Result<Duration, String> {
            let text = get(key).unwrap_or(default);
            let duration = parse_duration(text).map_err(|e| format!("`{key}` in `{spec}`: {e}"))?;
            if duration > LONGEST {
                return Err(format!(
                    "`{key}` in `{spec}`: `{text}` is longer than {}",
                    display(LONGEST)
                ));
            }
            Ok(duration)
        };
        let whole = |key: &str, default: u64| -> Result<u64, String> {
            get(key).map_or(Ok(default), |text| {
                text.parse()
                    .map_err(|_| format!("`{key}` in `{spec}`: `{text}` is not a whole number"))
            })
        };
        let rate = |default: f64| -> Result<f64, String> {
            let Some(text) = get("rate") else {
                return Ok(default);
            };
            share(text).ok_or_else(|| {
                format!("`rate` in `{spec}`: `{text}` is not a share from 0 to 100 %")
            })
        };
        let code =
            || -> Cow<'static, str> { get("code").unwrap_or("ECONNRESET").to_owned().into() };
        let at = duration("at", "2s")?;
        let (fault, callers, label) = match kind.name {
            "transient" => {
                let rate = rate(0.05)?;
                let label = format!("transient {}", percent(rate));
                (
                    Fault::Transient { rate, code: code() },
                    Callers::Main,
                    label,
                )
            }
            "outage" | "check-first" | "shared" => {
                let length = duration("for", "30s")?;
                let (callers, label) = match kind.name {
                    "outage" => (Callers::Main, format!("outage {}", short(length))),
                    "check-first" => (Callers::AllButFirst, "outage a check sees first".into()),
                    _ => (Callers::All, "shared dependency down".into()),
                };
                (Fault::Outage { at, length }, callers, label)
            }
            "latency" => {
                let length = duration("for", "60s")?;
                let factor = whole("factor", 10)?;
                let factor = u32::try_from(factor)
                    .ok()
                    .filter(|f| (1..=1000).contains(f))
                    .ok_or_else(|| format!("`factor` in `{spec}` must be from 1 to 1000"))?;
                let label = format!("latency x{factor} {}", short(length));
                (
                    Fault::LatencySpike { at, length, factor },
                    Callers::Main,
                    label,
                )
            }
            "critical" => {
                let item = get("item").map(|_| whole("item", 0)).transpose()?;
                (
                    Fault::Critical { item },
                    Callers::Main,
                    "critical error".into(),
                )
            }
            "flapping" => {
                let shortest = duration("min", "1s")?;
                let longest = duration("max", "3s")?;
                if shortest < SHORTEST_SPELL || longest < shortest {
                    return Err(format!(
                        "`min` and `max` in `{spec}`: need {} <= min <= max",
                        display(SHORTEST_SPELL)
                    ));
                }
                let label = if shortest.subsec_millis() == 0 && longest.subsec_millis() == 0 {
                    format!("flapping {}-{}s", shortest.as_secs(), longest.as_secs())
                } else {
                    format!("flapping {}-{}", short(shortest), short(longest))
                };
                (
                    Fault::Flapping {
                        at,
                        shortest,
                        longest,
                    },
                    Callers::Main,
                    label,
                )
            }
            "leak" => {
                let per_call = duration("per-call", "40ms")?;
                (Fault::Leak { per_call }, Callers::Main, "slow leak".into())
            }
            "crash-loop" => {
                let calls = whole("calls", 100)?;
                (
                    Fault::CrashLoop { calls },
                    Callers::Main,
                    "crash loop".into(),
                )
            }
            "stages" => {
                let rate = rate(0.5)?;
                let label = format!("{} errors on every stage", percent(rate));
                (Fault::Transient { rate, code: code() }, Callers::All, label)
            }
            other => unreachable!("`{other}` is in KINDS but not read"),
        };
        let callers = match get("stage") {
            Some(names) => Callers::Named(
                names
                    .split('+')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            None => callers,
        };
        let latency_default = if kind.name == "latency" {
            "600ms"
        } else {
            "100ms"
        };
        let local_default = if kind.name == "check-first" {
            "5s"
        } else {
            "100ms"
        };
        let knee = usize::try_from(whole("knee", 16)?)
            .ok()
            .filter(|k| (1..=100_000).contains(k))
            .ok_or_else(|| format!("`knee` in `{spec}` must be from 1 to 100000"))?;
        Ok(Scenario {
            // The parameters as given are added to the label (but a rate alone, which the
            // label shows): two scenarios differ in their labels.
            label: if given
                .iter()
                .all(|(key, _)| *key == "rate" && ["transient", "stages"].contains(&kind.name))
            {
                label
            } else {
                format!("{label} ({})", rest.trim())
            },
            kind: kind.name,
            fault,
            callers,
            latency: duration("latency", latency_default)?,
            local: duration("local", local_default)?,
            knee,
            recoverable: kind.name != "critical",
        })
    }
}

/// The `key=value` pairs of `text` (comma-separated), in order; `spec` names the whole in
/// errors: a pair without `=` or a key given twice is refused.
pub fn pairs<'t>(text: &'t str, spec: &str) -> Result<Vec<(&'t str, &'t str)>, String> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` in `{spec}`: write key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(format!("`{key}` is given twice in `{spec}`"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A share written `20%` or `0.2`, from 0 to 1; `None` if it is not one.
pub fn share(text: &str) -> Option<f64> {
    match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => text.parse::<f64>().ok(),
    }
    .filter(|share| (0.0..=1.0).contains(share))
}

/// A share as a percentage for people: `20%`, `7%`, `12.5%`.
pub fn percent(share: f64) -> String {
    format!("{}%", (share * 1000.0).round() / 10.0)
}

/// A duration in a label: whole seconds as `60s`, anything else as [`display`] writes it.
fn short(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        display(duration)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_twelve_scenarios_with_the_harness_labels() {
        let labels: Vec<String> = Scenario::catalog().into_iter().map(|s| s.label).collect();
        assert_eq!(
            labels,
            [
                "transient 5%",
                "transient 20%",
                "transient 50%",
                "outage 30s",
                "outage a check sees first",
                "shared dependency down",
                "latency x10 60s",
                "critical error",
                "flapping 1-3s",
                "slow leak",
                "crash loop",
                "50% errors on every stage",
            ]
        );
    }

    #[test]
    fn parameters_are_read_and_mistakes_named() {
        let s: Scenario = "outage:at=5s,for=1m,stage=load+verify".parse().unwrap();
        assert_eq!(
            s.fault,
            Fault::Outage {
                at: Duration::from_secs(5),
                length: Duration::from_secs(60)
            }
        );
        assert_eq!(
            s.callers,
            Callers::Named(vec!["load".into(), "verify".into()])
        );
        let t: Scenario = "transient:rate=0.3,code=ETIMEDOUT".parse().unwrap();
        assert!(
            matches!(t.fault, Fault::Transient { rate, ref code } if (rate - 0.3).abs() < 1e-9 && code == "ETIMEDOUT")
        );
        for (spec, says) in [
            (
                "blackout",
                "is not a scenario: use one of transient, outage",
            ),
            (
                "outage:length=3s",
                "`length` is not a parameter of `outage`",
            ),
            ("outage:for=ten", "`for` in `outage:for=ten`"),
            ("transient:rate=150%", "not a share from 0 to 100 %"),
            ("transient:rate", "write key=value"),
            ("outage:at=1s,at=2s", "`at` is given twice"),
            ("flapping:min=3s,max=1s", "need 100ms <= min <= max"),
            ("flapping:min=1ms,max=1ms", "need 100ms <= min <= max"),
            ("outage:for=400d", "is longer than 30d"),
            ("latency:factor=5000", "from 1 to 1000"),
        ] {
            let error = spec.parse::<Scenario>().unwrap_err();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }

    #[test]
    fn callers_resolve_against_the_stages() {
        let stages = [("prepare", false), ("load", true), ("verify", false)];
        assert_eq!(Callers::Main.of(&stages), ["load"]);
        assert_eq!(Callers::All.of(&stages), ["prepare", "load", "verify"]);
        assert_eq!(Callers::AllButFirst.of(&stages), ["load", "verify"]);
        assert_eq!(Callers::Main.of(&[("only", false)]), ["only"]);
        assert!(Callers::Named(vec!["nope".into()]).of(&stages).is_empty());
    }
}
