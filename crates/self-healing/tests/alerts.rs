//! Alerts on paused time: thresholds fire, escalate, lower and resolve; alerts that fire together
//! go out as one message; manual mode still alerts; a dead or hanging channel never holds up the
//! run, and what it could not take stays owed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::alert::{
    Alert, AlertStatus, Alerting, MemoryOutbox, Notifier, NotifyError, Outbox, Rules,
};
use self_healing::healing::{AlertThreshold, AutoHealer, HealingStrategy, NotifyAction, Trigger};
use self_healing::pipeline::{SelfHealingPipeline, Stage};
use self_healing::{BoxFuture, RunStatus, Severity};
use tokio::time::{Instant, sleep};

/// Keeps each message it is sent: the group of alerts.
#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Vec<Alert>>>,
    /// Takes only critical alerts (a pager).
    pager: bool,
}

impl Notifier for Inbox {
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.messages.lock().unwrap().push(alerts.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &str {
        if self.pager { "pager" } else { "inbox" }
    }

    fn min_severity(&self) -> Severity {
        if self.pager {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }
}

impl Inbox {
    fn lines(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|a| match a.status {
                AlertStatus::Firing => format!("{} {}", a.severity, a.value.unwrap_or(f64::NAN)),
                AlertStatus::Resolved => "resolved".to_owned(),
            })
            .collect()
    }
}

/// A channel that refuses every delivery, or one that never answers.
struct Dead {
    hangs: bool,
}

impl Notifier for Dead {
    fn notify<'a>(&'a self, _: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        let hangs = self.hangs;
        Box::pin(async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            Err(NotifyError {
                channel: "refusing".into(),
                reason: "connection refused".into(),
            })
        })
    }

    fn name(&self) -> &str {
        if self.hangs { "hanging" } else { "refusing" }
    }
}

fn quick_rules() -> Rules {
    Rules {
        group_wait: Duration::from_secs(1),
        repeat_interval: Duration::from_secs(4 * 3600),
    }
}

/// A stage whose queue depth goes 5000, 12000, 25000, 12000, 100, thirty seconds apart.
fn queue_stage() -> impl Into<Stage<()>> {
    Stage::new("consume", |ctx| async move {
        for depth in [5000.0, 12000.0, 25000.0, 12000.0, 100.0] {
            ctx.record("queueDepth", depth);
            sleep(Duration::from_secs(30)).await;
        }
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn a_threshold_fires_escalates_lowers_and_resolves_as_its_metric_moves() {
    let inbox = Arc::new(Inbox::default());
    let pager = Arc::new(Inbox {
        pager: true,
        ..Inbox::default()
    });
    let alerting = Alerting::builder()
        .channel(inbox.clone())
        .channel(pager.clone())
        .rules(quick_rules())
        .build();
    let healer = AutoHealer::builder()
        .alerting(alerting.clone())
        .threshold(AlertThreshold {
            metric: "queueDepth".into(),
            warning: Some(10000.0),
            critical: Some(20000.0),
            holds_for: Duration::ZERO,
        })
        .enabled(false) // manual mode stops remedies, not alerts
        .build()
        .unwrap();
    let pipeline = healer
        .install(SelfHealingPipeline::builder().name("queues"))
        .stage(queue_stage())
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    alerting.settle(Duration::from_secs(60)).await;
    // The stage's own alerts: up to a warning, escalated, lowered when the critical level is
    // left (the warning was inhibited meanwhile), resolved below the warning level.
    assert_eq!(
        inbox.lines(),
        [
            "warning 12000",
            "critical 25000",
            "warning 12000",
            "resolved"
        ]
    );
    let messages = inbox.messages.lock().unwrap();
    assert!(
        messages
            .iter()
            .flatten()
            .all(|a| a.fingerprint() == "queues/consume/queueDepth")
    );
    assert!(messages[0][0].title.contains("warning level of 10000"));
}

#[tokio::test(start_paused = true)]
async fn alerts_that_fire_together_go_out_as_one_message_per_channel() {
    let inbox = Arc::new(Inbox::default());
    let alerting = Alerting::builder()
        .channel(inbox.clone())
        .rules(Rules {
            group_wait: Duration::from_secs(10),
            ..Rules::default()
        })
        .build();
    for name in ["disk", "queue", "latency"] {
        alerting.fire(Alert::firing(
            Severity::Warning,
            "p",
            name,
            format!("{name} is high"),
        ));
        sleep(Duration::from_secs(2)).await;
    }
    sleep(Duration::from_secs(10)).await;
    let messages = inbox.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "one message: {messages:#?}");
    assert_eq!(messages[0].len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dead_or_hanging_channel_never_holds_up_the_run_and_its_alerts_stay_owed() {
    async fn run(with_dead_channels: bool) -> (Duration, Arc<Inbox>, Arc<MemoryOutbox>) {
        let inbox = Arc::new(Inbox::default());
        let outbox = Arc::new(MemoryOutbox::new());
        let mut alerting = Alerting::builder()
            .channel(inbox.clone())
            .rules(quick_rules())
            .outbox(outbox.clone());
        if with_dead_channels {
            alerting = alerting
                .channel(Arc::new(Dead { hangs: false }))
                .channel(Arc::new(Dead { hangs: true }));
        }
        let alerting = alerting.build();
        let healer = AutoHealer::builder()
            .alerting(alerting.clone())
            .strategy(
                HealingStrategy::new("page", NotifyAction::default())
                    .trigger(Trigger::threshold("queueDepth", 10000.0)),
            )
            .build()
            .unwrap();
        let pipeline = healer
            .install(SelfHealingPipeline::builder().name("queues"))
            .stage(queue_stage())
            .build()
            .unwrap();
        let started = Instant::now();
        assert_eq!(pipeline.execute(()).await.status, RunStatus::Succeeded);
        let took = started.elapsed();
        alerting.settle(Duration::from_secs(30)).await;
        (took, inbox, outbox)
    }
    let (alone, inbox_alone, _) = run(false).await;
    let (with_dead, inbox, outbox) = run(true).await;
    assert_eq!(with_dead, alone, "the run takes exactly as long");
    assert_eq!(
        inbox.lines(),
        inbox_alone.lines(),
        "the working channel got everything"
    );
    assert_eq!(inbox.lines(), ["warning 12000", "resolved"]);
    // What the dead channels could not take is still owed: the next process delivers it.
    let owed = outbox.owed();
    for channel in ["refusing", "hanging"] {
        let statuses: Vec<AlertStatus> = owed
            .iter()
            .filter(|d| d.channel == channel)
            .map(|d| d.alert.status)
            .collect();
        assert_eq!(
            statuses,
            [AlertStatus::Firing, AlertStatus::Resolved],
            "{channel}"
        );
    }
    assert!(owed.iter().all(|d| d.channel != "inbox"));
    assert!(
        owed.iter().any(|d| d.attempts > 0),
        "the refusing channel was tried"
    );
    // Another process can take what this one is not delivering any more.
    let taken = outbox.take("next process", Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 4);
}

/// Takes one alert per message and refuses more.
#[derive(Default)]
struct OneAtATime {
    taken: Mutex<Vec<String>>,
}

impl Notifier for OneAtATime {
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            if alerts.len() > 1 {
                return Err(NotifyError {
                    channel: "single".into(),
                    reason: "one alert per message".into(),
                });
            }
            self.taken.lock().unwrap().push(alerts[0].name.to_string());
            Ok(())
        })
    }

    fn name(&self) -> &str {
        "single"
    }
}

#[tokio::test(start_paused = true)]
async fn a_group_the_channel_refuses_goes_alert_by_alert_each_sent_once() {
    let channel = Arc::new(OneAtATime::default());
    let outbox = Arc::new(MemoryOutbox::new());
    let alerting = Alerting::builder()
        .channel(channel.clone())
        .rules(Rules {
            group_wait: Duration::from_secs(10),
            ..Rules::default()
        })
        .outbox(outbox.clone())
        .build();
    for name in ["disk", "queue", "latency"] {
        alerting.fire(Alert::firing(Severity::Warning, "p", name, "high"));
    }
    alerting.settle(Duration::from_secs(120)).await;
    let mut taken = channel.taken.lock().unwrap().clone();
    taken.sort();
    assert_eq!(taken, ["disk", "latency", "queue"], "each alone, once");
    assert!(outbox.owed().is_empty(), "nothing left owed");
    assert_eq!(outbox.delivered().len(), 3);
}
