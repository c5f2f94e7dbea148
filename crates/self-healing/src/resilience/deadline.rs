//! A timeout that costs nothing when the work is done at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// Runs `work` until `at`: `None` if the deadline passed first. Like
/// [`tokio::time::timeout_at`], but the timer is made only if the work is not finished on its
/// first poll. Work that completes at once (a cache hit, a no-op, a failure found before any I/O)
/// then costs no timer at all; work that waits gets the same deadline it would have had. The
/// caller usually read the clock already to time the attempt, so it passes the deadline rather
/// than a duration.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use self_healing::resilience::deadline;
///
/// let at = Instant::now() + Duration::from_secs(1);
/// assert_eq!(deadline(at, async { 7 }).await, Some(7));
/// let slow = tokio::time::sleep(Duration::from_secs(5));
/// assert_eq!(deadline(at, slow).await, None);
/// assert_eq!(Instant::now(), at);
/// # });
/// ```
pub fn deadline<F: Future>(at: Instant, work: F) -> Deadline<F> {
    Deadline {
        work,
        timer: None,
        at,
    }
}

pin_project_lite::pin_project! {
    /// The future [`deadline`] returns.
    #[must_use = "futures do nothing unless polled"]
    pub struct Deadline<F> {
        #[pin]
        work: F,
        #[pin]
        timer: Option<Sleep>,
        at: Instant,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.work.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(*this.at)));
        }
        let timer = this.timer.as_pin_mut().expect("set above");
        timer.poll(cx).map(|()| None)
    }
}
