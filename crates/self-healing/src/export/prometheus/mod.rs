//! [`PrometheusExporter`]: the seed's metric names and the rest of DESIGN's families, counted
//! from events. The same exporter is fed live from a run's bus ([`attach`]) or from a journal
//! ([`observe`]), so the figures are the same wherever they are read.
//!
//! [`attach`]: PrometheusExporter::attach
//! [`observe`]: PrometheusExporter::observe

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::InvalidConfig;
use crate::event::{ActionKind, Event, EventBus, EventKind, HealthStatus, RunId, RunStatus};
use crate::metrics::{CPU_USAGE, ERROR_RATE, LATENCY_P95, MEMORY_USAGE, THROUGHPUT};
use crate::resilience::BreakerState;

mod encode;

/// Bucket bounds of `pipeline_duration_seconds`: a minute to a day.
const RUN_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];
/// Bucket bounds of `pipeline_stage_duration_seconds`: a tenth of a second to four hours.
const STAGE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// Item outcomes, as the `outcome` label of `items_total`.
const ITEM_OUTCOMES: [&str; 4] = ["succeeded", "failed", "abandoned", "skipped"];
/// Attempt outcomes, as the `outcome` label of `attempts_total`.
const ATTEMPT_OUTCOMES: [&str; 2] = ["succeeded", "failed"];

/// Label names the exporter sets itself; a constant label may not take one.
const OWN_LABELS: [&str; 9] = [
    "project", "stage", "status", "action", "strategy", "outcome", "check", "channel", "le",
];

/// The collector's built-in metrics, whose families come first.
const BUILT_IN_WINDOWS: [&str; 5] = [ERROR_RATE, THROUGHPUT, LATENCY_P95, MEMORY_USAGE, CPU_USAGE];

/// Family names the exporter uses itself: a recorded metric named like one is exported with
/// `_value` appended.
const OWN_FAMILIES: [&str; 13] = [
    "pipeline_duration_seconds",
    "pipeline_stage_duration_seconds",
    "healing_events",
    "healing_decisions",
    "health_status",
    "items",
    "attempts",
    "stage_concurrency",
    "circuit_breaker_state",
    "stage_held",
    "alerts",
    "retry_budget_waits",
    "retry_budget_wait_seconds",
];

/// Exports what runs do as Prometheus metrics: the seed's `pipeline_duration_seconds`,
/// `pipeline_stage_duration_seconds{stage}`, `healing_events_total{action}` and
/// `health_status{stage}`, plus `healing_decisions_total{strategy,action,outcome}`,
/// `items_total{stage,outcome}`, `attempts_total{stage,outcome}`, `stage_concurrency{stage}`,
/// `circuit_breaker_state{stage}`, `stage_held{stage}` (how many checks it depends on hold its
/// work), `alerts_total{channel,outcome}`, `retry_budget_waits_total{stage}` and
/// `retry_budget_wait_seconds_total{stage}` (retries a retry budget held past their backoff,
/// and how long) and the metrics collector's
/// windows as gauges (`error_rate`, `latency_p95_seconds`, a recorded `queueDepth` as
/// `queue_depth`…). Every series has a `project` label and the builder's constant labels.
/// Item keys never become labels.
///
/// Counts come only from facts a journal keeps (an item's success counts as its successful
/// attempt), so an exporter fed from the journal shows what one fed live showed.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use self_healing::EventBus;
/// use self_healing::event::{EventKind, RunId};
/// use self_healing::export::PrometheusExporter;
///
/// let exporter = PrometheusExporter::builder()
///     .prefix("migrationpilot_")
///     .label("environment", "production")
///     .build()?;
/// let mut registry = Registry::default();
/// exporter.register(&mut registry);
///
/// let bus = EventBus::new();
/// exporter.attach(&bus, "payroll");
/// bus.publish(Some(&RunId::new("run-1")), EventKind::StageStarted { stage: "load".into(), concurrency: 4 });
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains(
///     r#"migrationpilot_stage_concurrency{environment="production",project="payroll",stage="load"} 4"#
/// ));
/// # Ok::<(), self_healing::InvalidConfig>(())
/// ```
#[derive(Clone)]
pub struct PrometheusExporter {
    prefix: Arc<str>,
    labels: Arc<[(String, String)]>,
    families: Arc<Families>,
}

impl fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusExporter")
            .field("prefix", &self.prefix)
            .field("labels", &self.labels)
            .field("projects", &self.families.projects().len())
            .finish()
    }
}

/// Builds a [`PrometheusExporter`].
#[derive(Debug, Clone)]
pub struct PrometheusExporterBuilder {
    prefix: String,
    labels: Vec<(String, String)>,
}

impl PrometheusExporter {
    /// A builder with the seed's prefix, `migrationpilot_`, and no constant labels.
    pub fn builder() -> PrometheusExporterBuilder {
        PrometheusExporterBuilder {
            prefix: "migrationpilot_".to_owned(),
            labels: Vec::new(),
        }
    }

    /// Adds the exporter's families to `registry`, under its prefix and constant labels.
    pub fn register(&self, registry: &mut Registry) {
        let prefix = self.prefix.trim_end_matches('_');
        let registry = if prefix.is_empty() {
            registry
        } else {
            registry.sub_registry_with_prefix(prefix)
        };
        let registry = registry.sub_registry_with_labels(
            self.labels
                .iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone()))),
        );
        registry.register_collector(Box::new(Arc::clone(&self.families)));
    }

    /// Counts every event of `bus` from now on as `project`'s, in the publisher's task (a few
    /// atomic additions per event).
    pub fn attach(&self, bus: &EventBus, project: &str) {
        let project = self.families.project(project);
        bus.add_sink(Arc::new(move |event: &Event| project.observe(event)));
    }

    /// Counts one event of `project`, as read back from a journal.
    pub fn observe(&self, project: &str, event: &Event) {
        self.families.project(project).observe(event);
    }
}

impl PrometheusExporterBuilder {
    /// The prefix of every family name (default `migrationpilot_`; a missing trailing `_` is
    /// added, an empty prefix is none).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A label every series carries, such as `environment="production"`.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// The exporter; an error names a prefix or label name Prometheus would reject, or a label
    /// the exporter sets itself.
    pub fn build(self) -> Result<PrometheusExporter, InvalidConfig> {
        if !self.prefix.is_empty() && !is_metric_name(&self.prefix) {
            return Err(InvalidConfig::new(
                "prefix",
                format!(
                    "`{}` is not a Prometheus metric name prefix (letters, digits, `_` and `:`, not starting with a digit)",
                    self.prefix
                ),
            ));
        }
        for (i, (name, _)) in self.labels.iter().enumerate() {
            let key = format!("labels.{name}");
            let valid = !name.is_empty()
                && !name.starts_with("__")
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(InvalidConfig::new(
                    key,
                    "is not a Prometheus label name (letters, digits and `_`, not starting with a digit or `__`)",
                ));
            }
            if OWN_LABELS.contains(&name.as_str()) {
                return Err(InvalidConfig::new(
                    key,
                    format!("`{name}` is a label the exporter sets on its own series"),
                ));
            }
            if self.labels[..i].iter().any(|(other, _)| other == name) {
                return Err(InvalidConfig::new(key, "is given twice"));
            }
        }
        Ok(PrometheusExporter {
            prefix: self.prefix.into(),
            labels: self.labels.into(),
            families: Arc::default(),
        })
    }
}

fn is_metric_name(name: &str) -> bool {
    !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Every project's figures.
#[derive(Debug, Default)]
struct Families {
    projects: RwLock<BTreeMap<Arc<str>, Arc<Project>>>,
}

impl Families {
    fn projects(&self) -> Vec<Arc<Project>> {
        let projects = self.projects.read().unwrap_or_else(|e| e.into_inner());
        projects.values().cloned().collect()
    }

    fn project(&self, name: &str) -> Arc<Project> {
        if let Some(project) = self
            .projects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Arc::clone(project);
        }
        let mut projects = self.projects.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(projects.entry(Arc::from(name)).or_insert_with(|| {
            Arc::new(Project {
                name: Arc::from(name),
                ..Project::default()
            })
        }))
    }
}

/// A strategy, action and outcome.
type Decision = (Arc<str>, &'static str, &'static str);
/// A name (a check's, a metric's) and the stage it concerns, if any.
type Scoped = (Arc<str>, Option<Arc<str>>);

/// One project's figures.
#[derive(Debug, Default)]
struct Project {
    name: Arc<str>,
    stages: RwLock<Vec<StageCells>>,
    /// `pipeline_duration_seconds` by run status.
    runs: Mutex<BTreeMap<&'static str, Histogram>>,
    /// `healing_events_total` in the order of [`ActionKind::ALL`].
    healing_events: [AtomicU64; ActionKind::ALL.len()],
    /// `healing_decisions_total` by (strategy, action, outcome).
    decisions: Mutex<BTreeMap<Decision, u64>>,
    /// Each check's status, by check and stage.
    health: Mutex<BTreeMap<Scoped, f64>>,
    alerts: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The collector's latest values, per run: only the latest run's are exported. A journal
    /// read back in pages may bring a run's samples before its start, so a few runs are kept.
    windows: Mutex<Windows>,
}

/// The collector's latest value per (metric, stage), for the latest runs.
#[derive(Debug, Default)]
struct Windows {
    /// The run that started last.
    latest: Option<RunId>,
    /// Values per run, oldest run first; at most [`RUNS_KEPT`].
    runs: Vec<(Option<RunId>, BTreeMap<Scoped, f64>)>,
}

/// How many runs' windows a project keeps.
const RUNS_KEPT: usize = 3;

impl Windows {
    fn of(&mut self, run: Option<&RunId>) -> &mut BTreeMap<Scoped, f64> {
        let at = match self.runs.iter().position(|(r, _)| r.as_ref() == run) {
            Some(at) => at,
            None => {
                if self.runs.len() == RUNS_KEPT {
                    self.runs.remove(0);
                }
                self.runs.push((run.cloned(), BTreeMap::new()));
                self.runs.len() - 1
            }
        };
        &mut self.runs[at].1
    }

    fn latest(&self) -> Option<&BTreeMap<Scoped, f64>> {
        self.runs
            .iter()
            .find(|(r, _)| r.as_ref() == self.latest.as_ref())
            .map(|(_, w)| w)
    }
}

/// One stage's figures. Counts are atomics: the per-item events that move them come from every
/// worker at once.
#[derive(Debug)]
struct StageCells {
    name: Arc<str>,
    items: [AtomicU64; ITEM_OUTCOMES.len()],
    attempts: [AtomicU64; ATTEMPT_OUTCOMES.len()],
    /// The concurrency limit in the latest run; -1 before the stage started in it.
    concurrency: AtomicI64,
    /// 0 closed, 1 half-open, 2 open; -1 when no change was seen in the latest run.
    breaker: AtomicI64,
    /// How many checks it depends on hold its work; -1 before the stage started in the
    /// latest run.
    held: AtomicI64,
    duration: Mutex<Histogram>,
    /// Retries a retry budget held past their backoff, and for how long in all (ms).
    budget_waits: AtomicU64,
    budget_wait_ms: AtomicU64,
}

impl StageCells {
    fn new(name: Arc<str>) -> Self {
        StageCells {
            name,
            items: Default::default(),
            attempts: Default::default(),
            concurrency: AtomicI64::new(-1),
            breaker: AtomicI64::new(-1),
            held: AtomicI64::new(-1),
            budget_waits: AtomicU64::new(0),
            budget_wait_ms: AtomicU64::new(0),
            duration: Mutex::new(Histogram::new(STAGE_BUCKETS)),
        }
    }
}

/// A histogram: per-bucket counts (the encoder makes them cumulative), with `+Inf` implied.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn encode(&self, encoder: &mut MetricEncoder) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Project {
    /// Runs `f` on the stage's cells, adding them the first time.
    fn with_stage(&self, stage: &Arc<str>, f: impl FnOnce(&StageCells)) {
        {
            let stages = self.stages.read().unwrap_or_else(|e| e.into_inner());
            // Events carry the stage's own name, so the pointer usually matches.
            if let Some(cells) = stages
                .iter()
                .find(|c| Arc::ptr_eq(&c.name, stage))
                .or_else(|| stages.iter().find(|c| c.name == *stage))
            {
                return f(cells);
            }
        }
        let mut stages = self.stages.write().unwrap_or_else(|e| e.into_inner());
        if !stages.iter().any(|c| c.name == *stage) {
            stages.push(StageCells::new(Arc::clone(stage)));
        }
        if let Some(cells) = stages.iter().find(|c| c.name == *stage) {
            f(cells);
        }
    }

    fn observe(&self, event: &Event) {
        use EventKind::*;
        match &event.kind {
            ItemSucceeded { stage, .. } => self.with_stage(stage, |s| {
                add(&s.items[0], 1);
                add(&s.attempts[0], 1);
            }),
            // An item's successful attempt is counted with the item; a single unit's here.
            AttemptSucceeded {
                stage, item: None, ..
            } => self.with_stage(stage, |s| add(&s.attempts[0], 1)),
            AttemptFailed { stage, .. } => self.with_stage(stage, |s| add(&s.attempts[1], 1)),
            ItemFailed { stage, .. } => self.with_stage(stage, |s| add(&s.items[1], 1)),
            ItemAbandoned { stage, .. } => self.with_stage(stage, |s| add(&s.items[2], 1)),
            ItemsSkipped { stage, count } => self.with_stage(stage, |s| add(&s.items[3], *count)),
            StageStarted { stage, concurrency } => self.with_stage(stage, |s| {
                s.concurrency.store(
                    i64::try_from(*concurrency).unwrap_or(i64::MAX),
                    Ordering::Relaxed,
                );
                let _ = s
                    .held
                    .compare_exchange(-1, 0, Ordering::Relaxed, Ordering::Relaxed);
            }),
            StageHeld { stage, held_by } => self.with_stage(stage, |s| {
                s.held.store(
                    i64::try_from(held_by.len()).unwrap_or(i64::MAX),
                    Ordering::Relaxed,
                )
            }),
            ConcurrencyChanged { stage, to, .. } => self.with_stage(stage, |s| {
                s.concurrency
                    .store(i64::try_from(*to).unwrap_or(i64::MAX), Ordering::Relaxed)
            }),
            BreakerChanged { stage, to, .. } => self.with_stage(stage, |s| {
                s.breaker.store(breaker_value(*to), Ordering::Relaxed)
            }),
            StageSucceeded {
                stage, duration, ..
            }
            | StageFailed {
                stage, duration, ..
            } => self.with_stage(stage, |s| lock(&s.duration).observe(seconds(*duration))),
            RunStarted { stages, .. } => {
                // Gauges describe the latest run: the previous run's are gone.
                for stage in stages {
                    self.with_stage(stage, |_| {});
                }
                for cells in self.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    cells.concurrency.store(-1, Ordering::Relaxed);
                    cells.breaker.store(-1, Ordering::Relaxed);
                    cells.held.store(-1, Ordering::Relaxed);
                }
                let mut windows = lock(&self.windows);
                windows.latest = event.run.clone();
                windows.of(event.run.as_ref()).clear();
            }
            RunFinished {
                status, duration, ..
            } => lock(&self.runs)
                .entry(run_status(*status))
                .or_insert_with(|| Histogram::new(RUN_BUCKETS))
                .observe(seconds(*duration)),
            HealingApplied { action, .. } => {
                if let Some(i) = ActionKind::ALL.iter().position(|a| a == action) {
                    add(&self.healing_events[i], 1);
                }
            }
            HealingDecision { record } => {
                if let (Some(wait), Some(stage)) = (record.budget_wait, &record.stage) {
                    self.with_stage(stage, |s| {
                        add(&s.budget_waits, 1);
                        add(
                            &s.budget_wait_ms,
                            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        );
                    });
                }
                *lock(&self.decisions)
                    .entry((
                        Arc::from(&*record.strategy),
                        record.action.as_str(),
                        record.outcome.as_str(),
                    ))
                    .or_default() += 1;
            }
            HealthChanged { change } => {
                lock(&self.health).insert(
                    (Arc::clone(&change.check), change.stage.clone()),
                    health_value(change.new_status),
                );
            }
            AlertDelivered { channel, alerts } => {
                *lock(&self.alerts)
                    .entry((channel.clone(), "delivered"))
                    .or_default() += alerts.len() as u64;
            }
            AlertFailed {
                channel, alerts, ..
            } => {
                *lock(&self.alerts)
                    .entry((channel.clone(), "failed"))
                    .or_default() += alerts.len() as u64;
            }
            MetricsSampled { samples } => {
                let mut all = lock(&self.windows);
                let windows = all.of(event.run.as_ref());
                for sample in samples {
                    windows.insert(
                        (Arc::clone(&sample.metric), sample.stage.clone()),
                        sample.value,
                    );
                }
            }
            _ => {}
        }
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn run_status(status: RunStatus) -> &'static str {
    status.as_str()
}

fn breaker_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed | BreakerState::ForcedClosed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open | BreakerState::ForcedOpen => 2,
    }
}

fn health_value(status: HealthStatus) -> f64 {
    match status {
        HealthStatus::Healthy => 1.0,
        HealthStatus::Degraded => 0.5,
        HealthStatus::Unhealthy => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_never_share_a_family_with_another() {
        let exporter = PrometheusExporter::builder().prefix("").build().unwrap();
        let run = RunId::new("r");
        let bus = EventBus::new();
        exporter.attach(&bus, "p");
        bus.publish(
            Some(&run),
            EventKind::RunStarted {
                pipeline: "p".into(),
                stages: vec![],
            },
        );
        let sample = |metric: &str, value| crate::event::MetricSample {
            stage: None,
            metric: metric.into(),
            value,
        };
        bus.publish(
            Some(&run),
            EventKind::MetricsSampled {
                samples: vec![
                    sample("errorRate", 0.5),
                    sample("error_rate", 7.0),
                    sample("items", 3.0),
                    sample("queueDepth", 1.0),
                    sample("queue_depth", 2.0),
                ],
            },
        );
        let mut registry = Registry::default();
        exporter.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "error_rate{project=\"p\"} 0.5",
            "error_rate_value{project=\"p\"} 7.0",
            "items_value{project=\"p\"} 3.0",
            "queue_depth{project=\"p\"} 1.0",
            "queue_depth_value{project=\"p\"} 2.0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_builder_refuses_what_prometheus_would() {
        let error = |b: PrometheusExporterBuilder| b.build().unwrap_err().to_string();
        assert!(error(PrometheusExporter::builder().prefix("9x")).contains("prefix"));
        assert!(error(PrometheusExporter::builder().label("project", "x")).contains("sets"));
        assert!(error(PrometheusExporter::builder().label("a-b", "x")).contains("labels.a-b"));
        assert!(
            error(
                PrometheusExporter::builder()
                    .label("env", "a")
                    .label("env", "b")
            )
            .contains("twice")
        );
        assert!(PrometheusExporter::builder().prefix("").build().is_ok());
    }
}
