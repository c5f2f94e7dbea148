//! Healing beyond the seed: health-gated work (`dependsOn`), shared breakers, adaptive
//! concurrency, retry budgets and restart back-off.

use super::*;

/// A health check of the `api` dependency whose answer the test sets, run by hand.
fn api_monitor(up: &Arc<AtomicBool>) -> HealthMonitor {
    let answering = Arc::clone(up);
    HealthMonitor::builder()
        .thresholds(2, 1)
        .check(CheckSpec::new(
            "api",
            CustomCheck::new("api answers", move || {
                let up = answering.load(Ordering::SeqCst);
                async move { up }
            }),
        ))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stage_holds_its_work_while_a_check_it_depends_on_is_unhealthy() {
    let healer = AutoHealer::builder().build().unwrap();
    let started_at = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let log = Arc::clone(&started_at);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..20u32), move |_ctx| {
                log.lock().unwrap().push(start.elapsed());
                async {
                    sleep(SEC).await;
                    Ok(())
                }
            })
            .concurrency(2)
            .depends_on(["api"]),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let up = Arc::new(AtomicBool::new(true));
    let monitor = api_monitor(&up);
    healer.watch(&monitor);
    let (probe, switch) = (monitor.clone(), Arc::clone(&up));
    tokio::spawn(async move {
        // Down at 3.5 s (two failed checks: unhealthy), up again at 10 s (one success).
        sleep(ms(3500)).await;
        switch.store(false, Ordering::SeqCst);
        probe.check_all().await;
        probe.check_all().await;
        sleep(ms(6500)).await;
        switch.store(true, Ordering::SeqCst);
        probe.check_all().await;
    });
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    let started = started_at.lock().unwrap().clone();
    assert_eq!(
        started.len(),
        20,
        "every item once, no attempt spent waiting"
    );
    // Two items a second until 3.5 s (0, 1, 2, 3 s), none while held, then at once at 10 s.
    assert!(
        started
            .iter()
            .all(|t| *t < ms(3500) || *t >= Duration::from_secs(10)),
        "{started:?}"
    );
    assert_eq!(
        started
            .iter()
            .filter(|t| **t == Duration::from_secs(10))
            .count(),
        2,
        "work resumes the moment the check is healthy: {started:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10 + 6));

    let held: Vec<Vec<String>> = events.pick(|k| match k {
        EventKind::StageHeld { held_by, .. } => {
            Some(held_by.iter().map(|c| c.to_string()).collect())
        }
        _ => None,
    });
    assert_eq!(held, [vec!["api".to_owned()], vec![]]);
    let history = records_of(&healer, "dependsOn");
    let seen: Vec<(ActionKind, Outcome, &str)> = history
        .iter()
        .map(|r| (r.action, r.outcome, r.detail.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                ActionKind::Hold,
                Outcome::Succeeded,
                "new attempts wait: `api` is unhealthy"
            ),
            (
                ActionKind::Hold,
                Outcome::Succeeded,
                "work resumed: `api` is healthy"
            ),
        ]
    );
    assert_eq!(
        events.count(|k| matches!(
            k,
            EventKind::HealingApplied {
                action: ActionKind::Hold,
                ..
            }
        )),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_stage_whose_dependency_is_down_at_the_start_starts_held() {
    let healer = AutoHealer::builder().build().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let monitor = api_monitor(&up);
    healer.watch(&monitor);
    monitor.check_all().await;
    monitor.check_all().await;
    assert_eq!(monitor.status("api"), Some(HealthStatus::Unhealthy));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let log = Arc::clone(&calls);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::new("load", move |_| {
                log.lock().unwrap().push(start.elapsed());
                async { Ok(()) }
            })
            .depends_on(["api"]),
        )
        .build()
        .unwrap();
    let (probe, switch) = (monitor.clone(), Arc::clone(&up));
    tokio::spawn(async move {
        sleep(Duration::from_secs(30)).await;
        switch.store(true, Ordering::SeqCst);
        probe.check_all().await;
    });
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(*calls.lock().unwrap(), [Duration::from_secs(30)]);
}

#[tokio::test(start_paused = true)]
async fn stages_naming_one_breaker_trip_together() {
    use self_healing::resilience::BreakerSettings;
    let settings = BreakerSettings {
        failure_threshold: None,
        failure_rate_threshold: Some(50.0),
        minimum_calls: std::num::NonZeroU32::new(4).unwrap(),
        ..BreakerSettings::default()
    };
    let pipeline = SelfHealingPipeline::<()>::builder()
        .shared_breaker("payments-api", settings)
        .stage(Stage::new("charge", |_| async { Ok(()) }).breaker("payments-api"))
        .stage(Stage::new("refund", |_| async { Ok(()) }).breaker("payments-api"))
        .stage(Stage::new("report", |_| async { Ok(()) }))
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let (charge, refund, report) = (
        pipeline.control("charge").unwrap(),
        pipeline.control("refund").unwrap(),
        pipeline.control("report").unwrap(),
    );
    for _ in 0..2 {
        charge.breaker().try_acquire().unwrap().failure();
        refund.breaker().try_acquire().unwrap().success();
    }
    // Two failures in four calls from the two stages: 50 %, one window, one trip.
    assert_eq!(refund.breaker().state(), BreakerState::Open);
    assert_eq!(charge.breaker().state(), BreakerState::Open);
    assert_eq!(report.breaker().state(), BreakerState::Closed);
    let opened: Vec<String> = events.pick(|k| match k {
        EventKind::BreakerChanged {
            stage,
            to: BreakerState::Open,
            ..
        } => Some(stage.to_string()),
        _ => None,
    });
    assert_eq!(opened, ["charge", "refund"], "each sharing stage says so");

    let unknown = SelfHealingPipeline::<()>::builder()
        .stage(Stage::new("charge", |_| async { Ok(()) }).breaker("payments"))
        .build()
        .unwrap_err();
    assert_eq!(unknown.field(), "stages[0].breaker");
    assert!(
        unknown.reason().contains("the pipeline has none"),
        "{unknown}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_spreads_a_storm_of_retries_out() {
    use self_healing::resilience::RetryBudgetSettings;
    // Twenty items fail their first attempt together: the budget (10 % of the first attempts
    // made so far, at most 2, plus 1 a second over 10 s) lets 10 to 12 retry at once; the
    // others wait for the window.
    let healer = AutoHealer::builder()
        .retry_budget(RetryBudgetSettings {
            percent: 10,
            window: Duration::from_secs(10),
            min_per_second: 1,
        })
        .strategy(
            HealingStrategy::new(
                "retry",
                Action::retry(
                    RetryPolicy::builder()
                        .max_attempts(3)
                        .initial_delay(ms(1))
                        .build()
                        .unwrap(),
                ),
            )
            .trigger(Trigger::error()),
        )
        .build()
        .unwrap();
    let retried_at = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let log = Arc::clone(&retried_at);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..20u32), move |ctx| {
                let log = Arc::clone(&log);
                async move {
                    if ctx.attempt() == 1 {
                        return Err(StageError::new("ECONNRESET"));
                    }
                    log.lock().unwrap().push(start.elapsed());
                    Ok(())
                }
            })
            .concurrency(20),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let retried = retried_at.lock().unwrap().clone();
    let at_once = retried.iter().filter(|t| **t == ms(1)).count();
    assert!((10..=12).contains(&at_once), "{retried:?}");
    assert!(
        retried
            .iter()
            .filter(|t| **t != ms(1))
            .all(|t| *t >= Duration::from_secs(10)),
        "{retried:?}"
    );
    let records = records_of(&healer, "retry");
    let budgeted: Vec<Duration> = records.iter().filter_map(|r| r.budget_wait).collect();
    assert_eq!(budgeted.len(), 20 - at_once);
    assert!(
        records
            .iter()
            .all(|r| r.budget_wait.is_some() == r.detail.contains("retry budget")),
        "the record says it as its detail does"
    );
    // Held until the window let them through: about 10 s past a 1 ms backoff.
    assert!(
        budgeted.iter().all(|w| *w >= Duration::from_secs(9)),
        "{budgeted:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_in_a_row_back_off_and_a_stage_that_ran_well_starts_over() {
    use self_healing::pipeline::RestartBackoff;
    // The stage crashes at 1 s, 1 s, 1 s after each start, then runs 20 s well and crashes
    // again (a fresh streak: the shortest wait), then succeeds.
    let runs_for = [1u64, 1, 1, 20, 1];
    let started = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let log = Arc::clone(&started);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|_: &self_healing::pipeline::Failure<'_>| Remedy::Restart)
        .stage(
            Stage::new("serve", move |_| {
                let mut log = log.lock().unwrap();
                let n = log.len();
                log.push(start.elapsed());
                async move {
                    match runs_for.get(n) {
                        Some(&secs) => {
                            sleep(Duration::from_secs(secs)).await;
                            Err(StageError::new("crashed"))
                        }
                        None => Ok(()),
                    }
                }
            })
            .max_restarts(10)
            .restart_backoff(RestartBackoff {
                initial_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(5),
                reset_after: Duration::from_secs(10),
            }),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let secs: Vec<u64> = started
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.as_secs())
        .collect();
    // Crash at 1 → wait 2 → start 3; crash 4 → wait 4 → 8; crash 9 → wait 5 (capped) → 14;
    // runs 20 s well, crash 34 → wait 2 (fresh) → 36; crash 37 → wait 4 → 41.
    assert_eq!(secs, [0, 3, 8, 14, 36, 41]);
}

#[tokio::test(start_paused = true)]
async fn adaptive_scale_finds_the_concurrency_a_dependency_takes() {
    use self_healing::healing::AdaptiveScale;
    use self_healing::resilience::AdaptiveSettings;
    use std::sync::atomic::AtomicUsize;
    // The dependency answers in 100 ms up to 16 calls at once and queues beyond: latency grows
    // with what is in flight.
    let healer = AutoHealer::builder()
        .strategy(HealingStrategy::new(
            "adaptive",
            AdaptiveScale(AdaptiveSettings::new(2, 64)),
        ))
        .build()
        .unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&in_flight);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..3000u32), move |_ctx| {
                let calls = Arc::clone(&calls);
                async move {
                    let now = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    sleep(ms(100) * now.max(16) as u32 / 16).await;
                    calls.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .concurrency(4),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let limits: Vec<usize> = events.pick(|k| match k {
        EventKind::ConcurrencyChanged { to, .. } => Some(to),
        _ => None,
    });
    // It climbs from 4 past the knee (16), then saws just under 1.5 × the baseline latency
    // (24 in flight), never far above it nor back under the knee.
    assert!(limits.len() > 20, "{limits:?}");
    let peak = limits.iter().copied().max().unwrap();
    assert!((20..=26).contains(&peak), "{limits:?}");
    let late = &limits[limits.len() / 2..];
    assert!(late.iter().all(|l| (16..=26).contains(l)), "{limits:?}");
    let records = records_of(&healer, "adaptive");
    let (installed, moved): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r.detail.starts_with("adaptive concurrency"));
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].outcome, Outcome::Succeeded);
    assert!(
        installed[0].detail.contains("within 2..=64, from 4"),
        "{}",
        installed[0].detail
    );
    // Its moves are in the history too, each record summing those of 30 s at the most, and
    // the last one ends where the controller did.
    let run_time = report.duration.as_secs_f64();
    assert!(!moved.is_empty());
    assert!(
        moved.len() as f64 <= run_time / 30.0 + 2.0,
        "{} records over {run_time} s",
        moved.len()
    );
    let last = limits.last().unwrap();
    let newest = moved.last().unwrap();
    assert!(
        newest.detail.starts_with("concurrency ") && newest.detail.contains(&format!("→ {last} ")),
        "the newest record ends at {last}: {}",
        newest.detail
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_from_unfinished_keeps_what_earlier_passes_finished() {
    use self_healing::pipeline::RestartFrom;
    for (from, runs) in [(RestartFrom::Start, 16), (RestartFrom::Unfinished, 11)] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&calls);
        let pipeline = SelfHealingPipeline::builder()
            .supervisor(|_: &self_healing::pipeline::Failure<'_>| Remedy::Restart)
            .stage(
                Stage::for_each("load", ItemSource::iter(|_: &()| 0..10u32), move |ctx| {
                    let mut log = log.lock().unwrap();
                    log.push(*ctx.item());
                    // Item 5 breaks the first pass, once.
                    let broken = *ctx.item() == 5 && log.iter().filter(|i| **i == 5).count() == 1;
                    async move {
                        if broken {
                            Err(StageError::new("connection pool exhausted"))
                        } else {
                            Ok(())
                        }
                    }
                })
                .restart_from(from),
            )
            .build()
            .unwrap();
        let report = pipeline.execute(()).await;
        assert_eq!(report.status, RunStatus::Succeeded, "{from:?}");
        assert_eq!(report.stages[0].items_completed, 10, "{from:?}");
        assert_eq!(
            calls.lock().unwrap().len(),
            runs,
            "{from:?}: {:?}",
            calls.lock().unwrap()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stage_still_held_when_a_run_ends_is_held_again_and_says_so_in_the_next() {
    use self_healing::pipeline::RunOptions;
    let healer = AutoHealer::builder().build().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let monitor = api_monitor(&up);
    healer.watch(&monitor);
    monitor.check_all().await;
    monitor.check_all().await;
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("load", |_| async { Ok(()) }).depends_on(["api"]))
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    // The first run is cancelled while the stage waits for the API.
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(5)).await;
        stop.cancel();
    });
    let first = pipeline
        .execute_with(
            (),
            RunOptions {
                cancel,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(first.status, RunStatus::Cancelled);
    // The next starts while the API is still down: held from its start, and it says so.
    let (probe, switch) = (monitor.clone(), Arc::clone(&up));
    tokio::spawn(async move {
        sleep(Duration::from_secs(10)).await;
        switch.store(true, Ordering::SeqCst);
        probe.check_all().await;
    });
    let second = pipeline.execute(()).await;
    assert_eq!(second.status, RunStatus::Succeeded);
    let held: Vec<usize> = events.pick(|k| match k {
        EventKind::StageHeld { held_by, .. } => Some(held_by.len()),
        _ => None,
    });
    assert_eq!(held, [1, 1, 0], "held in each run, released in the second");
    let records = records_of(&healer, "dependsOn");
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[1].run.as_ref(), Some(&second.run_id));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_asked_for_during_a_restarts_back_off_is_carried_out_at_once() {
    use self_healing::pipeline::RestartBackoff;
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|_: &self_healing::pipeline::Failure<'_>| Remedy::Restart)
        .stage(
            Stage::new("serve", |_| async { Err(StageError::new("crashed")) })
                .max_restarts(10)
                .restart_backoff(RestartBackoff {
                    initial_delay: Duration::from_secs(60),
                    ..RestartBackoff::default()
                }),
        )
        .build()
        .unwrap();
    let control = Arc::clone(pipeline.control("serve").unwrap());
    tokio::spawn(async move {
        sleep(Duration::from_secs(10)).await;
        control.request_rollback("an operator asked");
    });
    let start = Instant::now();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(report.error.unwrap().code(), Some("ROLLBACK_REQUESTED"));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_restart_asked_for_during_a_restarts_back_off_does_not_cut_it_short() {
    use self_healing::pipeline::RestartBackoff;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|_: &self_healing::pipeline::Failure<'_>| Remedy::Restart)
        .stage(
            Stage::new("serve", move |_| {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(StageError::new("crashed"))
                    } else {
                        Ok(())
                    }
                }
            })
            .restart_backoff(RestartBackoff {
                initial_delay: Duration::from_secs(60),
                ..RestartBackoff::default()
            }),
        )
        .build()
        .unwrap();
    let control = Arc::clone(pipeline.control("serve").unwrap());
    tokio::spawn(async move {
        sleep(Duration::from_secs(10)).await;
        control.request_restart("a strategy that still matches");
    });
    let start = Instant::now();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one restart, not two");
}

#[tokio::test(start_paused = true)]
async fn what_a_breaker_does_by_its_own_rules_is_in_the_history() {
    use self_healing::resilience::BreakerSettings;
    let settings = BreakerSettings {
        failure_threshold: None,
        failure_rate_threshold: Some(50.0),
        minimum_calls: std::num::NonZeroU32::new(4).unwrap(),
        break_duration: Duration::from_secs(30),
        half_open_requests: std::num::NonZeroU32::new(1).unwrap(),
        success_threshold: std::num::NonZeroU32::new(1).unwrap(),
        ..BreakerSettings::default()
    };
    let healer = AutoHealer::builder()
        .shared_breaker("payments-api", settings)
        .build()
        .unwrap();
    let pipeline = healer
        .install(SelfHealingPipeline::<()>::builder())
        .stage(Stage::new("charge", |_| async { Ok(()) }).breaker("payments-api"))
        .build()
        .unwrap();
    let charge = pipeline.control("charge").unwrap();
    for outcome in [false, true, false, true] {
        let permit = charge.breaker().try_acquire().unwrap();
        if outcome {
            permit.success();
        } else {
            permit.failure();
        }
    }
    // Asked of the breaker, not by its rules: not the breaker's own record.
    charge.breaker().release();
    let history = healer.history();
    let opened = history
        .iter()
        .find(|r| r.detail.starts_with("opened"))
        .expect("the opening is recorded");
    assert_eq!(&*opened.strategy, "payments-api");
    assert_eq!(opened.action, ActionKind::CircuitBreak);
    assert_eq!(opened.stage.as_deref(), Some("charge"));
    assert_eq!(
        opened.detail,
        "opened: 2 of 4 calls failed (50%, threshold 50%)"
    );
    assert_eq!(opened.trigger.observed, Some(0.5));
    assert_eq!(history.len(), 1, "the release was asked: {history:?}");

    // Its break over, the breaker half-opens by itself; a probe's success closes it.
    for outcome in [false, true, false, true] {
        let permit = charge.breaker().try_acquire().unwrap();
        if outcome {
            permit.success();
        } else {
            permit.failure();
        }
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    charge.breaker().try_acquire().unwrap().success();
    let details: Vec<String> = healer.history().iter().map(|r| r.detail.clone()).collect();
    assert_eq!(
        details,
        [
            "opened: 2 of 4 calls failed (50%, threshold 50%)",
            "opened: 2 of 4 calls failed (50%, threshold 50%)",
            "half-open after its 30s break: 1 probe(s) may pass",
            "closed: 1 probe(s) succeeded",
        ]
    );
}
