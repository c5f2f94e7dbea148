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

/// What standard error keeps for the error message: its last 64 KiB.
const STDERR_TAIL: usize = 64 * 1024;

/// A final standard-error line of this shape sets the error explicitly.
#[derive(Deserialize)]
struct ErrorLine {
    message: String,
    code: Option<String>,
    #[serde(default)]
    severity: Severity,
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
    let program = argv
        .first()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| StageError::new("a command needs a program to run"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
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
    let mut child = command.spawn().map_err(|e| {
        let cause = StageError::from(e);
        let error = StageError::new(format!("cannot start `{program}`: {}", cause.message()));
        match cause.code() {
            Some(code) => error.with_code(code.to_owned()),
            None => error,
        }
    })?;
    let group = GroupGuard(child.id());
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    stderr.extend_from_slice(&chunk[..n]);
                    if stderr.len() > 2 * STDERR_TAIL {
                        stderr.drain(..stderr.len() - STDERR_TAIL);
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| StageError::new(format!("`{program}`: {e}")))?;
    group.disarm();
    if status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&stderr);
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if last.starts_with('{')
        && let Ok(line) = serde_json::from_str::<ErrorLine>(last)
    {
        let error = StageError::new(line.message).with_severity(line.severity);
        return Err(match line.code {
            Some(code) => error.with_code(code),
            None => error,
        });
    }
    let what = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    Err(if last.is_empty() {
        StageError::new(format!("`{program}` {what}"))
    } else {
        StageError::new(format!("{last} (`{program}` {what})"))
    })
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
