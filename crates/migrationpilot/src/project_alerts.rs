//! A project's alerts outside its runs. [`keep_up`], which `serve` and PostgreSQL workers run,
//! delivers what runs left owed (a channel was down, the run was killed) and raises `run-lost`
//! about a run that nothing drives any more, through the channels and settings the project's
//! file declared, as the store keeps them, with the secrets of its own environment. The
//! `run-lost` alert itself ([`run_lost`]) is also raised by the project's next `run`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::alert::{Alert, Alerting, BuiltinAlert, RUN_LOST};
use tokio_util::sync::CancellationToken;

use crate::store::{RunRow, Store, StoreOutbox};
use crate::terminal::eprint_line;

/// How often [`keep_up`] looks for lost runs; owed deliveries every third look.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// How long one project's deliveries are waited for: longer than a channel's retries.
const DELIVERY_GRACE: Duration = Duration::from_secs(60);

/// The projects whose settings could not be built here, said once each.
type Said = Arc<Mutex<HashSet<String>>>;

/// Every `LOOK_EVERY` (10 s), raises `run-lost` about the runs nobody drives any more, and every
/// third time delivers what runs left owed, until `shutdown`. A store that cannot be read, or a
/// project whose channels cannot be built here, is said so once.
pub async fn keep_up(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let said = Said::default();
    let mut failing = false;
    for look in 0u64.. {
        let mut looked = report_lost(&store, &said).await;
        if look % 3 == 0 {
            looked = looked.and(deliver_owed(&store, &said).await);
        }
        match looked {
            Ok(()) if failing => {
                eprint_line(format_args!("  the store's alerts can be read again"));
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                eprint_line(format_args!(
                    "  ! the store's alerts cannot be read: {error}"
                ));
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Who takes one project's deliveries here: unique to the process and the call, so that what
/// one project's delivery releases is its own (and even where pids are not unique).
fn owner() -> String {
    format!(
        "project alerts {} #{:08x}",
        crate::store::Owner::this_process(),
        fastrand::u32(..)
    )
}

/// The project's latest run when nothing drives it any more (see [`RunRow::is_lost`]).
pub async fn lost_run(store: &dyn Store, project: &str) -> crate::store::Result<Option<RunRow>> {
    let now = crate::store::millis(std::time::SystemTime::now());
    Ok(store
        .unfinished_run(project)
        .await?
        .filter(|run| run.is_lost(now)))
}

/// The `run-lost` alert about `run`, as `settings` say; `None` when they turn it off. Its
/// subject is the run, so each lost run is told of once.
pub fn run_lost(run: &RunRow, settings: &BuiltinAlert) -> Option<Alert> {
    if !settings.enabled {
        return None;
    }
    let since = run
        .heartbeat_ms
        .map(|ms| format!(" (last heard from at {})", crate::store::iso8601(ms)))
        .unwrap_or_default();
    let by = run
        .owner
        .as_ref()
        .map(|owner| format!(", driven by {owner},"))
        .unwrap_or_default();
    let mut alert = Alert::firing(
        settings.severity,
        run.project.as_str(),
        RUN_LOST,
        format!("run {} of `{}` is lost", run.id, run.project),
    )
    .message(format!(
        "run {}{by} stopped before it finished{since}: nothing drives it any more; `migrationpilot run --resume` continues it",
        run.id
    ));
    alert.subject = Some(run.id.as_str().into());
    Some(alert)
}

/// Raises `run-lost` about each project's latest run that is lost and not already told of,
/// through the project's settings as kept; each project apart, so one's hanging channel does
/// not hold up another's.
async fn report_lost(store: &Arc<dyn Store>, said: &Said) -> crate::store::Result<()> {
    let mut lost = Vec::new();
    for project in store.projects().await? {
        if let Some(run) = lost_run(&**store, &project).await? {
            lost.push((project, run));
        }
    }
    futures_util::future::join_all(lost.into_iter().map(|(project, run)| async move {
        let settings = match store.alert_settings(&project).await {
            Ok(settings) => settings,
            Err(error) => {
                eprint_line(format_args!(
                    "  ! the alerts of `{project}` cannot be read: {error}"
                ));
                return;
            }
        };
        let Some(alerting) = alerting(store, &project, settings.as_ref(), said) else {
            return;
        };
        let Some(alert) = run_lost(&run, &alerting.builtins().run_lost) else {
            return;
        };
        // The store decides who tells: of serve and workers looking at once, one does.
        match store.raise_once(&alert).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                eprint_line(format_args!(
                    "  ! the alerts of `{project}` cannot be kept: {error}"
                ));
                return;
            }
        }
        alerting.fire(alert);
        settle(store, &project, &alerting).await;
    }))
    .await;
    Ok(())
}

/// Delivers what each project owes, each apart.
async fn deliver_owed(store: &Arc<dyn Store>, said: &Said) -> crate::store::Result<()> {
    let owing = store.owing_projects().await?;
    futures_util::future::join_all(owing.into_iter().map(|(project, settings)| async move {
        // Without settings there are no channels to deliver through.
        let Some(settings) = settings else { return };
        let Some(alerting) = alerting(store, &project, Some(&settings), said) else {
            return;
        };
        alerting.deliver_owed().await;
        settle(store, &project, &alerting).await;
    }))
    .await;
    Ok(())
}

/// The project's alerting as its kept settings say, kept in the store under an owner of its
/// own; `None`, said once, when its channels cannot be built here.
fn alerting(
    store: &Arc<dyn Store>,
    project: &str,
    settings: Option<&serde_json::Value>,
    said: &Said,
) -> Option<Alerting> {
    let none = serde_json::json!({});
    let lookup = |name: &str| std::env::var(name).ok();
    let first_time = || {
        said.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(project.to_owned())
    };
    let stored = match crate::build::stored_alerts(settings.unwrap_or(&none), &lookup) {
        Ok(stored) => stored,
        Err(error) => {
            if first_time() {
                eprint_line(format_args!(
                    "  ! the alerts of `{project}` wait: its channels cannot be built here: {error}"
                ));
            }
            return None;
        }
    };
    if let Some(error) = &stored.unread
        && first_time()
    {
        eprint_line(format_args!(
            "  ! the alert settings of `{project}` cannot be read here, the defaults apply: {error}"
        ));
    }
    Some(
        stored
            .alerting
            .outbox(Arc::new(StoreOutbox::new(
                Arc::clone(store),
                Some(project),
                stored.secrets,
            )))
            .owner(owner())
            .build(),
    )
}

/// Waits for what `alerting` sends and journals each outcome, as a run's are: `alerts` and
/// `/metrics` count it.
async fn settle(store: &Arc<dyn Store>, project: &str, alerting: &Alerting) {
    let bus = self_healing::EventBus::new();
    let mut outcomes = bus.subscribe();
    alerting.report_to(&bus, None);
    alerting.settle(DELIVERY_GRACE).await;
    let mut events = Vec::new();
    while let Some(event) = outcomes.try_recv() {
        events.push(event);
    }
    if !events.is_empty()
        && let Err(error) = store.append(project, &events).await
    {
        eprint_line(format_args!(
            "  ! alert deliveries of `{project}` not journaled: {error}"
        ));
    }
}
