//! A concurrency limit that can change while work runs under it: what the `scale` action acts on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::error::InvalidConfig;

/// A live concurrency bound. Raising it lets waiting work start at once; lowering it takes
/// effect as running work finishes (nothing running is interrupted). Cheap to clone; clones
/// share one limit.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use self_healing::resilience::ConcurrencyLimit;
///
/// let limit = ConcurrencyLimit::new(2).unwrap();
/// let a = limit.acquire().await;
/// let _b = limit.acquire().await;
/// assert!(limit.try_acquire().is_none());
/// limit.set_limit(3).unwrap();
/// let _c = limit.try_acquire().expect("raised to 3");
/// limit.set_limit(1).unwrap();
/// drop(a); // returned permits are retired until only 1 is out
/// assert!(limit.try_acquire().is_none());
/// assert_eq!(limit.in_flight(), 2);
/// # });
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimit {
    inner: Arc<Inner>,
}

/// A counter and a wake-up rather than a semaphore: a live limit then needs no debt of
/// permits to retire, and taking and returning room is one atomic operation each way (tokio's
/// semaphore takes a mutex on every release). Waiters are woken in order but a newcomer may take
/// freed room first; a pipeline's workers each hold a place for a whole unit, and wait here only
/// when the limit was cut, so nothing waits unfairly there.
struct Inner {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Acquirers waiting for room, so a release with nobody waiting skips the wake-up.
    waiting: AtomicUsize,
    room: Notify,
    /// Woken when the limit goes up, for those that add work as it does.
    raised: Notify,
}

/// Leave to run one piece of work; returned on drop.
pub struct ConcurrencyPermit {
    inner: Arc<Inner>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        // SeqCst here and in `acquire`: either the waiter's check sees this room, or this load
        // sees the waiter (which registered for the wake-up before checking).
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.inner.waiting.load(Ordering::SeqCst) > 0 {
            self.inner.room.notify_one();
        }
    }
}

impl std::fmt::Debug for ConcurrencyPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyPermit")
            .field("limit", &self.inner.limit.load(Ordering::Acquire))
            .field("in_flight", &self.inner.in_flight.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Counts one waiting acquirer for as long as it lives, cancellation included.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConcurrencyLimit {
    /// A limit of `limit` pieces of work at once; it must be at least 1.
    pub fn new(limit: usize) -> Result<Self, InvalidConfig> {
        check(limit)?;
        Ok(ConcurrencyLimit {
            inner: Arc::new(Inner {
                limit: AtomicUsize::new(limit),
                in_flight: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                room: Notify::new(),
                raised: Notify::new(),
            }),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Work running under the limit now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Changes the limit and returns the previous one.
    pub fn set_limit(&self, new: usize) -> Result<usize, InvalidConfig> {
        check(new)?;
        let old = self.inner.limit.swap(new, Ordering::AcqRel);
        if new > old {
            self.inner.room.notify_waiters();
            self.inner.raised.notify_waiters();
        }
        Ok(old)
    }

    /// Waits until the limit is above `n`: for a pool that starts a worker per place under
    /// the limit and must hear when there are more places.
    pub async fn above(&self, n: usize) {
        loop {
            let raised = self.inner.raised.notified();
            tokio::pin!(raised);
            raised.as_mut().enable();
            if self.limit() > n {
                return;
            }
            raised.await;
        }
    }

    /// Waits for room under the limit.
    pub async fn acquire(&self) -> ConcurrencyPermit {
        if let Some(permit) = self.try_acquire() {
            return permit;
        }
        let _waiting = Waiting::new(&self.inner.waiting);
        loop {
            // Registered before checking again, so room freed in between is not missed.
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            room.await;
        }
    }

    /// Room under the limit now, or `None` when the limit is reached.
    pub fn try_acquire(&self) -> Option<ConcurrencyPermit> {
        let inner = &*self.inner;
        let limit = inner.limit.load(Ordering::Acquire);
        inner
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(ConcurrencyPermit {
            inner: Arc::clone(&self.inner),
        })
    }
}

fn check(limit: usize) -> Result<(), InvalidConfig> {
    if limit == 0 {
        return Err(InvalidConfig::new("concurrency", "must be at least 1"));
    }
    if limit > u32::MAX as usize {
        return Err(InvalidConfig::new(
            "concurrency",
            format!("{limit} is too large"),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(limit: &ConcurrencyLimit, n: usize) -> Vec<ConcurrencyPermit> {
        (0..n).map(|_| limit.try_acquire().expect("room")).collect()
    }

    #[test]
    fn lowering_below_in_flight_retires_returned_permits() {
        let limit = ConcurrencyLimit::new(4).unwrap();
        let mut out = take(&limit, 4);
        assert_eq!(limit.set_limit(2).unwrap(), 4);
        out.pop();
        assert!(limit.try_acquire().is_none(), "3 out, limit 2");
        out.pop();
        assert!(limit.try_acquire().is_none(), "2 out, limit 2");
        out.pop();
        let _again = limit.try_acquire().expect("1 out, limit 2");
        assert!(limit.try_acquire().is_none());
    }

    #[test]
    fn raising_and_lowering_while_work_is_out() {
        let limit = ConcurrencyLimit::new(4).unwrap();
        let out = take(&limit, 4);
        limit.set_limit(1).unwrap();
        limit.set_limit(3).unwrap();
        drop(out);
        let held = take(&limit, 3);
        assert!(limit.try_acquire().is_none());
        assert_eq!(held.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_when_room_is_freed_or_added() {
        let limit = ConcurrencyLimit::new(1).unwrap();
        let first = limit.acquire().await;
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.acquire().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        drop(first);
        limit.set_limit(2).unwrap();
        let mut held = Vec::new();
        for waiter in waiters {
            held.push(waiter.await.unwrap());
        }
        assert_eq!(limit.in_flight(), 2);
    }

    #[test]
    fn zero_is_rejected() {
        assert_eq!(ConcurrencyLimit::new(0).unwrap_err().field(), "concurrency");
        let limit = ConcurrencyLimit::new(1).unwrap();
        assert!(limit.set_limit(0).is_err());
        assert_eq!(limit.limit(), 1);
    }
}
