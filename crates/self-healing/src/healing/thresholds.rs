//! The seed's alert thresholds: a metric's `warning` and `critical` levels, firing an alert when
//! the metric reaches a level (and stays there for `for`) and resolving it when the metric falls
//! back below.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::alert::{Alert, Alerting, fingerprint};
use crate::error::{InvalidConfig, Severity};
use crate::metrics::{MetricsCollector, Scope};

/// A metric's alert levels (`alerts.thresholds[]` in files). Evaluated for the run and each stage
/// every evaluation interval and on the run's final window at its end, whatever the healing
/// mode: manual mode stops remedies, not alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertThreshold {
    /// The metric (`errorRate`, `latencyP95`, or a declared one).
    pub metric: Arc<str>,
    /// At or above this, a warning fires.
    pub warning: Option<f64>,
    /// At or above this, a critical alert fires (and inhibits the warning).
    pub critical: Option<f64>,
    /// How long each new sample must have been at or above a level before it fires
    /// (Prometheus's `for`); zero fires at the first.
    pub holds_for: Duration,
}

impl AlertThreshold {
    /// Checks that at least one level is given, and that a warning is below the critical level.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        match (self.warning, self.critical) {
            (None, None) => Err(InvalidConfig::new(
                "warning",
                "give `warning`, `critical` or both",
            )),
            (Some(w), Some(c)) if w >= c => Err(InvalidConfig::new(
                "warning",
                format!("the warning level {w} must be below the critical level {c}"),
            )),
            _ => Ok(()),
        }
    }

    fn levels(&self) -> impl Iterator<Item = (Severity, f64)> + '_ {
        [
            (Severity::Warning, self.warning),
            (Severity::Critical, self.critical),
        ]
        .into_iter()
        .filter_map(|(severity, level)| Some((severity, level?)))
    }
}

/// How many samples each (threshold, stage) window had when last looked at: only new samples
/// change an alert, so a quiet metric neither fires again nor resolves by itself; and since
/// when each level has been reached, for `for`.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    samples: HashMap<(usize, Option<Arc<str>>), u64>,
    reached: HashMap<(usize, Option<Arc<str>>, Severity), Instant>,
}

/// Fires and resolves `project`'s threshold alerts from the collector's latest samples, for the
/// run (`None`) and each of `stages`.
pub(crate) fn evaluate(
    thresholds: &[AlertThreshold],
    alerting: &Alerting,
    project: &Arc<str>,
    metrics: &MetricsCollector,
    stages: &[Arc<str>],
    seen: &mut Seen,
) {
    for (i, threshold) in thresholds.iter().enumerate() {
        for stage in std::iter::once(None).chain(stages.iter().cloned().map(Some)) {
            let scope = match &stage {
                Some(stage) => Scope::Stage(stage),
                None => Scope::Run,
            };
            let Some(series) = metrics.find(scope, &threshold.metric) else {
                continue;
            };
            let recorded = series.recorded();
            if seen.samples.insert((i, stage.clone()), recorded) == Some(recorded) {
                continue;
            }
            let Some(value) = series.last() else { continue };
            let fingerprint = fingerprint(project, stage.as_deref(), &threshold.metric);
            // The levels reached first, most severe first (a lesser one it covers is inhibited,
            // not sent), then those left behind, least severe first: a lowered alert then
            // carries the value now, and a metric below every level ends the alert without
            // lowering it on the way.
            let mut levels: Vec<(Severity, f64)> = threshold.levels().collect();
            levels.sort_by(|(a, a_level), (b, b_level)| {
                let behind = value < *a_level;
                behind.cmp(&(value < *b_level)).then_with(
                    || {
                        if behind { a.cmp(b) } else { b.cmp(a) }
                    },
                )
            });
            for (severity, level) in levels {
                let key = (i, stage.clone(), severity);
                if value >= level {
                    let since = *seen.reached.entry(key).or_insert_with(Instant::now);
                    if since.elapsed() < threshold.holds_for {
                        continue;
                    }
                    let mut alert = Alert::firing(
                        severity,
                        Arc::clone(project),
                        Arc::clone(&threshold.metric),
                        format!(
                            "{} at {value} reached its {severity} level of {level}",
                            threshold.metric
                        ),
                    )
                    .message(match &stage {
                        Some(stage) => format!(
                            "stage `{stage}` of `{project}`: {} is {value} (levels: {})",
                            threshold.metric,
                            describe(threshold)
                        ),
                        None => format!(
                            "run of `{project}`: {} is {value} (levels: {})",
                            threshold.metric,
                            describe(threshold)
                        ),
                    });
                    alert.stage = stage.clone();
                    alert.value = Some(value);
                    alerting.fire(alert);
                } else {
                    seen.reached.remove(&key);
                    alerting.resolve(&fingerprint, Some(severity));
                }
            }
        }
    }
}

fn describe(threshold: &AlertThreshold) -> String {
    let levels = threshold
        .levels()
        .map(|(severity, level)| format!("{severity} {level}"))
        .collect::<Vec<_>>()
        .join(", ");
    if threshold.holds_for.is_zero() {
        levels
    } else {
        format!(
            "{levels}, for {}",
            crate::duration::display(threshold.holds_for)
        )
    }
}
