//! The journal writer: group commit of a run's events into the store.
//!
//! The writer takes every event the bus queues for it, and writes all that arrived since its
//! last commit as one transaction. While a commit is under way the next batch builds up, so the
//! cost of a commit is shared by however many events came in meanwhile, with no timer adding
//! latency. Events are handed on (to the progress printer) only once committed: nothing is shown
//! as done that a crash could lose.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self_healing::event::{Event, EventBus, EventKind, Subscription};

use crate::secrets::Secrets;
use crate::store::Store;
use crate::store::projection::journaled;

/// `event` with every secret masked in every string it carries (errors, details, items,
/// codes, descriptions): what the store keeps and what progress, `--json-events` and the API
/// show. The bulk of a run (attempt starts, attempts' and items' successes) carries only its
/// stage and item, looked at directly; other events go through their JSON form.
fn masked(event: Arc<Event>, secrets: &Secrets) -> Arc<Event> {
    if secrets.is_empty() {
        return event;
    }
    let place = match &event.kind {
        EventKind::ItemSucceeded { stage, item, .. }
        | EventKind::AttemptStarted {
            stage,
            item: Some(item),
            ..
        }
        | EventKind::AttemptSucceeded {
            stage,
            item: Some(item),
            ..
        } => Some((stage, item)),
        _ => None,
    };
    if let Some((stage, item)) = place
        && !secrets.appear_in(stage)
        && !secrets.appear_in(item)
    {
        return event;
    }
    let clean = secrets.mask_value((*event).clone());
    if clean == *event {
        event
    } else {
        Arc::new(clean)
    }
}

/// Most events in one transaction.
const MAX_BATCH: usize = 4096;

/// Events the journal may fall behind by before the run starts no new item: about 10 MB, and
/// a few transactions' worth, so the writer always has a full batch waiting.
pub const MAX_BACKLOG: usize = 65_536;

/// The journal's subscription to a run's bus, durable and pacing with [`MAX_BACKLOG`]: the
/// events the store keeps, which are also all a progress display shows, or every event when
/// `everything` (`--json-events` prints them all). The starts and successes of attempts that
/// an item's outcome stands for are then never queued: two of an item's three events.
pub fn subscribe(bus: &EventBus, everything: bool) -> Subscription {
    let wants: fn(&EventKind) -> bool = if everything { |_| true } else { journaled };
    bus.subscribe_durable(wants, MAX_BACKLOG)
}

/// Journals `events` until `finish` is cancelled and all that was published before is written
/// (a session finishes it after the run and its last alert deliveries). Committed events go to
/// the returned receiver, with the values of `secrets` masked in their text (errors, details,
/// descriptions), as they are in the store. A store failure cancels the run through `stop` and
/// is returned. Subscribe with [`subscribe`]: a durable subscription with [`MAX_BACKLOG`], so a
/// run never outpaces its journal by more than that, and each batch is acknowledged once
/// committed, so decisions wait for their record.
pub fn spawn(
    store: Arc<dyn Store>,
    project: Arc<str>,
    mut events: Subscription,
    secrets: Secrets,
    stop: CancellationToken,
    finish: CancellationToken,
) -> (
    tokio::task::JoinHandle<Result<(), String>>,
    mpsc::UnboundedReceiver<Arc<Event>>,
) {
    let (committed, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        loop {
            let first = tokio::select! {
                biased;
                first = events.recv() => first,
                () = finish.cancelled() => events.try_recv(),
            };
            let Some(first) = first else { break };
            batch.push(masked(first, &secrets));
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Some(event) => batch.push(masked(event, &secrets)),
                    None => break,
                }
            }
            if let Err(error) = store.append(&project, &batch).await {
                stop.cancel();
                return Err(format!("cannot journal the run, stopping it: {error}"));
            }
            if let Some(last) = batch.last() {
                events.acknowledge(last.seq);
            }
            for event in batch.drain(..) {
                let _ = committed.send(event);
            }
        }
        Ok(())
    });
    (task, receiver)
}
