//! Steering a running pipeline from other processes: the run polls the store for the healing
//! mode, strategy overrides and queued actions, and hands them to its healer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self_healing::event::{ActionKind, RunId};
use self_healing::healing::{AutoHealer, StrategyOverride};

use crate::store::{RunRow, Store, StoreError};

/// How often a running pipeline looks for requests.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The actions `healing trigger` can ask for.
pub const ACTIONS: [&str; 4] = ["restart", "rollback", "failover", "circuit-break"];

/// What a running pipeline takes from the store.
pub struct Steering {
    store: Arc<dyn Store>,
    project: Arc<str>,
    healer: AutoHealer,
    run: RunId,
    /// The file's `healing.enabled`: off in the file or in the store means off.
    file_enabled: bool,
    applied: HashMap<String, StrategyOverride>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("project", &self.project)
            .field("run", &self.run)
            .field("file_enabled", &self.file_enabled)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Steering for the run `run` of `project`, applied to `healer`. Nothing is read from the
    /// store until [`sync`](Self::sync) or [`poll`](Self::poll).
    pub fn new(store: Arc<dyn Store>, project: Arc<str>, healer: AutoHealer, run: RunId) -> Self {
        let file_enabled = healer.is_enabled();
        Steering {
            store,
            project,
            healer,
            run,
            file_enabled,
            applied: HashMap::new(),
        }
    }

    /// Applies the healing mode and the overrides the store holds now.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        let mode = self.store.healing_mode(&self.project).await?;
        self.healer.set_enabled(self.file_enabled && mode.enabled);
        for (strategy, changes) in self.store.overrides(&self.project).await? {
            if self.applied.get(&strategy) == Some(&changes) {
                continue;
            }
            if let Err(error) = self.healer.configure(&strategy, &changes) {
                eprintln!("  ! override of `{strategy}` not applied: {error}");
            }
            self.applied.insert(strategy, changes);
        }
        Ok(())
    }

    /// Carries out the queued actions through the healer, which records each in its history
    /// under `manual`.
    async fn act(&mut self) -> Result<(), StoreError> {
        let claimant = format!("run {} pid {}", self.run, std::process::id());
        let claimed = self.store.claim(&self.project, &claimant).await?;
        for refused in claimed.refused {
            eprintln!(
                "  ! request {} refused: `{}` is not an action this migrationpilot knows (stage `{}`)",
                refused.id, refused.action, refused.stage
            );
        }
        for request in claimed.requests {
            let reason = format!("requested by an operator (request {})", request.id);
            self.healer
                .trigger(&self.run, &request.stage, request.action, &reason)
                .await;
        }
        Ok(())
    }

    /// Polls until dropped. A store that cannot be read is reported once when it starts
    /// failing and once when it is back; the run goes on meanwhile.
    pub async fn poll(mut self) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let result = match self.sync().await {
                Ok(()) => self.act().await,
                Err(error) => Err(error),
            };
            match (result, failing) {
                (Err(error), false) => {
                    eprintln!("  ! steering paused, the store cannot be read: {error}");
                    failing = true;
                }
                (Ok(()), true) => {
                    eprintln!("  steering resumed");
                    failing = false;
                }
                _ => {}
            }
        }
    }
}

/// Why a request to steer a project was refused. The CLI and the HTTP API ask through the same
/// functions below, so they refuse the same things with the same words.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The store has never heard of the project.
    #[error("the store knows no project `{0}`")]
    UnknownProject(String),
    /// The project has no run yet, so no stage or strategy to name.
    #[error("project `{0}` has no runs yet: there is nothing to steer")]
    NoRuns(String),
    /// A stage or strategy the project's latest run does not have; the message names the
    /// ones it has.
    #[error("{0}")]
    UnknownName(String),
    /// The request itself is wrong: the message says what.
    #[error("{0}")]
    Invalid(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An action queued by [`trigger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The request's id in the store.
    pub id: i64,
    /// The action.
    pub action: ActionKind,
    /// Whether a run of the project is running to take it (else the next run does).
    pub running: bool,
}

/// Fails unless the store has heard of `project` (a run, or a healing mode set for it).
pub async fn known_project(store: &dyn Store, project: &str) -> Result<(), Refused> {
    let runs = store.runs(project, 1).await?;
    if runs.is_empty() && store.healing_mode(project).await?.updated_ms.is_none() {
        return Err(Refused::UnknownProject(project.to_owned()));
    }
    Ok(())
}

/// The project's latest run: what names a request may use.
pub async fn latest_run(store: &dyn Store, project: &str) -> Result<RunRow, Refused> {
    known_project(store, project).await?;
    store
        .runs(project, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Refused::NoRuns(project.to_owned()))
}

/// Refuses a `what` named `name` that the run does not have, naming the ones it has.
fn refuse_unknown(what: &str, name: &str, has: &[String], run: &str) -> Result<(), Refused> {
    if has.iter().any(|h| h == name) {
        return Ok(());
    }
    let known = if has.is_empty() {
        "none".to_owned()
    } else {
        has.join(", ")
    };
    Err(Refused::UnknownName(format!(
        "no {what} `{name}` in the project's latest run {run}{} (it has {known})",
        self_healing::config::did_you_mean(name, has.iter().map(String::as_str))
    )))
}

/// Queues `action` on `stage` for the project's running pipeline (or its next run).
pub async fn trigger(
    store: &dyn Store,
    project: &str,
    action: &str,
    stage: &str,
) -> Result<Queued, Refused> {
    let action: ActionKind = action
        .parse()
        .map_err(|e: self_healing::InvalidConfig| Refused::Invalid(e.to_string()))?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(Refused::Invalid(format!(
            "`{action}` cannot be triggered by hand (one of {})",
            ACTIONS.join(", ")
        )));
    }
    let latest = latest_run(store, project).await?;
    refuse_unknown("stage", stage, &latest.stages, &latest.id)?;
    let id = store.enqueue(project, action, stage).await?;
    Ok(Queued {
        id,
        action,
        running: latest.is_alive(crate::store::millis(std::time::SystemTime::now())),
    })
}

/// The largest whole number every JSON reader keeps exactly (2^53 - 1): the bound of a
/// cooldown (in milliseconds) and of a priority either way, so the API and the dashboard show
/// what is stored.
pub const JSON_SAFE: i64 = (1 << 53) - 1;

/// Overrides a strategy's settings for the project; running pipelines apply it within
/// [`POLL_INTERVAL`].
pub async fn configure(
    store: &dyn Store,
    project: &str,
    strategy: &str,
    changes: &StrategyOverride,
) -> Result<(), Refused> {
    if changes.is_empty() {
        return Err(Refused::Invalid(
            "nothing to change: give max attempts, cooldown, priority, enabled or mode".into(),
        ));
    }
    if changes.max_attempts == Some(0) {
        return Err(Refused::Invalid("max attempts must be at least 1".into()));
    }
    if changes
        .cooldown
        .is_some_and(|c| c.as_millis() > JSON_SAFE as u128)
    {
        return Err(Refused::Invalid(format!(
            "cooldown must be at most {JSON_SAFE} ms (about 285,616 years)"
        )));
    }
    if changes
        .priority
        .is_some_and(|p| !(-JSON_SAFE..=JSON_SAFE).contains(&p))
    {
        return Err(Refused::Invalid(format!(
            "priority must be within ±{JSON_SAFE}"
        )));
    }
    let latest = latest_run(store, project).await?;
    refuse_unknown("strategy", strategy, &latest.strategies, &latest.id)?;
    store.set_override(project, strategy, changes).await?;
    Ok(())
}
