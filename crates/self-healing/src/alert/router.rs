//! The routing rules as a pure state machine over fingerprints: what to send when an alert
//! fires or resolves. Time is passed in, so the rules are tested on paused time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Alert, AlertStatus};
use crate::error::Severity;

/// The routing rules (the seed's defaults: `groupWait` 10 s, `repeatInterval` 4 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Alerts that fire or resolve within this time of the first go out together, one message
    /// per channel.
    pub group_wait: Duration,
    /// A firing alert is sent again no more often than this while it keeps firing.
    pub repeat_interval: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            group_wait: Duration::from_secs(10),
            repeat_interval: Duration::from_secs(4 * 3600),
        }
    }
}

/// What the router decided about an alert firing or resolving.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Send this: a new, escalated or repeated alert, or a resolution (whose severity is the
    /// highest the fingerprint was sent at, so every channel that heard of it hears it ended).
    Send(Alert),
    /// The most severe alert of a fingerprint ended and a lesser one still fires: send the
    /// lesser one to the channels that take it, and a resolution to those that only took the
    /// more severe one.
    Lowered {
        /// The alert that still fires.
        alert: Alert,
        /// The severity it was sent at before.
        from: Severity,
    },
    /// Not sent: a more severe alert of the same fingerprint is firing.
    Inhibited,
    /// Not sent: it was sent less than `repeatInterval` ago.
    Held,
    /// Nothing to say (an alert resolved that never fired, or one still firing at a higher
    /// severity).
    Nothing,
}

/// One fingerprint: the alerts firing under it, by severity, and what was last sent.
#[derive(Debug, Clone, Default)]
struct Tracked {
    firing: BTreeMap<Severity, Alert>,
    sent: Option<(Severity, Instant)>,
    /// The highest severity it was sent at while firing.
    sent_max: Option<Severity>,
}

/// Applies [`Rules`] to alerts as they fire and resolve.
///
/// ```
/// use std::time::SystemTime;
/// use tokio::time::Instant;
/// use self_healing::Severity;
/// use self_healing::alert::{Alert, Notice, Router, Rules};
///
/// let mut router = Router::new(Rules::default());
/// let now = Instant::now();
/// let warning = Alert::firing(Severity::Warning, "p", "errorRate", "error rate high");
/// let critical = Alert::firing(Severity::Critical, "p", "errorRate", "error rate very high");
/// assert!(matches!(router.fire(warning.clone(), now), Notice::Send(_)));
/// assert!(matches!(router.fire(critical, now), Notice::Send(_)));      // escalates
/// assert_eq!(router.fire(warning, now), Notice::Inhibited);              // the critical fires
/// let fingerprint = "p/-/errorRate";
/// let lowered = router.resolve(fingerprint, Some(Severity::Critical), now, SystemTime::now());
/// assert!(matches!(lowered, Notice::Lowered { alert, from: Severity::Critical } if alert.severity == Severity::Warning));
/// let over = router.resolve(fingerprint, None, now, SystemTime::now());
/// // The resolution carries the highest severity sent: every channel that heard hears it ended.
/// assert!(matches!(over, Notice::Send(a) if a.is_resolved() && a.severity == Severity::Critical));
/// ```
#[derive(Debug, Clone)]
pub struct Router {
    rules: Rules,
    tracked: HashMap<String, Tracked>,
}

impl Router {
    /// A router with nothing firing.
    pub fn new(rules: Rules) -> Self {
        Router {
            rules,
            tracked: HashMap::new(),
        }
    }

    /// The rules it applies.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Takes back an alert that fired and was sent before (by an earlier process): it can
    /// resolve, and repeats count from `now`.
    pub fn restore(&mut self, alert: Alert, now: Instant) {
        let tracked = self.tracked.entry(alert.fingerprint()).or_default();
        tracked.sent = Some((alert.severity, now));
        tracked.sent_max = tracked.sent_max.max(Some(alert.severity));
        tracked.firing.insert(alert.severity, alert);
    }

    /// An alert fires (or fires again: its condition still holds).
    pub fn fire(&mut self, alert: Alert, now: Instant) -> Notice {
        let severity = alert.severity;
        let tracked = self.tracked.entry(alert.fingerprint()).or_default();
        // A repeat keeps when it started.
        let alert = match tracked.firing.get(&severity) {
            Some(earlier) => Alert {
                starts_at: earlier.starts_at,
                ..alert
            },
            None => alert,
        };
        tracked.firing.insert(severity, alert.clone());
        let top = tracked
            .firing
            .keys()
            .next_back()
            .copied()
            .unwrap_or(severity);
        if severity < top {
            return Notice::Inhibited;
        }
        match tracked.sent {
            Some((sent, at)) if sent == severity && now < at + self.rules.repeat_interval => {
                Notice::Held
            }
            _ => {
                tracked.sent = Some((severity, now));
                tracked.sent_max = tracked.sent_max.max(Some(severity));
                Notice::Send(alert)
            }
        }
    }

    /// The alert `fingerprint` ends at `severity` (with `None`, at every severity), at `at`.
    pub fn resolve(
        &mut self,
        fingerprint: &str,
        severity: Option<Severity>,
        now: Instant,
        at: SystemTime,
    ) -> Notice {
        let Some(tracked) = self.tracked.get_mut(fingerprint) else {
            return Notice::Nothing;
        };
        let top_before = tracked.firing.values().next_back().cloned();
        match severity {
            Some(severity) => {
                tracked.firing.remove(&severity);
            }
            None => tracked.firing.clear(),
        }
        let Some(top) = tracked.firing.values().next_back().cloned() else {
            let sent_max = tracked.sent_max;
            self.tracked.remove(fingerprint);
            return match (sent_max, top_before) {
                (Some(severity), Some(last)) => Notice::Send(Alert {
                    status: AlertStatus::Resolved,
                    severity,
                    ends_at: Some(at),
                    ..last
                }),
                _ => Notice::Nothing,
            };
        };
        // A more severe alert ended and a lesser one still fires: it is no longer inhibited.
        match tracked.sent {
            Some((sent, _)) if sent > top.severity => {
                tracked.sent = Some((top.severity, now));
                Notice::Lowered {
                    alert: top,
                    from: sent,
                }
            }
            _ => Notice::Nothing,
        }
    }

    /// The firing alerts, the most severe of each fingerprint.
    pub fn firing(&self) -> Vec<Alert> {
        self.tracked
            .values()
            .filter_map(|t| t.firing.values().next_back().cloned())
            .collect()
    }

    /// The fingerprints of the firing alerts that `pick` picks.
    pub fn fingerprints(&self, pick: impl Fn(&Alert) -> bool) -> Vec<String> {
        self.tracked
            .iter()
            .filter(|(_, t)| t.firing.values().next_back().is_some_and(&pick))
            .map(|(fingerprint, _)| fingerprint.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(severity: Severity) -> Alert {
        Alert::firing(severity, "p", "errorRate", "error rate").on_stage("load")
    }

    #[tokio::test(start_paused = true)]
    async fn a_firing_alert_repeats_no_more_often_than_the_repeat_interval() {
        let mut router = Router::new(Rules {
            group_wait: Duration::ZERO,
            repeat_interval: Duration::from_secs(60),
        });
        let start = Instant::now();
        assert!(matches!(
            router.fire(alert(Severity::Warning), start),
            Notice::Send(_)
        ));
        let later = start + Duration::from_secs(59);
        assert_eq!(router.fire(alert(Severity::Warning), later), Notice::Held);
        let Notice::Send(repeat) =
            router.fire(alert(Severity::Warning), start + Duration::from_secs(60))
        else {
            panic!("repeats after the interval")
        };
        assert_eq!(repeat.fingerprint(), "p/load/errorRate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolution_names_what_fired_and_only_what_was_sent_resolves() {
        let mut router = Router::new(Rules::default());
        let now = Instant::now();
        let at = SystemTime::now();
        assert_eq!(
            router.resolve("p/load/errorRate", None, now, at),
            Notice::Nothing
        );
        router.fire(alert(Severity::Critical), now);
        let Notice::Send(resolved) = router.resolve("p/load/errorRate", None, now, at) else {
            panic!("resolves")
        };
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.severity, Severity::Critical);
        assert_eq!(resolved.ends_at, Some(at));
        assert!(router.firing().is_empty());
        // An inhibited warning ends silently; the critical's end resolves the fingerprint.
        router.fire(alert(Severity::Critical), now);
        assert_eq!(
            router.fire(alert(Severity::Warning), now),
            Notice::Inhibited
        );
        assert_eq!(
            router.resolve("p/load/errorRate", Some(Severity::Warning), now, at),
            Notice::Nothing
        );
        assert!(matches!(
            router.resolve("p/load/errorRate", Some(Severity::Critical), now, at),
            Notice::Send(a) if a.is_resolved()
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_alert_resolves_and_does_not_repeat_at_once() {
        let mut router = Router::new(Rules::default());
        let now = Instant::now();
        router.restore(alert(Severity::Critical), now);
        assert_eq!(router.fire(alert(Severity::Critical), now), Notice::Held);
        assert_eq!(
            router
                .fingerprints(|a| a.stage.as_deref() == Some("load"))
                .len(),
            1
        );
        assert!(matches!(
            router.resolve("p/load/errorRate", None, now, SystemTime::now()),
            Notice::Send(a) if a.is_resolved()
        ));
    }
}
