//! What every store does with the control plane: queued requests claimed once, strategy
//! overrides merged, the healing mode and history.

use super::*;

pub(super) async fn each_queued_request_is_claimed_exactly_once(store: Arc<dyn Store>) {
    for i in 0..50 {
        store
            .enqueue("p", ActionKind::Restart, &format!("stage-{i}"))
            .await
            .unwrap();
    }
    store
        .enqueue("other", ActionKind::Restart, "x")
        .await
        .unwrap();
    let claims = futures_util::future::join_all((0..4).map(|c| {
        let store = Arc::clone(&store);
        async move { store.claim("p", &format!("worker-{c}")).await.unwrap() }
    }))
    .await;
    let mut ids: Vec<i64> = claims
        .iter()
        .flat_map(|c| &c.requests)
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "every request claimed, none twice");
    assert_eq!(store.claim("p", "late").await.unwrap(), Claimed::default());
    assert_eq!(store.claim("other", "w").await.unwrap().requests.len(), 1);
}

/// `execute` runs SQL on the store's database directly: no API queues an unknown action.
pub(super) async fn an_unknown_action_in_the_queue_is_refused_not_guessed(
    store: Arc<dyn Store>,
    execute: impl AsyncFn(&'static str),
) {
    store.enqueue("p", ActionKind::Restart, "a").await.unwrap();
    execute("INSERT INTO control (project, action, stage, requested_ms) VALUES ('p', 'explode', 'b', 0)")
        .await;
    let claimed = store.claim("p", "me").await.unwrap();
    assert_eq!(claimed.requests.len(), 1);
    assert_eq!(claimed.requests[0].action, ActionKind::Restart);
    assert_eq!(claimed.refused.len(), 1);
    assert_eq!(
        (
            claimed.refused[0].action.as_str(),
            claimed.refused[0].stage.as_str()
        ),
        ("explode", "b")
    );
    assert_eq!(store.claim("p", "me").await.unwrap(), Claimed::default());
}

pub(super) async fn overrides_merge_field_by_field(store: Arc<dyn Store>) {
    let first = StrategyOverride {
        max_attempts: Some(5),
        ..StrategyOverride::default()
    };
    let second = StrategyOverride {
        cooldown: Some(Duration::from_secs(60)),
        ..StrategyOverride::default()
    };
    store.set_override("p", "retry", &first).await.unwrap();
    store.set_override("p", "retry", &second).await.unwrap();
    let overrides = store.overrides("p").await.unwrap();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].1.max_attempts, Some(5));
    assert_eq!(overrides[0].1.cooldown, Some(Duration::from_secs(60)));
}

pub(super) async fn healing_mode_and_history_read_back(store: Arc<dyn Store>) {
    let mode = store.healing_mode("p").await.unwrap();
    assert_eq!(
        (mode.enabled, mode.reason, mode.updated_ms),
        (true, None, None)
    );
    store
        .set_healing_mode("p", false, Some("freeze"))
        .await
        .unwrap();
    let mode = store.healing_mode("p").await.unwrap();
    assert_eq!(
        (mode.enabled, mode.reason.as_deref()),
        (false, Some("freeze"))
    );
    assert!(mode.updated_ms.is_some());
    store.set_healing_mode("p", true, None).await.unwrap();
    let mode = store.healing_mode("p").await.unwrap();
    assert_eq!((mode.enabled, mode.reason), (true, None));

    let run = RunId::new("run-1");
    let records: Vec<HealingRecord> = [(0, "a"), (10, "b"), (20, "c")]
        .into_iter()
        .map(|(when, strategy)| decision(&run, when, strategy))
        .collect();
    let events: Vec<_> = records
        .iter()
        .map(|record| {
            event(
                Some(&run),
                0,
                EventKind::HealingDecision {
                    record: Box::new(record.clone()),
                },
            )
        })
        .collect();
    store.append("p", &events).await.unwrap();
    let newest_first: Vec<HealingRecord> = records.iter().rev().cloned().collect();
    assert_eq!(store.history("p", 10, None).await.unwrap(), newest_first);
    assert_eq!(
        store.history("p", 2, None).await.unwrap(),
        newest_first[..2]
    );
    assert_eq!(
        store.history("p", 10, Some(ms(10))).await.unwrap(),
        newest_first[..2]
    );
    assert!(store.history("other", 10, None).await.unwrap().is_empty());
    assert!(
        store.events("run-1", 0, 10).await.unwrap().is_empty(),
        "a decision is kept in its own table only"
    );
}

pub(super) async fn two_stores_claim_each_queued_request_exactly_once(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    const REQUESTS: usize = 300;
    let done = Arc::new(AtomicBool::new(false));
    let enqueuer = {
        let (a, b, done) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&done));
        tokio::spawn(async move {
            for i in 0..REQUESTS {
                let store = if i % 2 == 0 { &a } else { &b };
                store
                    .enqueue("p", ActionKind::Restart, &format!("s{i}"))
                    .await
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let claimers: Vec<_> = (0..4)
        .map(|c| {
            let store = Arc::clone(if c % 2 == 0 { &a } else { &b });
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let claimed = store.claim("p", &format!("claimer-{c}")).await.unwrap();
                    let empty = claimed.requests.is_empty();
                    ids.extend(claimed.requests.into_iter().map(|r| r.id));
                    if finished && empty {
                        return ids;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    enqueuer.await.unwrap();
    let mut ids = Vec::new();
    for claimer in claimers {
        ids.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no request claimed twice");
    assert_eq!(ids.len(), REQUESTS, "every request claimed");
    assert_eq!(a.claim("p", "late").await.unwrap(), Claimed::default());
}

pub(super) async fn concurrent_overrides_of_one_strategy_both_merge(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let attempts = StrategyOverride {
        max_attempts: Some(5),
        ..StrategyOverride::default()
    };
    let cooldown = StrategyOverride {
        cooldown: Some(Duration::from_secs(60)),
        ..StrategyOverride::default()
    };
    let races = (0..10).map(|i| {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        let (attempts, cooldown) = (attempts.clone(), cooldown.clone());
        async move {
            let strategy = format!("s{i}");
            let (x, y) = tokio::join!(
                a.set_override("p", &strategy, &attempts),
                b.set_override("p", &strategy, &cooldown)
            );
            x.unwrap();
            y.unwrap();
        }
    });
    futures_util::future::join_all(races).await;
    let overrides = a.overrides("p").await.unwrap();
    assert_eq!(overrides.len(), 10);
    for (strategy, merged) in overrides {
        assert_eq!(
            (merged.max_attempts, merged.cooldown),
            (Some(5), Some(Duration::from_secs(60))),
            "{strategy}: both changes kept"
        );
    }
}
