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
