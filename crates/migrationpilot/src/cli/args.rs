//! Arguments several subcommands take, defined once so that they read and parse alike
//! everywhere.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Args;

use migrationpilot::error::CliError;
use migrationpilot::serve;

/// `health`, `alerts` and `healing history` name their project and ask for JSON alike, so a
/// script passes the same flags to each.
#[derive(Args)]
pub(super) struct ProjectArgs {
    /// The project (a pipeline file's `project`).
    #[arg(long)]
    pub(super) project: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

/// The steering token: `MIGRATIONPILOT_TOKEN`, or a file (never a command-line value, which
/// other users could read in the process list).
#[derive(Args)]
pub(super) struct TokenArgs {
    /// A file whose first line is the token the steering endpoints ask for (else
    /// MIGRATIONPILOT_TOKEN); without one, steering over HTTP is refused.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    pub(super) fn read(&self) -> Result<Option<serve::Token>, CliError> {
        let from_env = TOKEN_FROM_ENV
            .get()
            .cloned()
            .flatten()
            .filter(|t| !t.is_empty());
        serve::token(from_env, self.token_file.as_deref())
    }
}

/// The steering token from the environment, taken out of it at start.
static TOKEN_FROM_ENV: OnceLock<Option<String>> = OnceLock::new();

/// Takes the steering token out of the environment: the token is this process's alone, so no
/// stage command, check or hook inherits it (a stage that printed its environment would show
/// it in its logs).
///
/// # Safety
///
/// No other thread may read or write the environment meanwhile: call it before any starts.
pub(crate) unsafe fn take_token_from_env() {
    TOKEN_FROM_ENV.get_or_init(|| std::env::var(TOKEN_VARIABLE).ok());
    // SAFETY: the caller guarantees that no other thread uses the environment.
    unsafe {
        scrub_initial_environment(TOKEN_VARIABLE);
        std::env::remove_var(TOKEN_VARIABLE);
    }
}

/// The variable the steering token may come in.
const TOKEN_VARIABLE: &str = "MIGRATIONPILOT_TOKEN";

/// Overwrites `name`'s value with `*` in the environment block this process started with,
/// which is what the kernel shows as `/proc/PID/environ`: removing the variable alone leaves
/// it there for a stage to read from its parent.
///
/// # Safety
///
/// No other thread may read or write the environment meanwhile, and nothing may have changed
/// it yet: the entries `environ` points at are then still the block the process started with.
#[cfg(target_os = "linux")]
unsafe fn scrub_initial_environment(name: &str) {
    unsafe extern "C" {
        static mut environ: *mut *mut std::ffi::c_char;
    }
    let prefix = format!("{name}=");
    // SAFETY: `environ` is the C library's NUL-terminated array of NUL-terminated strings;
    // the caller guarantees no thread changes it while it is read and written here. Each value
    // is overwritten in place, within its own length.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if text.starts_with(prefix.as_bytes()) {
                let value = (*entry).add(prefix.len());
                std::ptr::write_bytes(value, b'*', text.len() - prefix.len());
            }
            entry = entry.add(1);
        }
    }
}

/// Elsewhere only the variable is removed.
#[cfg(not(target_os = "linux"))]
unsafe fn scrub_initial_environment(_name: &str) {}

/// `--limit` of a list, bounded as the API bounds its `limit` (docs/API.md), so a question
/// gets the same answer either way: 0 or more than `max` is refused (exit 2) rather than read
/// as "none" or cut silently.
pub(super) fn limit(max: i64) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=max)
}

/// Durations on the command line read as in a pipeline file (`1h`, `30m`, or milliseconds), so
/// one habit serves both.
pub(super) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    self_healing::duration::parse(text)
}
