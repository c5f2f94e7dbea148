//! The process's own resource use: `memoryUsage` (resident set size, bytes) and `cpuUsage`
//! (CPU time over wall time, percent, where 100 is one core fully busy).

use std::time::{Duration, Instant};

/// Resident set size of this process in bytes, where the platform tells it.
pub fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// User plus system CPU time this process has used.
pub fn cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a valid, writable rusage; getrusage only writes into it.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: getrusage returned 0, so it filled the struct.
        let usage = unsafe { usage.assume_init() };
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
        };
        Some(time(usage.ru_utime) + time(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Turns successive CPU-time readings into a percentage. CPU time is real time, so this
/// measures against the real clock even when tokio's is paused.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    last: Option<(Instant, Duration)>,
}

impl CpuMeter {
    pub(crate) fn sample(&mut self) -> Option<f64> {
        let now = (Instant::now(), cpu_time()?);
        let previous = self.last.replace(now)?;
        let wall = now.0.saturating_duration_since(previous.0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some(now.1.saturating_sub(previous.1).as_secs_f64() / wall * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn rss_and_cpu_are_read() {
        let rss = resident_bytes().unwrap();
        assert!(rss > 1 << 20, "rss {rss}");
        let mut meter = CpuMeter::default();
        assert!(
            meter.sample().is_none(),
            "the first reading has nothing to compare to"
        );
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let pct = meter.sample().unwrap();
        assert!(pct >= 0.0, "cpu {pct}");
    }
}
