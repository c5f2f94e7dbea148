//! `retry`: run the failed work again after a backoff.

use std::num::NonZeroU32;

use super::{Action, Applied, DecisiveAction, Effect, Subject};
use crate::BoxFuture;
use crate::error::InvalidConfig;
use crate::event::ActionKind;
use crate::pipeline::{Failure, Remedy};
use crate::resilience::{RetryBudget, RetryPolicy, RetryPolicyConfig};

/// Settings of `retry`: its own policy, or (`None`) the failing stage's: the stage's own retry
/// policy, else the healer's global `retryPolicy`.
/// `maxAttempts` counts every attempt of the work, the first included. When they are spent the
/// error goes round again as exhausted, so a rollback or notify strategy can take over.
///
/// With a [`budget`](Self::budget), its retries also wait, if they must, until they fit in the
/// budget's share of the first attempts of the stages it covers.
#[derive(Debug, Clone, Default)]
pub struct RetryAction {
    policy: Option<RetryPolicy>,
    budget: Option<RetryBudget>,
}

impl RetryAction {
    /// Retries by the failing stage's policy: its own, else the healer's global `retryPolicy`.
    pub fn global() -> Self {
        RetryAction::default()
    }

    /// Retries by `policy` instead of the healer's global one.
    pub fn with_policy(policy: RetryPolicy) -> Self {
        RetryAction {
            policy: Some(policy),
            budget: None,
        }
    }

    /// Limits this strategy's retries with `budget` (besides the healer's global one).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// From a file's `config`: a policy of its own when any key is given (unset keys take the
    /// defaults), else the failing stage's.
    pub fn from_config(config: &RetryPolicyConfig) -> Result<Self, InvalidConfig> {
        let policy = RetryPolicyConfig {
            budget: None,
            ..config.clone()
        };
        let action = if policy == RetryPolicyConfig::default() {
            RetryAction::global()
        } else {
            RetryAction::with_policy(policy.build(&RetryPolicy::default())?)
        };
        Ok(match config.budget {
            Some(settings) => {
                action.budget(RetryBudget::new(settings).map_err(|e| e.within("budget"))?)
            }
            None => action,
        })
    }

    /// Its own policy, if it has one.
    pub fn policy(&self) -> Option<&RetryPolicy> {
        self.policy.as_ref()
    }
}

impl From<RetryAction> for Action {
    fn from(action: RetryAction) -> Self {
        Action::Decisive(std::sync::Arc::new(action))
    }
}

impl DecisiveAction for RetryAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Retry
    }

    fn retry_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    fn on_failure<'a>(
        &'a self,
        subject: &'a Subject<'a>,
        failure: &'a Failure<'a>,
    ) -> BoxFuture<'a, Applied> {
        let policy = self.policy.as_ref().unwrap_or(failure.retry_policy);
        let applied = if failure.attempt >= policy.max_attempts() {
            Applied::new(
                Effect::Exhausted,
                format!(
                    "{} after {} attempt(s)",
                    crate::event::RETRIES_EXHAUSTED,
                    failure.attempt
                ),
            )
        } else if !policy.is_retryable(failure.error) {
            Applied::failed("the error is not retryable by the policy")
        } else {
            let backoff = failure.retry_delay(policy);
            // The budgets' places are taken now, no earlier than the backoff (and the second
            // no earlier than the first's), so retries decided together spread out.
            let after = [self.budget.as_ref(), subject.retry_budget]
                .into_iter()
                .flatten()
                .fold(backoff, |at, budget| budget.reserve(at));
            let mut detail = format!(
                "attempt {} of {} in {after:.0?}",
                failure.attempt + 1,
                policy.max_attempts()
            );
            if after > backoff {
                detail.push_str(&format!(" (retry budget; backoff {backoff:.0?})"));
                Applied::remedy(Remedy::Retry { after }, detail).held_by_budget(after - backoff)
            } else {
                Applied::remedy(Remedy::Retry { after }, detail)
            }
        };
        Box::pin(std::future::ready(applied))
    }

    fn on_stage<'a>(&'a self, _: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        Box::pin(std::future::ready(Applied::failed(
            "no failed work to retry",
        )))
    }

    fn needs_fresh_failure(&self) -> bool {
        true
    }

    fn with_max_attempts(
        &self,
        attempts: u32,
        global: &RetryPolicy,
    ) -> Result<Action, InvalidConfig> {
        let attempts = NonZeroU32::new(attempts)
            .ok_or_else(|| InvalidConfig::new("maxAttempts", "must be at least 1"))?;
        let base = self.policy.clone().unwrap_or_else(|| global.clone());
        Ok(RetryAction {
            policy: Some(base.with_max_attempts(attempts)),
            budget: self.budget.clone(),
        }
        .into())
    }
}
