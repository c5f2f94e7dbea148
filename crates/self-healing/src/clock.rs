//! Time. Every timer and every measured duration in this crate goes through tokio's clock, so
//! a test on paused time (`#[tokio::test(start_paused = true)]`) controls all of it.
//!
//! Timestamps that leave the process (events, journal rows) need wall-clock time. [`Clock`]
//! gives both: [`TokioClock`] anchors the wall clock once and advances it with tokio's clock, so
//! under paused time the timestamps advance exactly as far as the test advanced time.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

/// The source of time for a pipeline. One required method; swap it to replay or to test.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for measuring durations and scheduling.
    fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock time, for timestamps that are stored or shown.
    fn wall(&self) -> SystemTime;
}

/// Wall time anchored at creation and advanced by tokio's clock.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use self_healing::clock::{Clock, TokioClock};
/// use self_healing::{SelfHealingPipeline, Stage};
///
/// // Deterministic event timestamps for a test or a replay.
/// let clock = TokioClock::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// assert!(clock.wall() >= SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let pipeline = SelfHealingPipeline::builder()
///     .clock(Arc::new(clock))
///     .stage(Stage::new("only", |_: self_healing::StageContext<()>| async { Ok(()) }))
///     .build()
///     .unwrap();
/// # let _ = pipeline;
/// ```
#[derive(Debug, Clone)]
pub struct TokioClock {
    anchor_wall: SystemTime,
    anchor_instant: Instant,
}

impl TokioClock {
    /// A clock whose wall time starts at the current system time.
    pub fn new() -> Self {
        TokioClock {
            anchor_wall: SystemTime::now(),
            anchor_instant: Instant::now(),
        }
    }

    /// A clock whose wall time starts at `wall`: deterministic timestamps for tests.
    pub fn starting_at(wall: SystemTime) -> Self {
        TokioClock {
            anchor_wall: wall,
            anchor_instant: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn wall(&self) -> SystemTime {
        self.anchor_wall + Instant::now().saturating_duration_since(self.anchor_instant)
    }
}

/// Milliseconds since the Unix epoch: how times are written to the wire and to the journal.
/// Times before the epoch count as 0.
pub fn unix_millis(at: SystemTime) -> u64 {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

pub(crate) fn default_clock() -> Arc<dyn Clock> {
    Arc::new(TokioClock::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_paused_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = TokioClock::starting_at(start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.wall(), start + Duration::from_secs(90));
    }
}
