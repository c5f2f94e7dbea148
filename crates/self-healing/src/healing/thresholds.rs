//! The seed's alert thresholds: a metric's `warning` and `critical` levels, firing an alert when
//! the metric reaches a level and resolving it when the metric falls back below.

use std::collections::HashMap;
use std::sync::Arc;

use crate::alert::{Alert, Alerting, fingerprint};
use crate::error::{InvalidConfig, Severity};
use crate::metrics::{MetricsCollector, Scope};

/// A metric's alert levels (`alerts.thresholds[]` in files). Evaluated for the run and each stage
/// every evaluation interval, whatever the healing mode: manual mode stops remedies, not alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertThreshold {
    /// The metric (`errorRate`, `latencyP95`, or a declared one).
    pub metric: Arc<str>,
    /// At or above this, a warning fires.
    pub warning: Option<f64>,
    /// At or above this, a critical alert fires (and inhibits the warning).
    pub critical: Option<f64>,
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
/// change an alert, so a quiet metric neither fires again nor resolves by itself.
#[derive(Debug, Default)]
pub(crate) struct Seen(HashMap<(usize, Option<Arc<str>>), u64>);

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
            if seen.0.insert((i, stage.clone()), recorded) == Some(recorded) {
                continue;
            }
            let Some(value) = series.last() else { continue };
            let fingerprint = fingerprint(project, stage.as_deref(), &threshold.metric);
            // The levels reached first, most severe first (a lesser one it covers is inhibited,
            // not sent), then those left behind: a lowered alert then carries the value now.
            let mut levels: Vec<(Severity, f64)> = threshold.levels().collect();
            levels.sort_by_key(|(severity, level)| (value < *level, std::cmp::Reverse(*severity)));
            for (severity, level) in levels {
                if value >= level {
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
                    alerting.resolve(&fingerprint, Some(severity));
                }
            }
        }
    }
}

fn describe(threshold: &AlertThreshold) -> String {
    threshold
        .levels()
        .map(|(severity, level)| format!("{severity} {level}"))
        .collect::<Vec<_>>()
        .join(", ")
}
