//! A concurrency limit that can change while work runs under it: what the `scale` action acts on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

struct Inner {
    semaphore: Arc<Semaphore>,
    limit: Mutex<usize>,
    /// Permits to retire as they come back, after the limit was lowered below what was out.
    debt: AtomicUsize,
    in_flight: AtomicUsize,
}

/// Leave to run one piece of work; returned on drop.
pub struct ConcurrencyPermit {
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        let retire = self
            .inner
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if let Some(permit) = self.permit.take()
            && retire
        {
            permit.forget();
        }
    }
}

impl ConcurrencyLimit {
    pub fn new(limit: usize) -> Result<Self, InvalidConfig> {
        check(limit)?;
        Ok(ConcurrencyLimit {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(limit)),
                limit: Mutex::new(limit),
                debt: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
            }),
        })
    }

    pub fn limit(&self) -> usize {
        *self.inner.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Work running under the limit now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Changes the limit and returns the previous one.
    pub fn set_limit(&self, new: usize) -> Result<usize, InvalidConfig> {
        check(new)?;
        let inner = &*self.inner;
        let mut limit = inner.limit.lock().unwrap_or_else(|e| e.into_inner());
        let old = *limit;
        if new > old {
            let grow = new - old;
            let repaid = inner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d - d.min(grow))
                })
                .map_or(0, |d| d.min(grow));
            inner.semaphore.add_permits(grow - repaid);
        } else if new < old {
            let shrink = old - new;
            let forgotten = inner.semaphore.forget_permits(shrink);
            inner.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        *limit = new;
        Ok(old)
    }

    /// Waits for room under the limit.
    pub async fn acquire(&self) -> ConcurrencyPermit {
        let permit = Arc::clone(&self.inner.semaphore)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        self.wrap(permit)
    }

    pub fn try_acquire(&self) -> Option<ConcurrencyPermit> {
        let permit = Arc::clone(&self.inner.semaphore).try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> ConcurrencyPermit {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        ConcurrencyPermit {
            permit: Some(permit),
            inner: Arc::clone(&self.inner),
        }
    }
}

fn check(limit: usize) -> Result<(), InvalidConfig> {
    if limit == 0 {
        return Err(InvalidConfig::new("concurrency", "must be at least 1"));
    }
    if limit > Semaphore::MAX_PERMITS / 2 {
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
    fn raising_repays_debt_before_adding_room() {
        let limit = ConcurrencyLimit::new(4).unwrap();
        let out = take(&limit, 4);
        limit.set_limit(1).unwrap(); // debt of 3
        limit.set_limit(3).unwrap(); // debt of 1
        drop(out); // one retired, three back
        let held = take(&limit, 3);
        assert!(limit.try_acquire().is_none());
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn zero_is_rejected() {
        assert_eq!(ConcurrencyLimit::new(0).unwrap_err().field(), "concurrency");
        let limit = ConcurrencyLimit::new(1).unwrap();
        assert!(limit.set_limit(0).is_err());
        assert_eq!(limit.limit(), 1);
    }
}
