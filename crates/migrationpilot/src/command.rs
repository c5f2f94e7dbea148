//! Commands that stages run: argv without a shell, `{item}` as one argument, errors from the
//! exit status and standard error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use self_healing::{Severity, StageError};

/// What standard error keeps for the error message: its last 64 KiB.
const STDERR_TAIL: usize = 64 * 1024;

/// One command of a stage (its handler, or its rollback, failover or reset).
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
}

/// The variables a command gets besides the stage's `env`.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub project: &'a str,
    pub run: &'a str,
    pub stage: &'a str,
    pub attempt: u32,
    pub item: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// A final standard-error line of this shape sets the error explicitly.
#[derive(Deserialize)]
struct ErrorLine {
    message: String,
    code: Option<String>,
    #[serde(default)]
    severity: Severity,
}

impl Command {
    /// The argv with `{item}` replaced: each argument stays one argument, whatever the item holds.
    pub fn argv_for(&self, item: Option<&str>) -> Vec<String> {
        self.argv
            .iter()
            .map(|arg| match item {
                Some(item) => arg.replace("{item}", item),
                None => arg.clone(),
            })
            .collect()
    }

    /// Runs the command to its end. Exit 0 is success; otherwise the error is the final
    /// standard-error line if it is a JSON `{"message", "code", "severity"}` object, else that
    /// line as text with the exit status. Dropping the future kills the command's process group.
    pub async fn run(&self, ctx: &Context<'_>) -> Result<(), StageError> {
        let argv = self.argv_for(ctx.item);
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&self.workdir)
            .envs(&self.env)
            .env("MIGRATIONPILOT_PROJECT", ctx.project)
            .env("MIGRATIONPILOT_RUN_ID", ctx.run)
            .env("MIGRATIONPILOT_STAGE", ctx.stage)
            .env("MIGRATIONPILOT_ATTEMPT", ctx.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(item) = ctx.item {
            command.env("MIGRATIONPILOT_ITEM", item);
        }
        if let Some(key) = ctx.idempotency_key {
            command.env("MIGRATIONPILOT_IDEMPOTENCY_KEY", key);
        }
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|e| {
            let cause = StageError::from(e);
            let error = StageError::new(format!("cannot start `{}`: {}", argv[0], cause.message()));
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
            .map_err(|e| StageError::new(format!("`{}`: {e}", argv[0])))?;
        drop(group.disarm());
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
            StageError::new(format!("`{}` {what}", argv[0]))
        } else {
            StageError::new(format!("{last} (`{}` {what})", argv[0]))
        })
    }
}

/// Kills a command's whole process group when dropped before it finished: a cut attempt must
/// not leave its children running.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) -> Self {
        self.0 = None;
        self
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // touched. The group is the command's own (process_group(0) above).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                "{item}".into(),
            ],
            env: BTreeMap::new(),
            workdir: std::env::temp_dir(),
        }
    }

    fn ctx(item: Option<&str>) -> Context<'_> {
        Context {
            project: "p",
            run: "r",
            stage: "s",
            attempt: 1,
            item,
            idempotency_key: None,
        }
    }

    #[tokio::test]
    async fn items_reach_the_command_as_one_argument_unchanged() {
        for item in [
            "two words",
            "quote\"s and 'single'",
            "semi;colon",
            "$(touch /tmp/pwned)",
            "`id`",
            "-rf",
        ] {
            let check = sh("test \"$#\" = 1 && test \"$1\" = \"$MIGRATIONPILOT_ITEM\"");
            assert_eq!(check.run(&ctx(Some(item))).await, Ok(()), "{item}");
        }
    }

    #[tokio::test]
    async fn a_json_last_line_sets_code_and_severity() {
        let failing = sh(
            r#"echo noise >&2; echo '{"code":"DB_DOWN","severity":"critical","message":"no connection"}' >&2; exit 1"#,
        );
        let error = failing.run(&ctx(None)).await.unwrap_err();
        assert_eq!(
            error,
            StageError::critical("no connection").with_code("DB_DOWN")
        );
        let plain = sh("echo 'read ECONNRESET' >&2; exit 7")
            .run(&ctx(None))
            .await
            .unwrap_err();
        assert_eq!(
            plain.message(),
            "read ECONNRESET (`sh` exited with status 7)"
        );
        assert_eq!(plain.severity(), Severity::Error);
    }

    #[tokio::test]
    async fn a_dropped_command_takes_its_children_with_it() {
        let marker = std::env::temp_dir().join(format!("mp-orphan-{}", std::process::id()));
        let script = format!("(sleep 0.3; touch {}) & wait", marker.display());
        let run = sh(&script);
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(100), run.run(&ctx(None))).await;
        assert!(cut.is_err(), "the command was cut");
        // Proving that something does not happen takes waiting past when it would have: real
        // processes run on the real clock.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(!marker.exists(), "a child of the cut command survived it");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let missing = Command {
            argv: vec!["/no/such/tool".into()],
            env: BTreeMap::new(),
            workdir: std::env::temp_dir(),
        };
        let error = missing.run(&ctx(None)).await.unwrap_err();
        assert!(
            error.message().starts_with("cannot start `/no/such/tool`"),
            "{error}"
        );
    }
}
