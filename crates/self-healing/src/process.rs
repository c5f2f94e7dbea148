//! Running a command the way every part of the engine does: argv without a shell, errors from
//! the exit status and standard error, and nothing left behind when it is cut short.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use self_healing::process;
//!
//! let argv = ["sh", "-c", "echo 'read ECONNRESET' >&2; exit 7"].map(String::from);
//! let error = process::run(&argv, &[], None).await.unwrap_err();
//! assert_eq!(error.message(), "read ECONNRESET (`sh` exited with status 7)");
//! # });
//! ```

use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::error::{InvalidConfig, Severity, StageError};

/// A final standard-error line of this shape sets the error explicitly.
#[derive(Deserialize)]
struct ErrorLine {
    message: String,
    code: Option<String>,
    #[serde(default)]
    severity: Severity,
    /// Milliseconds a retry should wait at least.
    #[serde(default, rename = "retryAfter")]
    retry_after: Option<u64>,
}

/// Checks that an argv a user wrote names a program to run.
pub fn check_argv(argv: &[String]) -> Result<(), InvalidConfig> {
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(InvalidConfig::new("command", "needs a program to run"));
    }
    Ok(())
}

/// [`run`] with owned environment values, for commands a configuration file declares.
pub async fn run_owned(argv: &[String], env: &[(&str, String)]) -> Result<(), StageError> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(argv, &env, None).await
}

/// Runs `argv` (no shell) with `env` added to the environment, in `workdir` if given, and waits
/// for it. Exit 0 is success. Otherwise the error is the final standard-error line if it is a
/// JSON object `{"message", "code", "severity"}`, else that line as text with the exit status.
/// Standard output is discarded.
///
/// The command runs in a process group of its own: dropping the future (a timeout, a
/// cancelled run) kills the group, its children included.
pub async fn run(
    argv: &[String],
    env: &[(&str, &str)],
    workdir: Option<&Path>,
) -> Result<(), StageError> {
    run_logged(argv, env, workdir, &mut |_| {}).await.0
}

/// How much of each of a command's streams [`run_logged`] keeps: the last 64 KiB.
pub const LOG_TAIL: usize = 64 * 1024;

/// Standard-output lines longer than this are kept in the log but not offered as a line.
const LONGEST_LINE: usize = 4096;

/// The end of what a command wrote on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last [`LOG_TAIL`] bytes, as text (invalid UTF-8 replaced).
    pub text: String,
    /// How many bytes before them were cut.
    pub cut: u64,
}

/// [`run`], keeping the tail of both streams and handing each complete line of standard output
/// (up to 4 KiB long) to `on_line` as it arrives.
pub async fn run_logged(
    argv: &[String],
    env: &[(&str, &str)],
    workdir: Option<&Path>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> (Result<(), StageError>, Tail, Tail) {
    let program = match argv.first().filter(|p| !p.is_empty()) {
        Some(program) => program,
        None => {
            let error = StageError::new("a command needs a program to run");
            return (Err(error), Tail::default(), Tail::default());
        }
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    if let Some(workdir) = workdir {
        command.current_dir(workdir);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let cause = StageError::from(e);
            let error = StageError::new(format!("cannot start `{program}`: {}", cause.message()));
            let error = match cause.code() {
                Some(code) => error.with_code(code.to_owned()),
                None => error,
            };
            return (Err(error), Tail::default(), Tail::default());
        }
    };
    let group = GroupGuard(child.id());
    let (stdout, stderr) = tokio::join!(
        read_tail(child.stdout.take(), Some(on_line)),
        read_tail(child.stderr.take(), None),
    );
    let status = match child.wait().await {
        Ok(status) => status,
        Err(e) => {
            return (
                Err(StageError::new(format!("`{program}`: {e}"))),
                stdout,
                stderr,
            );
        }
    };
    group.disarm();
    let result = if status.success() {
        Ok(())
    } else {
        Err(failure(program, &stderr.text, status.code()))
    };
    (result, stdout, stderr)
}

/// Reads a stream to its end, keeping its last [`LOG_TAIL`] bytes and handing complete lines to
/// `on_line`.
async fn read_tail(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    mut on_line: Option<&mut (dyn FnMut(&str) + Send)>,
) -> Tail {
    let Some(mut pipe) = pipe else {
        return Tail::default();
    };
    let mut kept = Vec::new();
    let mut cut = 0u64;
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &chunk[..n];
        if let Some(on_line) = on_line.as_mut() {
            for &byte in bytes {
                if byte == b'\n' {
                    if line.len() <= LONGEST_LINE {
                        on_line(&String::from_utf8_lossy(&line));
                    }
                    line.clear();
                } else if line.len() <= LONGEST_LINE {
                    line.push(byte);
                }
            }
        }
        kept.extend_from_slice(bytes);
        if kept.len() > 2 * LOG_TAIL {
            let excess = kept.len() - LOG_TAIL;
            kept.drain(..excess);
            cut += excess as u64;
        }
    }
    if let (Some(on_line), false) = (on_line.as_mut(), line.is_empty())
        && line.len() <= LONGEST_LINE
    {
        on_line(&String::from_utf8_lossy(&line));
    }
    if kept.len() > LOG_TAIL {
        let excess = kept.len() - LOG_TAIL;
        kept.drain(..excess);
        cut += excess as u64;
    }
    // A tail that was cut starts at its first whole line: a line cut in two could hold the end
    // of a secret that masking, which matches whole values, would not recognise.
    if cut > 0 {
        let partial = kept
            .iter()
            .position(|b| *b == b'\n')
            .map_or(kept.len(), |i| i + 1);
        kept.drain(..partial);
        cut += partial as u64;
    }
    Tail {
        text: String::from_utf8_lossy(&kept).into_owned(),
        cut,
    }
}

/// The error of a command that failed, from the last line of its standard error.
fn failure(program: &str, stderr: &str, code: Option<i32>) -> StageError {
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if last.starts_with('{')
        && let Ok(line) = serde_json::from_str::<ErrorLine>(last)
    {
        let mut error = StageError::new(line.message).with_severity(line.severity);
        if let Some(after) = line.retry_after {
            error = error.with_retry_after(std::time::Duration::from_millis(after));
        }
        return match line.code {
            Some(code) => error.with_code(code),
            None => error,
        };
    }
    let what = match code {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    if last.is_empty() {
        StageError::new(format!("`{program}` {what}"))
    } else {
        StageError::new(format!("{last} (`{program}` {what})"))
    }
}

/// Kills a command's process group when dropped before it finished.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals that process group and touches no
            // memory; the group is the command's own (process_group(0) above).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_json_last_line_sets_code_and_severity() {
        let failing = sh(
            r#"echo noise >&2; echo '{"code":"DB_DOWN","severity":"critical","message":"no connection"}' >&2; exit 1"#,
        );
        let error = run(&failing, &[], None).await.unwrap_err();
        assert_eq!(
            error,
            StageError::critical("no connection").with_code("DB_DOWN")
        );
        let quiet = run(&sh("exit 4"), &[], None).await.unwrap_err();
        assert_eq!(quiet.message(), "`sh` exited with status 4");
        let limited = sh(r#"echo '{"message":"rate limited","retryAfter":1500}' >&2; exit 1"#);
        let error = run(&limited, &[], None).await.unwrap_err();
        assert_eq!(
            error.retry_after(),
            Some(std::time::Duration::from_millis(1500))
        );
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["retryAfter"], 1500, "kept in events as milliseconds");
        let back: StageError = serde_json::from_value(json).unwrap();
        assert_eq!(back, error);
    }

    #[tokio::test]
    async fn environment_and_workdir_reach_the_command() {
        let dir = std::env::temp_dir();
        let check = sh(
            "test \"$GREETING\" = hello && test \"$(pwd -P)\" = \"$(cd \"$EXPECTED\" && pwd -P)\"",
        );
        let expected = dir.to_string_lossy().into_owned();
        let env = [("GREETING", "hello"), ("EXPECTED", expected.as_str())];
        assert_eq!(run(&check, &env, Some(&dir)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_dropped_command_takes_its_children_with_it() {
        let marker = std::env::temp_dir().join(format!("mp-orphan-{}", std::process::id()));
        let script = sh(&format!("(sleep 0.3; touch {}) & wait", marker.display()));
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            run(&script, &[], None),
        )
        .await;
        assert!(cut.is_err(), "the command was cut");
        // Proving that something does not happen takes waiting past when it would have: real
        // processes run on the real clock.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(!marker.exists(), "a child of the cut command survived it");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let error = run(&["/no/such/tool".to_owned()], &[], None)
            .await
            .unwrap_err();
        assert!(
            error.message().starts_with("cannot start `/no/such/tool`"),
            "{error}"
        );
        assert_eq!(error.code(), Some("ENOENT"));
        assert!(run(&[], &[], None).await.is_err());
    }
}
