//! Manual triggers: an operator's action on a running stage (`healing trigger`), applied at once
//! whatever the healing mode and recorded like a strategy's decision, under [`MANUAL`].

use std::sync::Arc;

use tokio::time::Instant;

use super::AutoHealer;
use super::announce;
use crate::event::{ActionKind, HealingRecord, RunId, TriggerKind, TriggerMatch};
use crate::healing::actions::{
    Action, Applied, CircuitBreakAction, Effect, FailoverAction, RestartAction, RollbackAction,
    Subject,
};

/// The strategy name operators' actions are recorded under.
pub const MANUAL: &str = "manual";

impl AutoHealer {
    /// An operator's action on a stage of a run this healer heals (`healing trigger`): restart,
    /// rollback, failover or circuit-break, applied at once whatever the healing mode (manual
    /// mode leaves the decisions to people), and recorded under the strategy
    /// [`MANUAL`](MANUAL). An action that cannot apply (no such run or stage, the stage not
    /// running) is recorded `failed` with the reason.
    pub async fn trigger(
        &self,
        run: &RunId,
        stage: &str,
        action: ActionKind,
        reason: &str,
    ) -> HealingRecord {
        let scope = self.scope(run);
        let control = scope.as_ref().and_then(|s| s.control(stage));
        let chosen: Result<Action, String> = match (action, control) {
            (ActionKind::Restart, _) => Ok(RestartAction::default().into()),
            (ActionKind::Rollback, _) => Ok(RollbackAction.into()),
            (ActionKind::Failover, _) => Ok(FailoverAction.into()),
            (ActionKind::CircuitBreak, Some(control)) => {
                Ok(CircuitBreakAction::like(&control.breaker().settings()).into())
            }
            (ActionKind::CircuitBreak, None) => {
                Ok(CircuitBreakAction::like(&self.inner.breaker.unwrap_or_default()).into())
            }
            (other, _) => Err(format!(
                "not applied: `{other}` cannot be triggered by hand (restart, rollback, failover or circuit-break can)"
            )),
        };
        let strategy: Arc<str> = MANUAL.into();
        let stage: Arc<str> = stage.into();
        let trigger = TriggerMatch {
            kind: TriggerKind::Manual,
            index: 0,
            observed: None,
            description: reason.to_owned(),
        };
        let started = Instant::now();
        let applied = match (&scope, control, chosen) {
            (None, _, _) => Applied::failed(format!("not applied: run `{run}` is not running")),
            (Some(scope), None, _) => Applied::failed(format!(
                "not applied: the pipeline has no stage `{stage}` (it has {})",
                scope
                    .controls
                    .iter()
                    .map(|c| c.stage())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (_, _, Err(detail)) => Applied::failed(detail),
            (Some(scope), Some(_), Ok(action)) => {
                let subject = Subject {
                    scope: Some(scope),
                    project: &scope.pipeline,
                    stage: &stage,
                    item: None,
                    strategy: &strategy,
                    trigger: &trigger,
                    reason,
                    at: scope.bus.clock().wall(),
                    retry_policy: &self.inner.retry,
                    retry_budget: self.inner.retry_budget.as_ref(),
                    alerts: &self.inner.alerts,
                    manual: !self.is_enabled(),
                };
                let applied = match &action {
                    Action::Decisive(action) => action.on_stage(&subject).await,
                    Action::Side(action) => action.apply(&subject).await,
                };
                announce(&subject, action.kind(), &applied);
                applied
            }
        };
        let request = match (&applied.effect, control) {
            (Effect::Requested(request), Some(control)) => {
                Some((Arc::clone(control), request.clone()))
            }
            _ => None,
        };
        let record = HealingRecord::new(
            self.now_wall(scope.as_ref()),
            strategy,
            trigger,
            action,
            applied.outcome(),
            applied.detail,
        )
        .on(Some(run.clone()), stage, None)
        .took(started.elapsed());
        self.flush(vec![record.clone()], scope.as_ref());
        if let Some((control, request)) = request {
            control.request(request);
        }
        record
    }
}
