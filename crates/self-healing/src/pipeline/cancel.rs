//! Cancellation around the executor's waits: a wait that a token ends, and helper tasks that
//! end with the run or pass that started them.

use std::pin::{Pin, pin};
use std::task::Poll;

use tokio_util::sync::CancellationToken;

/// `work`'s output, or `None` when `token` is cancelled first (a cancellation and work ready at
/// once: the cancellation). `work` comes pinned where it was made, so that a large future is
/// not moved into this one.
///
/// The token is asked once before `work` is first polled, and its wake-up is registered only if
/// `work` is not done on that poll. Most work is (a unit at hand, a throttle and a breaker that
/// let the call through, a handler that returns at once), and a registration costs a lock to
/// make and one to undo, several times an item; work that waits pays one more lock, asking the
/// token again as it registers.
pub(super) async fn unless_cancelled<F: Future>(
    token: &CancellationToken,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    if token.is_cancelled() {
        return None;
    }
    let mut cancelled = pin!(token.cancelled());
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if armed && cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        if !armed {
            armed = true;
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// Cancels its token when dropped: ends a helper task of a run or a pass however that ends.
pub(super) struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Spawns `helper`, a task of a run or a pass, ended when the returned guard is dropped.
pub(super) fn spawn_until_dropped(
    helper: impl Future<Output = ()> + Send + 'static,
) -> CancelOnDrop {
    let done = CancellationToken::new();
    let guard = CancelOnDrop(done.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = done.cancelled() => {}
            _ = helper => {}
        }
    });
    guard
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Work that never finishes and counts its polls.
    fn waits_for_ever(polls: &AtomicUsize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|_| {
            polls.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        })
    }

    #[tokio::test]
    async fn work_is_not_started_once_the_token_is_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        let polls = AtomicUsize::new(0);
        let work = pin!(async {
            polls.fetch_add(1, Ordering::Relaxed);
            7
        });
        assert_eq!(unless_cancelled(&token, work).await, None);
        assert_eq!(polls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn work_ready_at_once_gives_its_output() {
        let token = CancellationToken::new();
        assert_eq!(unless_cancelled(&token, pin!(async { 7 })).await, Some(7));
    }

    #[tokio::test]
    async fn a_cancellation_ends_work_that_waits_without_polling_it_again() {
        let token = CancellationToken::new();
        let polls = AtomicUsize::new(0);
        let work = pin!(waits_for_ever(&polls));
        let mut waiting = pin!(unless_cancelled(&token, work));
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        token.cancel();
        assert_eq!(waiting.await, None);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_from_another_task_wakes_the_wait() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let polls = AtomicUsize::new(0);
        let waited = tokio::time::timeout(
            Duration::from_secs(60),
            unless_cancelled(&token, pin!(waits_for_ever(&polls))),
        )
        .await;
        assert_eq!(waited, Ok(None), "the cancellation woke the wait");
    }
}
