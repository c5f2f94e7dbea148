//! Shared pieces of the benchmarks.

/// Peak resident set size of this process in bytes (Linux: `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `migrationpilot` binary built beside the running benchmark; `build` is the command that
/// builds it, said when it is missing.
pub fn migrationpilot_binary(build: &str) -> std::path::PathBuf {
    let binary = std::env::current_exe()
        .expect("this binary's path")
        .with_file_name("migrationpilot");
    assert!(binary.exists(), "build it first: {build}");
    binary
}

/// Where some measurements lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle one; of an even count, the upper of the two.
    pub median: f64,
    /// The lowest.
    pub low: f64,
    /// The highest.
    pub high: f64,
}

impl Spread {
    /// The spread of `values`, which must not be empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        assert!(!values.is_empty(), "the spread of no measurements");
        values.sort_by(f64::total_cmp);
        Spread {
            median: values[values.len() / 2],
            low: values[0],
            high: values[values.len() - 1],
        }
    }
}
