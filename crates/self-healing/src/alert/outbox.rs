//! The outbox: every alert's state and every notification a channel owes, kept before anything
//! is delivered, so an undelivered alert survives a crash and goes out on the next start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Alert, AlertStatus};
use crate::BoxFuture;

/// One notification a channel owes: an alert (firing or resolved) for one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id in the outbox.
    pub id: i64,
    /// The channel's name.
    pub channel: String,
    /// The alert as it was when it was owed.
    pub alert: Alert,
    /// Delivery attempts so far (each a full retry of the channel).
    pub attempts: u32,
}

/// Tries after which a notification is given up (`dead`): a channel that refuses one alert
/// must not hold the others back forever.
pub const MAX_ATTEMPTS: u32 = 20;

/// Where alerts and the deliveries they owe are kept. The binary keeps them in its store; a
/// [`MemoryOutbox`] keeps them in memory.
pub trait Outbox: Send + Sync + 'static {
    /// Keeps `alert`'s state (firing or resolved, by fingerprint) and owes it to each of
    /// `channels`, in one transaction; the owed deliveries are `owner`'s until it takes,
    /// attempts or releases them (so no other process sends a group `owner` is gathering).
    fn enqueue<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Takes the deliveries owed that are `owner`'s, nobody's, or whose taker's `lease`
    /// expired (oldest first), for `owner` to deliver.
    fn take<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, String>>;

    /// The outcome of `owner` delivering `ids`: delivered (`error` is `None`, whoever holds
    /// them now), or still owed with the error (only if `owner` still holds them; given up
    /// after [`MAX_ATTEMPTS`]).
    fn attempted<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Gives up what `owner` holds and has not delivered, for the next process at once.
    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// `project`'s alerts that are firing, to resolve in a later process.
    fn firing<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<Alert>, String>>;
}

/// An outbox in memory: what a library user without a store gets.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    alerts: HashMap<String, Alert>,
    owed: Vec<Owed>,
    next: i64,
}

#[derive(Debug)]
struct Owed {
    delivery: Delivery,
    taken: Option<(String, SystemTime)>,
    delivered: bool,
    dead: bool,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        MemoryOutbox::default()
    }

    /// The deliveries still owed (not delivered nor given up, taken or not), oldest first.
    pub fn owed(&self) -> Vec<Delivery> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .owed
            .iter()
            .filter(|o| !o.delivered && !o.dead)
            .map(|o| o.delivery.clone())
            .collect()
    }

    /// The deliveries made, oldest first: channel and alert.
    pub fn delivered(&self) -> Vec<(String, Alert)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .owed
            .iter()
            .filter(|o| o.delivered)
            .map(|o| (o.delivery.channel.clone(), o.delivery.alert.clone()))
            .collect()
    }
}

impl Outbox for MemoryOutbox {
    fn enqueue<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        let now = SystemTime::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.alerts.insert(alert.fingerprint(), alert.clone());
        for channel in channels {
            state.next += 1;
            let id = state.next;
            state.owed.push(Owed {
                delivery: Delivery {
                    id,
                    channel: channel.clone(),
                    alert: alert.clone(),
                    attempts: 0,
                },
                taken: Some((owner.to_owned(), now)),
                delivered: false,
                dead: false,
            });
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn take<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, String>> {
        let now = SystemTime::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let taken = state
            .owed
            .iter_mut()
            .filter(|o| {
                !o.delivered
                    && !o.dead
                    && o.taken.as_ref().is_none_or(|(by, at)| {
                        by == owner || now.duration_since(*at).unwrap_or_default() >= lease
                    })
            })
            .map(|o| {
                o.taken = Some((owner.to_owned(), now));
                o.delivery.clone()
            })
            .collect();
        Box::pin(std::future::ready(Ok(taken)))
    }

    fn attempted<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for owed in state
            .owed
            .iter_mut()
            .filter(|o| ids.contains(&o.delivery.id))
        {
            let ours = owed.taken.as_ref().is_some_and(|(by, _)| by == owner);
            if owed.delivered || owed.dead || (error.is_some() && !ours) {
                continue;
            }
            owed.delivery.attempts += 1;
            owed.taken = None;
            owed.delivered = error.is_none();
            owed.dead = error.is_some() && owed.delivery.attempts >= MAX_ATTEMPTS;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for owed in state.owed.iter_mut() {
            if owed.taken.as_ref().is_some_and(|(by, _)| by == owner) {
                owed.taken = None;
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn firing<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<Alert>, String>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let firing = state
            .alerts
            .values()
            .filter(|a| &*a.project == project && a.status == AlertStatus::Firing)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(firing)))
    }
}
