//! What every store does with alerts (the `Alerts` trait): kept, raised once, owed to channels,
//! taken under a lease and delivered, given up, released.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use self_healing::Severity;
use self_healing::alert::{Alert, AlertStatus};

use super::at;
use crate::store::Store;

fn firing(project: &str, name: &str, when: i64) -> Alert {
    let mut alert =
        Alert::firing(Severity::Critical, project, name, "rolled back").on_stage("load");
    alert.starts_at = at(when);
    alert
}

pub(in crate::store) async fn an_alert_is_raised_once_however_many_would_raise_it(
    store: Arc<dyn Store>,
) {
    let alert = firing("p", "run-lost", 1);
    let tries = futures_util::future::join_all((0..8).map(|_| store.raise_once(&alert))).await;
    let raised = tries.into_iter().filter(|t| *t.as_ref().unwrap()).count();
    assert_eq!(raised, 1, "one of eight at once");
    assert!(!store.raise_once(&alert).await.unwrap(), "it fires already");
    assert_eq!(store.firing_alerts("p").await.unwrap().len(), 1);
    // Once it resolved, it can be raised again.
    let resolved = Alert {
        status: AlertStatus::Resolved,
        ..alert.clone()
    };
    store.keep_alert("a", &resolved, &[]).await.unwrap();
    assert!(store.raise_once(&alert).await.unwrap());
}

pub(in crate::store) async fn alerts_are_owed_taken_under_a_lease_and_delivered(
    store: Arc<dyn Store>,
) {
    assert_eq!(store.alert_settings("p").await.unwrap(), None);
    let channels = serde_json::json!({"slack": {"url": "${SLACK_URL}"}});
    store.set_alert_settings("p", &channels).await.unwrap();
    assert_eq!(
        store.alert_settings("p").await.unwrap(),
        Some(channels.clone()),
        "kept as written"
    );
    let alert = firing("p", "rollback", 1);
    // Owed deliveries are their enqueuer's (it gathers a group) until taken, tried or released.
    store
        .keep_alert("a", &alert, &["slack".into(), "email".into()])
        .await
        .unwrap();
    store
        .keep_alert("c", &firing("o", "rollback", 1), &["slack".into()])
        .await
        .unwrap();
    assert_eq!(
        store.owing_projects().await.unwrap(),
        [("o".to_owned(), None), ("p".to_owned(), Some(channels))]
    );

    let lease = Duration::from_secs(60);
    assert!(
        store
            .take_deliveries("z", lease, Some("p"))
            .await
            .unwrap()
            .is_empty(),
        "what a process gathers is not taken from it"
    );
    let taken = store.take_deliveries("a", lease, Some("p")).await.unwrap();
    let channels: Vec<&str> = taken.iter().map(|d| d.channel.as_str()).collect();
    assert_eq!(channels, ["slack", "email"]);
    assert!(taken[0].id < taken[1].id);
    assert!(taken.iter().all(|d| d.alert == alert && d.attempts == 0));
    assert!(
        store
            .take_deliveries("b", lease, Some("p"))
            .await
            .unwrap()
            .is_empty(),
        "taken within the lease"
    );
    let retaken = store
        .take_deliveries("b", Duration::ZERO, Some("p"))
        .await
        .unwrap();
    assert_eq!(retaken.len(), 2, "the lease ran out");

    // "a" reports late: its failure must not reopen what "b" holds; a success counts anyway.
    store
        .delivery_attempted("a", &[taken[0].id], Some("late"))
        .await
        .unwrap();
    store
        .delivery_attempted("b", &[taken[0].id], Some("503"))
        .await
        .unwrap();
    store
        .delivery_attempted("a", &[taken[1].id], None)
        .await
        .unwrap();
    let owed = store.take_deliveries("c", lease, None).await.unwrap();
    let owed: Vec<(&str, &str, u32)> = owed
        .iter()
        .map(|d| (&*d.alert.project, d.channel.as_str(), d.attempts))
        .collect();
    assert_eq!(owed, [("p", "slack", 1), ("o", "slack", 0)]);

    let rows = store.alerts("p", 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].fingerprint.as_str(), &rows[0].alert),
        ("p/load/rollback", &alert)
    );
    let deliveries: Vec<_> = rows[0]
        .deliveries
        .iter()
        .map(|d| {
            (
                d.channel.as_str(),
                d.about,
                d.status.as_str(),
                d.attempts,
                d.last_error.as_deref(),
                d.delivered_ms.is_some(),
            )
        })
        .collect();
    assert_eq!(
        deliveries,
        [
            ("slack", AlertStatus::Firing, "owed", 1, Some("503"), false),
            ("email", AlertStatus::Firing, "delivered", 1, None, true),
        ]
    );
    assert_eq!(
        store.firing_alerts("p").await.unwrap(),
        std::slice::from_ref(&alert)
    );

    let mut resolved = alert.clone();
    resolved.status = AlertStatus::Resolved;
    resolved.ends_at = Some(at(2));
    store
        .keep_alert("a", &resolved, &["slack".into()])
        .await
        .unwrap();
    assert!(store.firing_alerts("p").await.unwrap().is_empty());
    // Later, so it is the most recently changed too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let budget = firing("p", "healing-budget", 3);
    store.keep_alert("a", &budget, &[]).await.unwrap();
    let rows = store.alerts("p", 10).await.unwrap();
    let alerts: Vec<&Alert> = rows.iter().map(|r| &r.alert).collect();
    assert_eq!(alerts, [&budget, &resolved], "firing first");
    assert!(rows[0].deliveries.is_empty());
    assert_eq!(rows[1].deliveries.len(), 3);
    assert_eq!(rows[1].deliveries[2].about, AlertStatus::Resolved);
    assert!(rows[0].updated_ms >= rows[1].updated_ms);
    assert_eq!(store.alerts("p", 1).await.unwrap().len(), 1);
    assert_eq!(store.firing_alerts("p").await.unwrap(), [budget]);
}

pub(in crate::store) async fn a_delivery_is_given_up_after_its_tries_and_released_ones_are_taken_at_once(
    store: Arc<dyn Store>,
) {
    let alert = firing("p", "rollback", 1);
    store
        .keep_alert("run", &alert, &["dead".into()])
        .await
        .unwrap();
    // The run ends with the delivery unfinished: released, the next process takes it at once.
    store.release_deliveries("run").await.unwrap();
    let lease = Duration::from_secs(60);
    for n in 1..=self_healing::alert::MAX_ATTEMPTS {
        let taken = store.take_deliveries("next", lease, None).await.unwrap();
        assert_eq!(taken.len(), 1, "try {n}");
        store
            .delivery_attempted("next", &[taken[0].id], Some("refused"))
            .await
            .unwrap();
    }
    assert!(
        store
            .take_deliveries("next", lease, None)
            .await
            .unwrap()
            .is_empty(),
        "given up"
    );
    let rows = store.alerts("p", 10).await.unwrap();
    assert_eq!(rows[0].deliveries[0].status, "dead");
    assert!(store.owing_projects().await.unwrap().is_empty());
}

pub(in crate::store) async fn concurrent_takers_never_share_a_delivery(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    for i in 0..40 {
        a.keep_alert(
            "enqueuer",
            &firing("p", &format!("alert-{i}"), i),
            &["slack".into(), "email".into()],
        )
        .await
        .unwrap();
    }
    a.release_deliveries("enqueuer").await.unwrap();
    let takers = (0..6).map(|t| {
        let store = Arc::clone(if t % 2 == 0 { &a } else { &b });
        async move {
            let owner = format!("taker-{t}");
            // A taker's own leases come back to it on its next take; another's never do.
            let mut ids = HashSet::new();
            for _ in 0..3 {
                let taken = store
                    .take_deliveries(&owner, Duration::from_secs(60), Some("p"))
                    .await
                    .unwrap();
                ids.extend(taken.into_iter().map(|d| d.id));
            }
            ids
        }
    });
    let ids: Vec<i64> = futures_util::future::join_all(takers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "no delivery taken by two takers");
    assert_eq!(ids.len(), 80, "every delivery taken");
}
