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

use self_healing::event::{Event, EventKind, Subscription};

use crate::store::Store;

/// Most events in one transaction.
const MAX_BATCH: usize = 4096;

/// Events the journal may fall behind by before the run starts no new item: about 10 MB, and
/// a few transactions' worth, so the writer always has a full batch waiting.
pub const MAX_BACKLOG: usize = 65_536;

/// Journals `events` until the run finishes. Committed events go to the returned receiver. A
/// store failure cancels the run through `stop` and is returned. Subscribe with
/// [`EventBus::subscribe_pacing`](self_healing::event::EventBus::subscribe_pacing) and
/// [`MAX_BACKLOG`] so a run never outpaces its journal by more than that.
pub fn spawn(
    store: Arc<dyn Store>,
    project: Arc<str>,
    mut events: Subscription,
    stop: CancellationToken,
) -> (
    tokio::task::JoinHandle<Result<(), String>>,
    mpsc::UnboundedReceiver<Arc<Event>>,
) {
    let (committed, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        while let Some(first) = events.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Some(event) => batch.push(event),
                    None => break,
                }
            }
            if let Err(error) = store.append(&project, &batch).await {
                stop.cancel();
                return Err(format!("cannot journal the run, stopping it: {error}"));
            }
            let finished = batch
                .iter()
                .any(|e| matches!(e.kind, EventKind::RunFinished { .. }));
            for event in batch.drain(..) {
                let _ = committed.send(event);
            }
            if finished {
                break;
            }
        }
        Ok(())
    });
    (task, receiver)
}
