//! [`Alerting`]: the routing rules, the outbox and delivery, in the background.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{
    Alert, BuiltinAlerts, Delivery, MemoryOutbox, Notice, Notifier, Outbox, Router, Rules, Runbooks,
};
use crate::error::{Severity, StageError};
use crate::event::{EventBus, EventKind, RunId};
use crate::resilience::RetryPolicy;

/// How long a process may hold deliveries it took before another may take them.
const LEASE: Duration = Duration::from_secs(120);

/// The most alerts one message to a channel carries.
const GROUP_MAX: usize = 50;

/// What became of a delivery to one channel, for whoever reports it.
#[derive(Debug, Clone, PartialEq)]
struct DeliveryReport {
    /// The channel.
    channel: String,
    /// The fingerprints of the alerts it carried.
    alerts: Vec<String>,
    /// Why it failed after its retries; `None` when delivered.
    error: Option<String>,
}

/// Alerts people can rely on: fired and resolved through the routing [`Rules`], kept in an
/// [`Outbox`] before delivery, delivered to every channel that takes their severity in the
/// background with retries. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex, RwLock};
/// use std::time::Duration;
/// use self_healing::alert::{Alert, Alerting, Notifier, NotifyError, Rules};
/// use self_healing::{BoxFuture, Severity};
///
/// #[derive(Default)]
/// struct Inbox(Mutex<Vec<String>>);
/// impl Notifier for Inbox {
///     fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
///         for alert in alerts {
///             self.0.lock().unwrap().push(format!("{} {}", alert.status.as_str(), alert.title));
///         }
///         Box::pin(async { Ok(()) })
///     }
/// }
/// let inbox = Arc::new(Inbox::default());
/// let alerting = Alerting::builder().channel(inbox.clone()).build();
/// let alert = Alert::firing(Severity::Critical, "p", "healing-budget", "budget spent");
/// alerting.fire(alert.clone());
/// tokio::time::sleep(Duration::from_secs(11)).await; // groupWait
/// alerting.resolve(&alert.fingerprint(), None);
/// alerting.settle(Duration::from_secs(30)).await;
/// assert_eq!(*inbox.0.lock().unwrap(), ["firing budget spent", "resolved budget spent"]);
/// # });
/// ```
#[derive(Clone)]
pub struct Alerting {
    inner: Arc<Inner>,
}

/// An alert owed to the named channels, on its way to the outbox.
type Owed = (Alert, Vec<String>);

struct Inner {
    channels: Vec<Arc<dyn Notifier>>,
    runbooks: Runbooks,
    builtins: BuiltinAlerts,
    router: Mutex<Router>,
    outbox: RwLock<Arc<dyn Outbox>>,
    retry: RetryPolicy,
    owner: String,
    /// Whether a group is gathering: its flush is scheduled.
    gathering: Mutex<bool>,
    /// Delivery ids being delivered by this process.
    in_flight: Mutex<HashSet<i64>>,
    /// The writer that keeps owed alerts in the outbox in order, once started.
    writer: Mutex<Option<mpsc::UnboundedSender<Owed>>>,
    /// Tasks not finished (watchers, the writer, group waits and deliveries), and a wake-up
    /// when one ends.
    busy: AtomicUsize,
    /// What may still owe an alert: watchers, and alerts sent to the writer not yet kept.
    owing: AtomicUsize,
    idle: Notify,
    reports: Mutex<Option<(EventBus, Option<RunId>)>>,
}

/// Builds an [`Alerting`].
pub struct AlertingBuilder {
    channels: Vec<Arc<dyn Notifier>>,
    runbooks: Runbooks,
    builtins: BuiltinAlerts,
    rules: Rules,
    outbox: Option<Arc<dyn Outbox>>,
    retry: RetryPolicy,
    owner: String,
}

impl Alerting {
    /// No channels, the default rules, an in-memory outbox, three tries per delivery.
    pub fn builder() -> AlertingBuilder {
        AlertingBuilder {
            channels: Vec::new(),
            runbooks: Runbooks::default(),
            builtins: BuiltinAlerts::default(),
            rules: Rules::default(),
            outbox: None,
            retry: RetryPolicy::default(),
            // Unique even where pids are not (containers on several machines).
            owner: format!("pid {} #{:08x}", std::process::id(), fastrand::u32(..)),
        }
    }

    /// The channels.
    pub fn channels(&self) -> &[Arc<dyn Notifier>] {
        &self.inner.channels
    }

    /// Keeps alerts in `outbox` from now on (a store opened after the alerting was built);
    /// call it before anything fires.
    pub fn keep_in(&self, outbox: Arc<dyn Outbox>) {
        *self.inner.outbox.write().unwrap_or_else(|e| e.into_inner()) = outbox;
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.inner.outbox.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The built-in alerts' settings.
    pub fn builtins(&self) -> &BuiltinAlerts {
        &self.inner.builtins
    }

    /// The routing rules.
    pub fn rules(&self) -> Rules {
        self.lock_router().rules()
    }

    fn lock_router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.inner.router.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes every delivery's outcome on `bus` from now on, as `alert-delivered` or
    /// `alert-failed` (of `run`, if given).
    pub fn report_to(&self, bus: &EventBus, run: Option<&RunId>) {
        *self.inner.reports.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((bus.clone(), run.cloned()));
    }

    /// Takes back `project`'s alerts that an earlier process left firing, so they resolve.
    pub async fn restore(&self, project: &str) -> Result<usize, String> {
        let firing = self.outbox().firing(project).await?;
        let count = firing.len();
        let now = Instant::now();
        let mut router = self.lock_router();
        for alert in firing {
            router.restore(alert, now);
        }
        Ok(count)
    }

    /// An alert fires (or its condition still holds). What the rules decided: sent (after
    /// `groupWait`), inhibited by a more severe one, or held until `repeatInterval`.
    /// It carries its runbook ([`Runbooks`]); one that has none carries what to do from the
    /// shipped runbooks in its message, if they cover it.
    pub fn fire(&self, mut alert: Alert) -> Notice {
        self.inner.runbooks.attach(&mut alert);
        if alert.runbook.is_none()
            && let Some(what) = super::what_to_do(&alert.name)
        {
            alert.message = format!("{}\nWhat to do: {what}", alert.message);
        }
        let notice = self.lock_router().fire(alert, Instant::now());
        self.owe(&notice);
        notice
    }

    /// The alert `fingerprint` ends at `severity` (with `None`, at every severity).
    pub fn resolve(&self, fingerprint: &str, severity: Option<Severity>) -> Notice {
        let notice =
            self.lock_router()
                .resolve(fingerprint, severity, Instant::now(), SystemTime::now());
        self.owe(&notice);
        notice
    }

    /// Resolves every firing alert `pick` picks; how many resolved.
    pub fn resolve_where(&self, pick: impl Fn(&Alert) -> bool) -> usize {
        let fingerprints = self.lock_router().fingerprints(pick);
        for fingerprint in &fingerprints {
            self.resolve(fingerprint, None);
        }
        fingerprints.len()
    }

    /// The firing alerts, the most severe of each fingerprint.
    pub fn firing(&self) -> Vec<Alert> {
        self.lock_router().firing()
    }

    /// Owes what `notice` says to send to the channels it concerns: an alert to those that take
    /// its severity; a lowered alert to those, and its end to those that only took the more
    /// severe one. Kept in the outbox in the order the notices came (one writer), then the group
    /// it joins is delivered after `groupWait`.
    fn owe(&self, notice: &Notice) {
        let takes = |severity: Severity| -> Vec<String> {
            self.inner
                .channels
                .iter()
                .filter(|c| severity >= c.min_severity())
                .map(|c| c.name().to_owned())
                .collect()
        };
        let mut owed = Vec::new();
        match notice {
            Notice::Send(alert) => owed.push((alert.clone(), takes(alert.severity))),
            Notice::Lowered { alert, from } => {
                let lower = takes(alert.severity);
                let ended: Vec<String> = takes(*from)
                    .into_iter()
                    .filter(|c| !lower.contains(c))
                    .collect();
                // The resolution first: the alert, still firing lower, is kept as firing.
                if !ended.is_empty() {
                    let resolved = Alert {
                        status: super::AlertStatus::Resolved,
                        severity: *from,
                        ends_at: Some(SystemTime::now()),
                        ..alert.clone()
                    };
                    owed.push((resolved, ended));
                }
                owed.push((alert.clone(), lower));
            }
            Notice::Inhibited | Notice::Held | Notice::Nothing => return,
        }
        let writer = {
            let mut writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            writer.get_or_insert_with(|| self.start_writer()).clone()
        };
        for item in owed {
            self.inner.owing.fetch_add(1, Ordering::AcqRel);
            if writer.send(item).is_err() {
                self.inner.owing.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The one task that keeps owed alerts in the outbox, in order. An outbox that keeps
    /// failing is tried three times; then the alert is delivered straight away, not lost.
    fn start_writer(&self) -> mpsc::UnboundedSender<Owed> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Owed>();
        // Not counted as busy (`owing` counts its work), and holding the service weakly: it
        // ends when the last handle to the service is dropped.
        let service = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some((alert, channels)) = rx.recv().await {
                let Some(inner) = service.upgrade() else {
                    return;
                };
                let this = Alerting { inner };
                let mut kept = Err(String::new());
                for pause in [0, 200, 1000] {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    kept = this
                        .outbox()
                        .enqueue(&this.inner.owner, &alert, &channels)
                        .await;
                    if kept.is_ok() {
                        break;
                    }
                }
                if let Err(error) = kept {
                    this.report(DeliveryReport {
                        channel: "outbox".into(),
                        alerts: vec![alert.fingerprint()],
                        error: Some(format!(
                            "the alert could not be kept, delivered without the outbox: {error}"
                        )),
                    });
                    this.deliver_unkept(alert, &channels);
                } else if !channels.is_empty() {
                    this.gather();
                }
                this.inner.owing.fetch_sub(1, Ordering::AcqRel);
                this.inner.idle.notify_waiters();
            }
        });
        tx
    }

    /// The channel named `name`, if this alerting has it.
    fn channel(&self, name: &str) -> Option<Arc<dyn Notifier>> {
        self.inner
            .channels
            .iter()
            .find(|c| c.name() == name)
            .cloned()
    }

    /// Delivers an alert the outbox could not keep: best effort, reported like any delivery.
    fn deliver_unkept(&self, alert: Alert, channels: &[String]) {
        for channel in channels {
            let notifier = self.channel(channel);
            let (this, alert, channel) = (self.clone(), alert.clone(), channel.clone());
            self.spawn(async move {
                let outcome = match notifier {
                    Some(notifier) => this.send(&*notifier, std::slice::from_ref(&alert)).await,
                    None => Err(format!("no channel `{channel}` is configured")),
                };
                this.report(DeliveryReport {
                    channel,
                    alerts: vec![alert.fingerprint()],
                    error: outcome.err(),
                });
            });
        }
    }

    /// One delivery to `notifier`, retried by the policy.
    async fn send(&self, notifier: &dyn Notifier, alerts: &[Alert]) -> Result<(), String> {
        self.inner
            .retry
            .run(|_| async {
                notifier
                    .notify(alerts)
                    .await
                    .map_err(|e| StageError::new(e.reason))
            })
            .await
            .map_err(|e| e.message().to_owned())
    }

    /// Schedules a flush after `groupWait`, unless one is scheduled.
    fn gather(&self) {
        {
            let mut gathering = self
                .inner
                .gathering
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *gathering {
                return;
            }
            *gathering = true;
        }
        let wait = self.rules().group_wait;
        let this = self.clone();
        self.spawn(async move {
            tokio::time::sleep(wait).await;
            *this
                .inner
                .gathering
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = false;
            this.deliver_owed().await;
        });
    }

    /// Delivers what the outbox owes (this process's alerts, and those an earlier one left
    /// undelivered), one group per channel, in the background.
    pub async fn deliver_owed(&self) {
        let taken = match self.outbox().take(&self.inner.owner, LEASE).await {
            Ok(taken) => taken,
            Err(error) => {
                self.report(DeliveryReport {
                    channel: "outbox".into(),
                    alerts: Vec::new(),
                    error: Some(format!("the outbox cannot be read: {error}")),
                });
                return;
            }
        };
        let mut groups: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for delivery in taken {
                if in_flight.insert(delivery.id) {
                    groups
                        .entry(delivery.channel.clone())
                        .or_default()
                        .push(delivery);
                }
            }
        }
        for (channel, deliveries) in groups {
            let notifier = self.channel(&channel);
            let this = self.clone();
            self.spawn(async move { this.deliver(channel, notifier, deliveries).await });
        }
    }

    async fn deliver(
        &self,
        channel: String,
        notifier: Option<Arc<dyn Notifier>>,
        deliveries: Vec<Delivery>,
    ) {
        // Bounded groups; a group the channel refuses is tried alert by alert, so one alert
        // it cannot take does not hold the others back.
        for group in deliveries.chunks(GROUP_MAX) {
            let split = group.len() > 1;
            let outcome = self
                .deliver_group(&channel, notifier.as_deref(), group, split)
                .await;
            if outcome.is_err() && split {
                for one in group {
                    self.deliver_group(
                        &channel,
                        notifier.as_deref(),
                        std::slice::from_ref(one),
                        false,
                    )
                    .await
                    .ok();
                }
            }
        }
    }

    /// Delivers one group and records its outcome. A group that will be tried again alert by
    /// alert (`split`) records nothing when it fails: its deliveries stay this process's, in
    /// flight and leased, until each has been tried on its own, so no one else takes them in
    /// between, and each try counts once.
    async fn deliver_group(
        &self,
        channel: &str,
        notifier: Option<&dyn Notifier>,
        group: &[Delivery],
        split: bool,
    ) -> Result<(), String> {
        let ids: Vec<i64> = group.iter().map(|d| d.id).collect();
        let alerts: Vec<Alert> = group.iter().map(|d| d.alert.clone()).collect();
        let outcome = match notifier {
            // A channel the configuration no longer has: tried until given up.
            None => Err(format!("no channel `{channel}` is configured")),
            Some(notifier) => self.send(notifier, &alerts).await,
        };
        if outcome.is_err() && split {
            return outcome;
        }
        let error = outcome.as_ref().err().cloned();
        let recorded = self
            .outbox()
            .attempted(&self.inner.owner, &ids, error.as_deref())
            .await;
        {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                in_flight.remove(id);
            }
        }
        let error = match recorded {
            Ok(()) => error,
            Err(e) => Some(error.unwrap_or_default() + &format!(" (not recorded: {e})")),
        };
        self.report(DeliveryReport {
            channel: channel.to_owned(),
            alerts: alerts.iter().map(Alert::fingerprint).collect(),
            error,
        });
        outcome
    }

    fn report(&self, report: DeliveryReport) {
        let reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
        let Some((bus, run)) = reports.as_ref() else {
            return;
        };
        let kind = match report.error {
            None => EventKind::AlertDelivered {
                channel: report.channel,
                alerts: report.alerts,
            },
            Some(error) => EventKind::AlertFailed {
                channel: report.channel,
                alerts: report.alerts,
                error,
            },
        };
        bus.publish(run.as_ref(), kind);
    }

    pub(super) fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn_task(work, false);
    }

    /// A task that may owe alerts: `settle` waits for it before it delivers.
    pub(super) fn spawn_owing(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn_task(work, true);
    }

    fn spawn_task(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
        owing: bool,
    ) {
        self.inner.busy.fetch_add(1, Ordering::AcqRel);
        if owing {
            self.inner.owing.fetch_add(1, Ordering::AcqRel);
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            work.await;
            if owing {
                inner.owing.fetch_sub(1, Ordering::AcqRel);
            }
            inner.busy.fetch_sub(1, Ordering::AcqRel);
            inner.idle.notify_waiters();
        });
    }

    /// Sends what is gathering now, without waiting out `groupWait`, and waits up to `grace`
    /// for deliveries in flight; what is still undelivered then stays owed in the outbox, for
    /// the next process. How many deliveries were still going when it stopped waiting.
    pub async fn settle(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        // What may still owe an alert first (a run's end resolving its alerts), then deliver.
        self.wait_until(deadline, |inner| inner.owing.load(Ordering::Acquire) == 0)
            .await;
        self.deliver_owed().await;
        self.wait_until(deadline, |inner| {
            let gathering = usize::from(*inner.gathering.lock().unwrap_or_else(|e| e.into_inner()));
            inner.busy.load(Ordering::Acquire) <= gathering
        })
        .await;
        let gathering = usize::from(
            *self
                .inner
                .gathering
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        // What is still going stays owed; give it up so the next process sends it at once.
        // A delivery that finishes later still records its success.
        let _ = self.outbox().release(&self.inner.owner).await;
        self.inner
            .busy
            .load(Ordering::Acquire)
            .saturating_sub(gathering)
    }

    /// Waits until `done` holds or the deadline passes.
    async fn wait_until(&self, deadline: Instant, done: impl Fn(&Inner) -> bool) {
        loop {
            let idle = self.inner.idle.notified();
            if done(&self.inner) {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting")
            .field(
                "channels",
                &self
                    .inner
                    .channels
                    .iter()
                    .map(|n| n.name())
                    .collect::<Vec<_>>(),
            )
            .field("rules", &self.rules())
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting::builder().build()
    }
}

impl AlertingBuilder {
    /// Adds a channel.
    pub fn channel(mut self, channel: Arc<dyn Notifier>) -> Self {
        self.channels.push(channel);
        self
    }

    /// The runbooks alerts carry (default: none).
    pub fn runbooks(mut self, runbooks: Runbooks) -> Self {
        self.runbooks = runbooks;
        self
    }

    /// The built-in alerts' settings (default: all on, [`BuiltinAlerts::default`]).
    pub fn builtins(mut self, builtins: BuiltinAlerts) -> Self {
        self.builtins = builtins;
        self
    }

    /// The routing rules (default: `groupWait` 10 s, `repeatInterval` 4 h).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Where alerts and owed deliveries are kept (default: in memory).
    pub fn outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// How each delivery is retried (default: three tries, 1 s then 2 s apart).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Who takes deliveries from the outbox (default: this process's id).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The service.
    pub fn build(self) -> Alerting {
        Alerting {
            inner: Arc::new(Inner {
                channels: self.channels,
                runbooks: self.runbooks,
                builtins: self.builtins,
                router: Mutex::new(Router::new(self.rules)),
                outbox: RwLock::new(self.outbox.unwrap_or_else(|| Arc::new(MemoryOutbox::new()))),
                retry: self.retry,
                owner: self.owner,
                gathering: Mutex::new(false),
                in_flight: Mutex::new(HashSet::new()),
                writer: Mutex::new(None),
                busy: AtomicUsize::new(0),
                owing: AtomicUsize::new(0),
                idle: Notify::new(),
                reports: Mutex::new(None),
            }),
        }
    }
}

impl std::fmt::Debug for AlertingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertingBuilder")
            .field("channels", &self.channels.len())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}
