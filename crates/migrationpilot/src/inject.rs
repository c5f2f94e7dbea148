//! `run --chaos`: faults injected into a real run, for staging. Each `--chaos SPEC` is one of
//!
//! - `fail=P%[,code=C][,stage=S]`: a share of the stage's attempts (every stage's without
//!   `stage`) fail before their command runs, with code `C` (default `ECONNRESET`);
//! - `latency=D[,stage=S]`: each attempt waits `D` before its command runs (its timeout counts
//!   the wait);
//! - `down=CHECK,at=T,for=D`: the health check fails from `T` after the run starts, for `D`.
//!
//! An injected failure is an attempt's error like any other (journaled, healed, counted under
//! its code, shown by `runs show` and the progress lines), marked as injected: its message
//! starts with `injected by --chaos` and its rule is [`StageError::INJECTED_RULE`]. Injection happens where the run
//! decides where an attempt runs, so a run that hands its attempts to workers injects into
//! theirs too. Nothing is injected without the flag; `--seed` draws the same failures again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self_healing::BoxFuture;
use self_healing::StageError;
use self_healing::chaos;
use self_healing::duration::{display, parse as parse_duration};
use self_healing::health::{Check, CheckError, CheckSpec};

/// One fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// A share of attempts fail with `code`.
    Fail {
        /// The share, 0–1.
        rate: f64,
        /// The injected error's code.
        code: String,
        /// Only this stage's attempts; `None`: every stage's.
        stage: Option<String>,
    },
    /// Each attempt waits this long first.
    Latency {
        /// The wait.
        delay: Duration,
        /// Only this stage's attempts; `None`: every stage's.
        stage: Option<String>,
    },
    /// A health check fails for a while.
    Down {
        /// The check.
        check: String,
        /// From the start of the run.
        at: Duration,
        /// For how long.
        length: Duration,
    },
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injection::Fail { rate, code, stage } => {
                write!(f, "fail={},code={code}", chaos::percent(*rate))?;
                stage.as_ref().map_or(Ok(()), |s| write!(f, ",stage={s}"))
            }
            Injection::Latency { delay, stage } => {
                write!(f, "latency={}", display(*delay))?;
                stage.as_ref().map_or(Ok(()), |s| write!(f, ",stage={s}"))
            }
            Injection::Down { check, at, length } => {
                write!(
                    f,
                    "down={check},at={},for={}",
                    display(*at),
                    display(*length)
                )
            }
        }
    }
}

impl std::str::FromStr for Injection {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let pairs = chaos::pairs(spec, spec)?;
        let Some(&(kind, first)) = pairs.first() else {
            return Err("an empty --chaos: give fail=P%, latency=D or down=CHECK".into());
        };
        let takes = |allowed: &[&str]| -> Result<(), String> {
            match pairs.iter().skip(1).find(|(k, _)| !allowed.contains(k)) {
                Some((key, _)) => Err(format!(
                    "`{key}` does not go with `{kind}` in `{spec}` (it takes {})",
                    allowed.join(", ")
                )),
                None => Ok(()),
            }
        };
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let duration = |key: &str, text: &str| {
            let duration = parse_duration(text).map_err(|e| format!("`{key}` in `{spec}`: {e}"))?;
            if duration > chaos::LONGEST {
                return Err(format!(
                    "`{key}` in `{spec}`: `{text}` is longer than {}",
                    display(chaos::LONGEST)
                ));
            }
            Ok(duration)
        };
        let stage = get("stage").map(str::to_owned);
        match kind {
            "fail" => {
                takes(&["code", "stage"])?;
                let rate = chaos::share(first).ok_or_else(|| {
                    format!("`fail` in `{spec}`: `{first}` is not a share from 0 to 100 %")
                })?;
                let code = get("code").unwrap_or("ECONNRESET");
                if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`code` in `{spec}`: `{code}` is not a code (letters, digits and _)"
                    ));
                }
                Ok(Injection::Fail {
                    rate,
                    code: code.to_owned(),
                    stage,
                })
            }
            "latency" => {
                takes(&["stage"])?;
                Ok(Injection::Latency {
                    delay: duration("latency", first)?,
                    stage,
                })
            }
            "down" => {
                takes(&["at", "for"])?;
                let length =
                    get("for").ok_or_else(|| format!("`{spec}`: say how long with for=D"))?;
                Ok(Injection::Down {
                    check: first.to_owned(),
                    at: duration("at", get("at").unwrap_or("0s"))?,
                    length: duration("for", length)?,
                })
            }
            other => Err(format!(
                "`{other}` in `{spec}` is not a fault: give fail=P%, latency=D or down=CHECK"
            )),
        }
    }
}

/// The faults of one run, and the seed that draws them.
#[derive(Debug)]
pub struct Chaos {
    faults: Vec<Injection>,
    seed: u64,
    /// When the run started: what `down` faults' `at` counts from.
    start: std::sync::Mutex<Instant>,
    /// Attempts drawn so far for each (stage, item), by a hash of the two (16 bytes an item,
    /// not their text): a restart starts a stage's attempt numbers again, and must not draw
    /// the same failures again.
    drawn: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl Chaos {
    /// The faults `specs` name, drawn from `seed` (any seed when `None`); `None` without specs.
    pub fn new(specs: &[String], seed: Option<u64>) -> Result<Option<Arc<Self>>, String> {
        if specs.is_empty() {
            return Ok(None);
        }
        let faults = specs
            .iter()
            .map(|spec| spec.parse())
            .collect::<Result<Vec<Injection>, String>>()?;
        Ok(Some(Arc::new(Chaos {
            faults,
            // Below 2^53: a JSON number every reader keeps exact.
            seed: seed.unwrap_or_else(|| fastrand::u64(..1 << 53)),
            start: std::sync::Mutex::new(Instant::now()),
            drawn: std::sync::Mutex::default(),
        })))
    }

    /// The faults.
    pub fn faults(&self) -> &[Injection] {
        &self.faults
    }

    /// The names the faults refer to that are not among `stages` and `checks`: each with what
    /// the file has.
    pub fn unknown_names(&self, stages: &[&str], checks: &[&str]) -> Vec<String> {
        let mut wrong = Vec::new();
        for fault in &self.faults {
            match fault {
                Injection::Fail {
                    stage: Some(stage), ..
                }
                | Injection::Latency {
                    stage: Some(stage), ..
                } if !stages.contains(&stage.as_str()) => wrong.push(format!(
                    "--chaos {fault}: the file has no stage `{stage}` (it has {})",
                    stages.join(", ")
                )),
                Injection::Down { check, .. } if !checks.contains(&check.as_str()) => {
                    wrong.push(format!(
                        "--chaos {fault}: the file has no health check `{check}` ({})",
                        if checks.is_empty() {
                            "it has none".to_owned()
                        } else {
                            format!("it has {}", checks.join(", "))
                        }
                    ));
                }
                _ => {}
            }
        }
        wrong
    }

    /// The run starts now: `down` faults count their `at` from here.
    pub fn begin(&self) {
        *self.start.lock().expect("not poisoned") = Instant::now();
    }

    /// The seed the failures are drawn from (`--seed`, or one drawn at random).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What happens before an attempt of `stage`'s command (or failover): waits, then possibly
    /// fails it. Whether it fails is drawn from the seed, the stage, the item and how many of
    /// its attempts came before in this run, not from the order attempts come in: the same seed
    /// fails the same attempts however the run's concurrency interleaves them, and a restart
    /// does not draw the same failures again.
    pub async fn before(&self, stage: &str, item: Option<&str>) -> Result<(), StageError> {
        let nth = {
            let mut drawn = self.drawn.lock().expect("not poisoned");
            let n = drawn
                .entry(fnv(&[
                    stage.as_bytes(),
                    item.unwrap_or_default().as_bytes(),
                ]))
                .or_default();
            *n += 1;
            *n
        };
        let applies = |s: &Option<String>| s.as_deref().is_none_or(|s| s == stage);
        for fault in &self.faults {
            if let Injection::Latency { delay, stage: s } = fault
                && applies(s)
            {
                tokio::time::sleep(*delay).await;
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if let Injection::Fail {
                rate,
                code,
                stage: s,
            } = fault
                && applies(s)
                && self.draw(i, stage, item, nth) < *rate
            {
                return Err(StageError::new(format!("injected by --chaos ({fault})"))
                    .with_code(code.clone())
                    .with_rule(StageError::INJECTED_RULE));
            }
        }
        Ok(())
    }

    /// A number in `[0, 1)` for fault `i` and one attempt, the same for the same seed.
    fn draw(&self, i: usize, stage: &str, item: Option<&str>, nth: u64) -> f64 {
        let hash = fnv(&[
            &self.seed.to_le_bytes(),
            &(i as u64).to_le_bytes(),
            stage.as_bytes(),
            item.unwrap_or_default().as_bytes(),
            &nth.to_le_bytes(),
        ]);
        fastrand::Rng::with_seed(hash).f64()
    }

    /// The check, failing while a `down` fault of it lasts.
    pub fn check(self: &Arc<Self>, spec: CheckSpec) -> CheckSpec {
        let downs: Vec<(Duration, Duration, String)> = self
            .faults
            .iter()
            .filter_map(|fault| match fault {
                Injection::Down { check, at, length } if check == spec.name() => {
                    Some((*at, *at + *length, fault.to_string()))
                }
                _ => None,
            })
            .collect();
        if downs.is_empty() {
            return spec;
        }
        let chaos = Arc::clone(self);
        spec.map_check(move |inner| {
            Arc::new(Downed {
                inner,
                chaos,
                downs,
            })
        })
    }
}

/// FNV-1a over `parts`, each ended by a separator: stable across builds and platforms, unlike
/// std's hasher.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A check that fails while one of its `down` faults lasts, and probes as usual otherwise.
struct Downed {
    inner: Arc<dyn Check>,
    chaos: Arc<Chaos>,
    downs: Vec<(Duration, Duration, String)>,
}

impl Check for Downed {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        let t = self.chaos.start.lock().expect("not poisoned").elapsed();
        match self
            .downs
            .iter()
            .find(|(from, to, _)| (*from..*to).contains(&t))
        {
            Some((_, _, fault)) => {
                let error = CheckError::new(format!("injected by --chaos ({fault})"));
                Box::pin(async move { Err(error) })
            }
            None => self.inner.check(),
        }
    }

    fn target(&self) -> String {
        self.inner.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_read_and_mistakes_named() {
        let fault: Injection = "fail=30%,code=ECONNREFUSED,stage=load".parse().unwrap();
        assert_eq!(
            fault,
            Injection::Fail {
                rate: 0.3,
                code: "ECONNREFUSED".into(),
                stage: Some("load".into())
            }
        );
        assert_eq!(fault.to_string(), "fail=30%,code=ECONNREFUSED,stage=load");
        let down: Injection = "down=db,at=10s,for=1m".parse().unwrap();
        assert_eq!(down.to_string(), "down=db,at=10s,for=1m");
        for (spec, says) in [
            ("fail=130%", "not a share from 0 to 100 %"),
            ("fail=30%,for=1s", "`for` does not go with `fail`"),
            ("latency=soon", "`latency` in `latency=soon`"),
            ("down=db", "say how long with for=D"),
            ("explode=1", "is not a fault"),
            ("fail=1%,code=no way", "is not a code"),
            ("", "an empty --chaos"),
        ] {
            let error = spec.parse::<Injection>().unwrap_err();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_seed_draws_the_same_failures_and_only_the_named_stage_gets_them() {
        let draws = |seed| async move {
            let chaos = Chaos::new(&["fail=50%,stage=load".into()], Some(seed))
                .unwrap()
                .unwrap();
            let mut failed = Vec::new();
            for _ in 1..=32 {
                failed.push(chaos.before("load", Some("a")).await.is_err());
                assert!(chaos.before("other", Some("a")).await.is_ok());
            }
            failed
        };
        assert_eq!(draws(3).await, draws(3).await);
        assert_ne!(draws(3).await, draws(4).await);
        let chaos = Chaos::new(&["fail=100%,code=ETIMEDOUT".into()], Some(1))
            .unwrap()
            .unwrap();
        let error = chaos.before("any", None).await.unwrap_err();
        assert_eq!(error.code(), Some("ETIMEDOUT"));
        assert_eq!(error.rule(), Some(StageError::INJECTED_RULE));
        assert!(
            error.message().starts_with("injected by --chaos"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_waits_before_the_attempt() {
        let chaos = Chaos::new(&["latency=2s".into()], None).unwrap().unwrap();
        let start = Instant::now();
        chaos.before("load", None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn unknown_stages_and_checks_are_named_with_what_the_file_has() {
        let chaos = Chaos::new(
            &["fail=1%,stage=lod".into(), "down=dbb,for=1s".into()],
            None,
        )
        .unwrap()
        .unwrap();
        let wrong = chaos.unknown_names(&["load"], &["db"]);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(
            wrong[0].contains("no stage `lod` (it has load)"),
            "{wrong:?}"
        );
        assert!(
            wrong[1].contains("no health check `dbb` (it has db)"),
            "{wrong:?}"
        );
    }
}
