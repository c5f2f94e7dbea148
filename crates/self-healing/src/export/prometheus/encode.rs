//! How the exporter writes its families: what each window is called and in which unit, and the
//! `Collector` that encodes every project's counters, histograms and gauges on a scrape.

use super::*;

/// How a collector window is exported: its family name, unit and the factor from the
/// collector's unit to the base unit.
fn window_family(metric: &str) -> (String, Option<Unit>, f64, Cow<'static, str>) {
    match metric {
        ERROR_RATE => (
            "error_rate".into(),
            None,
            1.0,
            "Failed attempts over attempts in the latest sample interval".into(),
        ),
        THROUGHPUT => (
            "throughput".into(),
            None,
            1.0,
            "Units of work completed per second in the latest sample interval".into(),
        ),
        LATENCY_P95 => (
            "latency_p95".into(),
            Some(Unit::Seconds),
            1e-3,
            "95th percentile of attempt durations in the metrics window".into(),
        ),
        MEMORY_USAGE => (
            "memory_usage".into(),
            Some(Unit::Bytes),
            1.0,
            "Resident memory of the process running the pipeline".into(),
        ),
        CPU_USAGE => (
            "cpu_usage".into(),
            Some(Unit::Other("ratio".into())),
            1e-2,
            "Processor time of the process running the pipeline, per second".into(),
        ),
        other => {
            let mut name = snake_case(other);
            if ["_total", "_count", "_sum", "_bucket", "_info", "_created"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            {
                name.push_str("_value");
            }
            (
                name,
                None,
                1.0,
                format!("The latest value recorded as `{other}`").into(),
            )
        }
    }
}

/// `queueDepth` → `queue_depth`; anything a metric name cannot hold becomes `_`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            out.push('_');
            previous_lower = false;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Encodes one family: its descriptor, then each series `series` yields through `each`.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    series: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    series(&mut metric)
}

fn counter(metric: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(metric: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: f64) -> fmt::Result {
    metric.encode_family(labels)?.encode_gauge(&value)
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let projects = self.projects();
        let e = &mut encoder;
        let seconds = Unit::Seconds;
        family(
            e,
            "pipeline_duration",
            "Time runs took, by how they ended",
            Some(&seconds),
            MetricType::Histogram,
            |m| {
                for p in &projects {
                    for (status, histogram) in lock(&p.runs).iter() {
                        histogram.encode(
                            &mut m.encode_family(&[("project", &*p.name), ("status", status)])?,
                        )?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "pipeline_stage_duration",
            "Time stages took from start to end, restarts included",
            Some(&seconds),
            MetricType::Histogram,
            |m| {
                for p in &projects {
                    for s in p.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        let histogram = lock(&s.duration).clone();
                        histogram.encode(
                            &mut m.encode_family(&[("project", &*p.name), ("stage", &*s.name)])?,
                        )?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "healing_events",
            "Healing actions applied",
            None,
            MetricType::Counter,
            |m| {
                for p in &projects {
                    for (action, count) in ActionKind::ALL.iter().zip(&p.healing_events) {
                        let labels = [("project", &*p.name), ("action", action.as_str())];
                        counter(m, &labels, count.load(Ordering::Relaxed))?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "healing_decisions",
            "Healing decisions, acted on or not, by strategy, action and outcome",
            None,
            MetricType::Counter,
            |m| {
                for p in &projects {
                    for ((strategy, action, outcome), count) in lock(&p.decisions).iter() {
                        let labels = [
                            ("project", &*p.name),
                            ("strategy", strategy),
                            ("action", action),
                            ("outcome", outcome),
                        ];
                        counter(m, &labels, *count)?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "health_status",
            "Each health check's status: 1 healthy, 0.5 degraded, 0 unhealthy",
            None,
            MetricType::Gauge,
            |m| {
                for p in &projects {
                    for ((check, stage), value) in lock(&p.health).iter() {
                        let labels = [
                            ("project", &*p.name),
                            ("stage", stage.as_deref().unwrap_or("")),
                            ("check", check),
                        ];
                        gauge(m, &labels, *value)?;
                    }
                }
                Ok(())
            },
        )?;
        for (name, help, outcomes, pick) in [
            (
                "items",
                "Items by how they ended: succeeded, failed, abandoned (cut short, run again on resume) or skipped (done by an earlier attempt of the run)",
                &ITEM_OUTCOMES[..],
                (|s: &StageCells| &s.items[..]) as fn(&StageCells) -> &[AtomicU64],
            ),
            (
                "attempts",
                "Attempts by outcome",
                &ATTEMPT_OUTCOMES[..],
                |s: &StageCells| &s.attempts[..],
            ),
        ] {
            family(e, name, help, None, MetricType::Counter, |m| {
                for p in &projects {
                    for s in p.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        for (outcome, count) in outcomes.iter().zip(pick(s)) {
                            let labels = [
                                ("project", &*p.name),
                                ("stage", &*s.name),
                                ("outcome", outcome),
                            ];
                            counter(m, &labels, count.load(Ordering::Relaxed))?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        family(
            e,
            "retry_budget_waits",
            "Retries a retry budget held past their backoff: the budget was spent",
            None,
            MetricType::Counter,
            |m| {
                for p in &projects {
                    for s in p.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        let labels = [("project", &*p.name), ("stage", &*s.name)];
                        counter(m, &labels, s.budget_waits.load(Ordering::Relaxed))?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            e,
            "retry_budget_wait",
            "How much longer than their backoff retries waited for a retry budget, in all",
            Some(&seconds),
            MetricType::Counter,
            |m| {
                for p in &projects {
                    for s in p.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        let labels = [("project", &*p.name), ("stage", &*s.name)];
                        let waited = s.budget_wait_ms.load(Ordering::Relaxed) as f64 / 1000.0;
                        m.encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&waited, None)?;
                    }
                }
                Ok(())
            },
        )?;
        for (name, help, pick) in [
            (
                "stage_concurrency",
                "How many of the stage's items may run at once, in the latest run",
                (|s: &StageCells| &s.concurrency) as fn(&StageCells) -> &AtomicI64,
            ),
            (
                "circuit_breaker_state",
                "The stage's circuit breaker in the latest run: 0 closed, 1 half-open, 2 open",
                |s: &StageCells| &s.breaker,
            ),
            (
                "stage_held",
                "How many unhealthy checks the stage depends on hold its new attempts, in the latest run",
                |s: &StageCells| &s.held,
            ),
        ] {
            family(e, name, help, None, MetricType::Gauge, |m| {
                for p in &projects {
                    for s in p.stages.read().unwrap_or_else(|e| e.into_inner()).iter() {
                        let value = pick(s).load(Ordering::Relaxed);
                        if value >= 0 {
                            gauge(
                                m,
                                &[("project", &*p.name), ("stage", &*s.name)],
                                value as f64,
                            )?;
                        }
                    }
                }
                Ok(())
            })?;
        }
        family(
            e,
            "alerts",
            "Alert notifications by channel and delivery outcome (delivered, or failed after the retries and still owed)",
            None,
            MetricType::Counter,
            |m| {
                for p in &projects {
                    for ((channel, outcome), count) in lock(&p.alerts).iter() {
                        let labels = [
                            ("project", &*p.name),
                            ("channel", channel),
                            ("outcome", outcome),
                        ];
                        counter(m, &labels, *count)?;
                    }
                }
                Ok(())
            },
        )?;
        // The collector's windows, one family per metric, each with every project's series.
        type Series = Vec<(Arc<str>, Option<Arc<str>>, f64)>;
        let mut windows_out: BTreeMap<String, (Option<Unit>, Cow<'static, str>, Series)> =
            BTreeMap::new();
        // Each metric's family name, unique: built-ins keep theirs, a recorded metric whose
        // name would collide with another family's gets `_value` appended.
        let mut latest: Vec<(Arc<str>, BTreeMap<Scoped, f64>)> = Vec::new();
        for p in &projects {
            if let Some(windows) = lock(&p.windows).latest() {
                latest.push((Arc::clone(&p.name), windows.clone()));
            }
        }
        let mut metrics: Vec<Arc<str>> = latest
            .iter()
            .flat_map(|(_, w)| w.keys().map(|(metric, _)| Arc::clone(metric)))
            .collect();
        metrics.sort_by_key(|m| (!BUILT_IN_WINDOWS.contains(&&**m), m.to_string()));
        metrics.dedup();
        type Family = (String, Option<Unit>, f64, Cow<'static, str>);
        let mut family_of: BTreeMap<Arc<str>, Family> = BTreeMap::new();
        let mut taken: std::collections::HashSet<String> =
            OWN_FAMILIES.iter().map(|f| f.to_string()).collect();
        for metric in metrics {
            let (mut name, unit, factor, help) = window_family(&metric);
            let full = |name: &str| match &unit {
                Some(unit) => format!("{name}_{}", unit.as_str()),
                None => name.to_owned(),
            };
            while !taken.insert(full(&name)) {
                name.push_str("_value");
            }
            family_of.insert(metric, (name, unit, factor, help));
        }
        for (project, windows) in &latest {
            for ((metric, stage), value) in windows {
                let Some((name, unit, factor, help)) = family_of.get(metric) else {
                    continue;
                };
                windows_out
                    .entry(name.clone())
                    .or_insert_with(|| (unit.clone(), help.clone(), Vec::new()))
                    .2
                    .push((Arc::clone(project), stage.clone(), value * factor));
            }
        }
        for (name, (unit, help, series)) in &windows_out {
            family(e, name, help, unit.as_ref(), MetricType::Gauge, |m| {
                for (project, stage, value) in series {
                    match stage {
                        Some(stage) => {
                            gauge(m, &[("project", &**project), ("stage", stage)], *value)?
                        }
                        None => gauge(m, &[("project", &**project)], *value)?,
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metric_names_become_valid_family_names() {
        assert_eq!(snake_case("queueDepth"), "queue_depth");
        assert_eq!(snake_case("HTTPErrors"), "httperrors");
        assert_eq!(snake_case("rows.copied-per batch"), "rows_copied_per_batch");
        assert_eq!(snake_case("9lives"), "_9lives");
        assert_eq!(window_family("rowsTotal").0, "rows_total_value");
        assert_eq!(window_family("latencyP95").0, "latency_p95");
    }
}
