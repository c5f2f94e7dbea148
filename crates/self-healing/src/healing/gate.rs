//! The gate every matched strategy passes before it may act: its cooldown on the stage, then
//! the healer's global budget. A pure rule over instants, tested without I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The global healing budget: at most `max_actions` actions per sliding `window`, across all
/// strategies. It stops healing storms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The most actions allowed in any `window`; at least 1.
    pub max_actions: u32,
    /// The length of the sliding window.
    pub window: Duration,
}

/// What the gate says of one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It may act (or record what it would have done); its cooldown started and it spent one
    /// action of the budget.
    Admitted,
    /// The strategy acted on this stage less than its cooldown ago.
    CoolingDown { remaining: Duration },
    /// The budget is spent. `first` is true for the first refusal of this exhaustion, so one
    /// alert goes out per exhaustion, not per refused action.
    OverBudget { first: bool },
}

/// Cooldowns per (strategy, stage) and the budget's spending.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    budget: Option<Budget>,
    cooldowns: HashMap<(Arc<str>, Arc<str>), Instant>,
    spent: VecDeque<Instant>,
    alerted: bool,
}

impl Gate {
    pub(crate) fn new(budget: Option<Budget>) -> Self {
        Gate {
            budget,
            ..Gate::default()
        }
    }

    pub(crate) fn budget(&self) -> Option<Budget> {
        self.budget
    }

    /// Cooldown first, then the budget. Admitting starts the cooldown and spends the budget.
    pub(crate) fn admit(
        &mut self,
        strategy: &Arc<str>,
        stage: &Arc<str>,
        cooldown: Duration,
        now: Instant,
    ) -> Admission {
        let key = (Arc::clone(strategy), Arc::clone(stage));
        if let Some(until) = self.cooldowns.get(&key)
            && now < *until
        {
            return Admission::CoolingDown {
                remaining: *until - now,
            };
        }
        if let Some(budget) = self.budget {
            while self
                .spent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= budget.window)
            {
                self.spent.pop_front();
            }
            if self.spent.len() >= budget.max_actions as usize {
                let first = !std::mem::replace(&mut self.alerted, true);
                return Admission::OverBudget { first };
            }
            self.spent.push_back(now);
            self.alerted = false;
        }
        if cooldown.is_zero() {
            self.cooldowns.remove(&key);
        } else {
            self.cooldowns.insert(key, now + cooldown);
        }
        Admission::Admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (Arc<str>, Arc<str>, Arc<str>) {
        ("retry".into(), "load".into(), "save".into())
    }

    #[test]
    fn a_cooldown_holds_per_strategy_and_stage_and_ends_exactly() {
        let mut gate = Gate::new(None);
        let (retry, load, save) = names();
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(60);
        assert_eq!(gate.admit(&retry, &load, cooldown, t0), Admission::Admitted);
        assert_eq!(
            gate.admit(&retry, &load, cooldown, t0 + Duration::from_secs(59)),
            Admission::CoolingDown {
                remaining: Duration::from_secs(1)
            }
        );
        assert_eq!(
            gate.admit(&retry, &save, cooldown, t0),
            Admission::Admitted,
            "another stage has its own cooldown"
        );
        assert_eq!(
            gate.admit(&retry, &load, cooldown, t0 + cooldown),
            Admission::Admitted
        );
    }

    #[test]
    fn no_cooldown_admits_every_time() {
        let mut gate = Gate::new(None);
        let (retry, load, _) = names();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                gate.admit(&retry, &load, Duration::ZERO, t0),
                Admission::Admitted
            );
        }
    }

    #[test]
    fn the_budget_slides_and_alerts_once_per_exhaustion() {
        let window = Duration::from_secs(600);
        let mut gate = Gate::new(Some(Budget {
            max_actions: 2,
            window,
        }));
        let (retry, load, _) = names();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(0)),
            Admission::Admitted
        );
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(100)),
            Admission::Admitted
        );
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(200)),
            Admission::OverBudget { first: true }
        );
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(300)),
            Admission::OverBudget { first: false }
        );
        // The first action leaves the window at 600 s: one more fits, then it is spent again
        // and a new exhaustion alerts again.
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(600)),
            Admission::Admitted
        );
        assert_eq!(
            gate.admit(&retry, &load, Duration::ZERO, at(601)),
            Admission::OverBudget { first: true }
        );
    }

    #[test]
    fn a_refusal_by_cooldown_spends_no_budget() {
        let mut gate = Gate::new(Some(Budget {
            max_actions: 1,
            window: Duration::from_secs(60),
        }));
        let (retry, load, save) = names();
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(30);
        assert_eq!(gate.admit(&retry, &load, cooldown, t0), Admission::Admitted);
        assert!(matches!(
            gate.admit(&retry, &load, cooldown, t0),
            Admission::CoolingDown { .. }
        ));
        assert_eq!(
            gate.admit(&retry, &save, cooldown, t0),
            Admission::OverBudget { first: true }
        );
    }
}
