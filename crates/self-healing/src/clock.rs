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

    /// The wall-clock time at `instant`, one this clock's [`instant`](Self::instant) gave a
    /// moment ago: lets a caller that has just read the time stamp events without reading it
    /// again. By default the wall-clock time now.
    fn wall_at(&self, instant: Instant) -> SystemTime {
        let _ = instant;
        self.wall()
    }
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
        self.wall_at(Instant::now())
    }

    fn wall_at(&self, instant: Instant) -> SystemTime {
        self.anchor_wall + instant.saturating_duration_since(self.anchor_instant)
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

/// `ms` milliseconds since the Unix epoch as an ISO 8601 / RFC 3339 time in UTC, to the second:
/// `2026-11-28T03:04:05Z`.
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A point in time as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    iso8601(i64::try_from(unix_millis(at)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_835_045_000), "2026-11-28T03:04:05Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wall_time_follows_paused_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = TokioClock::starting_at(start);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.wall(), start + Duration::from_secs(90));
    }
}
