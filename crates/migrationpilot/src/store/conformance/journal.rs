//! What every store does with the journal: pages read back with resumable cursors, items
//! completed again, followers that miss nothing concurrent writers append.

use super::*;

pub(super) async fn the_journal_reads_back_in_pages_with_resumable_cursors(store: Arc<dyn Store>) {
    let bus = EventBus::new();
    let run = RunId::new("run-1");
    let mut events = vec![bus.publish(
        Some(&run),
        EventKind::RunStarted {
            pipeline: "p".into(),
            stages: vec!["load".into()],
        },
    )];
    for i in 0..5 {
        events.push(bus.publish(
            Some(&run),
            EventKind::AttemptStarted {
                stage: "load".into(),
                item: Some(format!("i{i}").into()),
                attempt: 1,
                handler: HandlerKind::Primary,
            },
        ));
        events.push(bus.publish(
            Some(&run),
            EventKind::ItemSucceeded {
                stage: "load".into(),
                item: format!("i{i}").into(),
                attempts: 1,
                duration: Duration::from_millis(7),
            },
        ));
    }
    events.push(bus.publish(
        Some(&run),
        EventKind::HealingDecision {
            record: Box::new(HealingRecord {
                at: SystemTime::now(),
                ..decision(&run, 0, "retry-transient")
            }),
        },
    ));
    events.push(bus.publish(
        Some(&run),
        EventKind::MetricsSampled {
            samples: vec![
                MetricSample {
                    stage: None,
                    metric: "errorRate".into(),
                    value: 0.1,
                },
                MetricSample {
                    stage: Some("load".into()),
                    metric: "queueDepth".into(),
                    value: 12.0,
                },
            ],
        },
    ));
    events.push(bus.publish(
        None,
        EventKind::HealthChanged {
            change: HealthChange {
                stage: None,
                check: "api".into(),
                old_status: HealthStatus::Healthy,
                new_status: HealthStatus::Degraded,
                at: SystemTime::now(),
            },
        },
    ));
    store.append("p", &events).await.unwrap();

    let mut cursor = JournalCursor::default();
    let mut kinds = Vec::new();
    let mut cursors = Vec::new();
    loop {
        let (page, next) = store.journal_since(cursor, 2).await.unwrap();
        if page.is_empty() {
            assert_eq!(next, cursor, "an empty page does not move the cursor");
            break;
        }
        for entry in &page {
            assert_eq!(entry.project, "p");
            let json = serde_json::to_value(entry).unwrap();
            kinds.push(json["kind"].as_str().unwrap().to_owned());
            cursors.push(entry.cursor);
        }
        assert_eq!(page.last().unwrap().cursor, next);
        cursor = next;
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "healing-decision",
            "health-changed",
            "item-succeeded",
            "item-succeeded",
            "item-succeeded",
            "item-succeeded",
            "item-succeeded",
            "metrics-sampled",
            "run-started",
        ]
    );
    assert_eq!(cursor, store.journal_end().await.unwrap());
    // A reader that goes on from any entry's cursor gets exactly what came after it.
    let middle = cursors[4];
    let (rest, _) = store.journal_since(middle, 100).await.unwrap();
    assert_eq!(rest.len(), cursors.len() - 5);
    assert_eq!(middle.to_string().parse::<JournalCursor>().unwrap(), middle);
    assert!("e1.i2".parse::<JournalCursor>().is_err());
    let (all, _) = store
        .journal_since(JournalCursor::default(), 100)
        .await
        .unwrap();
    let sampled = all
        .iter()
        .find_map(|e| match &e.event.kind {
            EventKind::MetricsSampled { samples } => Some(samples.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(sampled, 2, "one tick's samples are one event again");
    let durations: Vec<Duration> = all
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::ItemSucceeded { duration, .. } => Some(*duration),
            _ => None,
        })
        .collect();
    assert_eq!(durations, [Duration::from_millis(7); 5]);
}

pub(super) async fn an_item_completed_again_is_read_back_as_often_as_it_was_published(
    store: Arc<dyn Store>,
) {
    let bus = EventBus::new();
    let (first, second) = (RunId::new("run-1"), RunId::new("run-2"));
    let done = |run: &RunId, item: &str| {
        bus.publish(
            Some(run),
            EventKind::ItemSucceeded {
                stage: "load".into(),
                item: item.into(),
                attempts: 1,
                duration: Duration::from_millis(3),
            },
        )
    };
    let started = |run: &RunId| {
        bus.publish(
            Some(run),
            EventKind::RunStarted {
                pipeline: "p".into(),
                stages: vec!["load".into()],
            },
        )
    };
    let batch = [started(&first), started(&second), done(&first, "i0")];
    store.append("p", &batch).await.unwrap();
    // A restart ran the stage from the start: i0 again in a later batch, i1 twice in one;
    // another run's i0, its first, in the same statement.
    store
        .append(
            "p",
            &[
                done(&first, "i0"),
                done(&second, "i0"),
                done(&first, "i1"),
                done(&first, "i1"),
            ],
        )
        .await
        .unwrap();
    let (all, _) = store
        .journal_since(JournalCursor::default(), 100)
        .await
        .unwrap();
    let mut items: Vec<(String, String)> = all
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::ItemSucceeded { item, .. } => {
                Some((e.event.run.as_ref()?.to_string(), item.to_string()))
            }
            _ => None,
        })
        .collect();
    items.sort();
    let pair = |run: &str, item: &str| (run.to_owned(), item.to_owned());
    assert_eq!(
        items,
        [
            pair("run-1", "i0"),
            pair("run-1", "i0"),
            pair("run-1", "i1"),
            pair("run-1", "i1"),
            pair("run-2", "i0"),
        ]
    );
}

pub(super) async fn a_follower_misses_nothing_that_concurrent_writers_append(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    const BATCHES: i64 = 80;
    /// Entries a batch makes: a completion, three events, a sample tick and a decision.
    const PER_BATCH: usize = 6;
    const PROJECTS: [&str; 4] = ["pa", "pb", "pc", "pd"];
    let writer = |store: Arc<dyn Store>, project: &'static str| {
        tokio::spawn(async move {
            let run = RunId::new(project);
            let started = EventKind::RunStarted {
                pipeline: "pipe".into(),
                stages: Vec::new(),
            };
            store
                .append(project, &[event(Some(&run), 0, started)])
                .await
                .unwrap();
            for i in 1..=BATCHES {
                let mut batch = vec![event(
                    Some(&run),
                    i,
                    EventKind::ItemSucceeded {
                        stage: "load".into(),
                        item: format!("i{i}").into(),
                        attempts: 1,
                        duration: Duration::ZERO,
                    },
                )];
                // Several statements between a batch's first position and its commit.
                for s in 0..3 {
                    batch.push(event(
                        Some(&run),
                        i,
                        EventKind::StageStarted {
                            stage: format!("s{i}.{s}").into(),
                            concurrency: 1,
                        },
                    ));
                }
                batch.push(event(
                    Some(&run),
                    i,
                    EventKind::MetricsSampled {
                        samples: vec![MetricSample {
                            stage: None,
                            metric: "errorRate".into(),
                            value: i as f64,
                        }],
                    },
                ));
                batch.push(event(
                    Some(&run),
                    i,
                    EventKind::HealingDecision {
                        record: Box::new(decision(&run, i, "retry")),
                    },
                ));
                store.append(project, &batch).await.unwrap();
            }
        })
    };
    let expected = PROJECTS.len() * (1 + PER_BATCH * BATCHES as usize);
    let writers: Vec<_> = PROJECTS
        .iter()
        .enumerate()
        .map(|(i, project)| writer(Arc::clone(if i % 2 == 0 { &a } else { &b }), project))
        .collect();
    let mut seen = BTreeSet::new();
    let mut cursor = JournalCursor::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut idle = 0;
    // Until every writer is done and a read finds nothing more.
    while idle < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower read {} of {expected} entries",
            seen.len()
        );
        let writing = writers.iter().any(|w| !w.is_finished());
        let (page, next) = a.journal_since(cursor, 7).await.unwrap();
        for entry in &page {
            assert!(!cursor.covers(entry));
            let json = serde_json::to_value(entry).unwrap();
            let key = format!(
                "{} {} {} {}",
                entry.project,
                json["kind"],
                json["stage"],
                millis_of(&entry.event)
            );
            assert!(seen.insert(key.clone()), "{key} read twice");
        }
        cursor = next;
        idle = if writing || !page.is_empty() {
            0
        } else {
            idle + 1
        };
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(seen.len(), expected, "the follower missed entries");
}

fn millis_of(event: &Event) -> i64 {
    crate::store::millis(event.at)
}
