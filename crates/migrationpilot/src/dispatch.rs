//! The coordinating run's side of the work queue: each attempt of a stage's command becomes a
//! job that any worker (the run's own included) may take; the attempt's future waits for its
//! result, so the run's executor, healer, breaker and metrics see it as if it had run here.
//!
//! Jobs are queued in batches (every job asked for while the last insert was in flight goes in
//! the next one), and results are read back in batches when a worker says some finished
//! (`LISTEN/NOTIFY`) or, at the latest, every [`POLL`]. An attempt whose future is dropped (its
//! timeout, a restart, a cancelled run) cancels its job: the worker running it stops it at its
//! next lease renewal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use self_healing::{BoxFuture, StageContext, StageError};

use crate::build::{Attempt, Runner};
use crate::store::Store;
use crate::store::work::{JobResult, NewJob, POLL, Topic};

/// The code of an attempt that failed because its job could not be queued (the store
/// unreachable), not because its command failed: a strategy can tell them apart.
pub const CODE: &str = "WORK_QUEUE";

/// The most jobs queued by one statement.
const BATCH: usize = 500;

/// An attempt waiting to be queued, and where its job's id and result (or why it could not be
/// queued) go.
type Queuing = (
    NewJob,
    oneshot::Sender<Result<(i64, oneshot::Receiver<JobResult>), String>>,
);

/// Hands a run's attempts to the work queue and gives back their results.
pub struct Dispatcher {
    run: String,
    project: String,
    queuing: mpsc::UnboundedSender<Queuing>,
    waiting: Mutex<HashMap<i64, oneshot::Sender<JobResult>>>,
    /// Where the last attempt of each (stage, item) failed: its retry prefers that worker.
    failed_on: Mutex<HashMap<(String, Option<String>), String>>,
    cancelling: mpsc::UnboundedSender<i64>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("run", &self.run)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher for `run` of `project`, on `store`'s work queue (a store without one gets
    /// `None`). Its tasks end when it is dropped.
    pub fn start(store: &Arc<dyn Store>, run: &str, project: &str) -> Option<Arc<Self>> {
        store.work_queue()?;
        let (queuing, queue_rx) = mpsc::unbounded_channel();
        let (cancelling, cancel_rx) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(Dispatcher {
            run: run.to_owned(),
            project: project.to_owned(),
            queuing,
            waiting: Mutex::new(HashMap::new()),
            failed_on: Mutex::new(HashMap::new()),
            cancelling,
        });
        let weak = Arc::downgrade(&dispatcher);
        tokio::spawn(queue_jobs(Arc::clone(store), queue_rx, weak.clone()));
        tokio::spawn(cancel_jobs(Arc::clone(store), cancel_rx));
        tokio::spawn(collect_results(Arc::clone(store), weak));
        Some(dispatcher)
    }

    /// Queues the attempt and waits for a worker to run it. The attempt fails with the job's
    /// error, or with why it could not be queued.
    pub async fn dispatch(&self, attempt: Attempt<'_>) -> Result<JobResult, StageError> {
        let place = (attempt.stage.to_owned(), attempt.item.map(str::to_owned));
        let prefer = self.failed_on.lock().unwrap().get(&place).cloned();
        let job = NewJob {
            run: self.run.clone(),
            project: self.project.clone(),
            stage: attempt.stage.to_owned(),
            item: attempt.item.map(str::to_owned),
            key: attempt.key.map(str::to_owned),
            attempt: attempt.attempt,
            role: attempt.role,
            prefer,
        };
        let (queued, id) = oneshot::channel();
        let unqueued = || StageError::new("the run's work queue was closed").with_code(CODE);
        self.queuing.send((job, queued)).map_err(|_| unqueued())?;
        let (id, result) = match id.await {
            Ok(Ok(queued)) => queued,
            Ok(Err(why)) => {
                return Err(
                    StageError::new(format!("the job could not be queued: {why}")).with_code(CODE),
                );
            }
            Err(_) => return Err(unqueued()),
        };
        // Dropped before its result came (a timeout, a restart, a cancelled run): the job is
        // cancelled, and its worker stops it.
        let pending = Pending {
            id,
            dispatcher: self,
        };
        let result = result.await.map_err(|_| unqueued())?;
        std::mem::forget(pending);
        let mut failed_on = self.failed_on.lock().unwrap();
        if result.error.is_some() {
            failed_on.insert(place, result.worker.clone());
        } else {
            failed_on.remove(&place);
        }
        Ok(result)
    }
}

/// A worker runs the attempt; its metric lines and log reach the attempt as if it had run here.
impl Runner for Dispatcher {
    fn run<'a>(
        &'a self,
        attempt: Attempt<'a>,
        stage: &'a StageContext<()>,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let result = self.dispatch(attempt).await?;
            for (metric, value) in &result.metrics {
                stage.record(metric, *value);
            }
            stage.attach_output(result.output);
            result.error.map_or(Ok(()), Err)
        })
    }
}

/// A job whose result has not come yet; dropped, it is cancelled.
struct Pending<'d> {
    id: i64,
    dispatcher: &'d Dispatcher,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.dispatcher.waiting.lock().unwrap().remove(&self.id);
        let _ = self.dispatcher.cancelling.send(self.id);
    }
}

/// Queues jobs in batches until the dispatcher is gone. A job is waited for from the moment
/// it is queued, so no result can come before its waiter.
async fn queue_jobs(
    store: Arc<dyn Store>,
    mut requests: mpsc::UnboundedReceiver<Queuing>,
    dispatcher: Weak<Dispatcher>,
) {
    let mut batch = Vec::new();
    while requests.recv_many(&mut batch, BATCH).await > 0 {
        let Some(queue) = store.work_queue() else {
            return;
        };
        let (jobs, replies): (Vec<NewJob>, Vec<_>) = batch.drain(..).unzip();
        match queue.queue_jobs(&jobs).await {
            Ok(ids) => {
                let Some(dispatcher) = dispatcher.upgrade() else {
                    return;
                };
                for (id, reply) in ids.into_iter().zip(replies) {
                    let (done, result) = oneshot::channel();
                    dispatcher.waiting.lock().unwrap().insert(id, done);
                    // An attempt dropped while its job was being queued: the job is
                    // cancelled, as it would have been a moment later.
                    if reply.send(Ok((id, result))).is_err() {
                        dispatcher.waiting.lock().unwrap().remove(&id);
                        let _ = dispatcher.cancelling.send(id);
                    }
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
        }
    }
}

/// Cancels, in batches, the jobs whose attempts were dropped.
async fn cancel_jobs(store: Arc<dyn Store>, mut ids: mpsc::UnboundedReceiver<i64>) {
    let mut batch = Vec::new();
    while ids.recv_many(&mut batch, BATCH).await > 0 {
        if let Some(queue) = store.work_queue()
            && let Err(error) = queue.cancel_jobs(&batch).await
        {
            eprintln!("  ! jobs could not be cancelled: {error}");
        }
        batch.clear();
    }
}

/// Reads finished jobs' results back and hands each to its waiting attempt, when workers say
/// some finished or every [`POLL`], until the dispatcher is gone.
async fn collect_results(store: Arc<dyn Store>, dispatcher: Weak<Dispatcher>) {
    let Some(queue) = store.work_queue() else {
        return;
    };
    let mut finished = queue.notifications(Topic::Finished).await.ok();
    // Results that came before the subscription are looked for at once, then at each wake-up.
    let mut wait = false;
    loop {
        if wait {
            match &mut finished {
                Some(stream) => {
                    tokio::select! {
                        note = stream.next() => if note.is_none() {
                            finished = None;
                        },
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                None => {
                    tokio::time::sleep(POLL).await;
                    finished = queue.notifications(Topic::Finished).await.ok();
                }
            }
        }
        wait = true;
        let Some(dispatcher) = dispatcher.upgrade() else {
            return;
        };
        let ids: Vec<i64> = dispatcher.waiting.lock().unwrap().keys().copied().collect();
        match queue.job_results(&ids).await {
            Ok(results) => {
                let mut waiting = dispatcher.waiting.lock().unwrap();
                for (id, result) in results {
                    if let Some(waiter) = waiting.remove(&id) {
                        let _ = waiter.send(result);
                    }
                }
            }
            Err(error) => eprintln!("  ! job results could not be read: {error}"),
        }
    }
}
