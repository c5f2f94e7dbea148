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

use crate::classify::{Classifier, Failed};
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
/// JSON object `{"message", "code", "severity", "retryAfter"}`; else what the built-in rules of
/// [`classify`](crate::classify) make of its output (a refused connection is `ECONNREFUSED`),
/// the line that matched as its message; else the last line as text, with the exit status.
/// Standard output is discarded.
///
/// The command runs in a process group of its own: dropping the future (a timeout, a
/// cancelled run) kills the group, its children included. On Linux the group also dies with
/// this process when nothing here gets to drop the future (SIGKILL, a crash): a reaper process
/// forked on first use kills the groups of the commands still running once this process is
/// gone (see `reaper` in the source for what is and is not covered).
pub async fn run(
    argv: &[String],
    env: &[(&str, &str)],
    workdir: Option<&Path>,
) -> Result<(), StageError> {
    run_logged(argv, env, workdir, Classifier::builtin(), &mut |_| {})
        .await
        .0
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

/// [`run`], classifying a failure by `classifier` (a file's own rules, then the built-in
/// ones), keeping the tail of both streams and handing each complete line of standard output
/// (up to 4 KiB long) to `on_line` as it arrives.
pub async fn run_logged(
    argv: &[String],
    env: &[(&str, &str)],
    workdir: Option<&Path>,
    classifier: &Classifier,
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
    let group = GroupGuard::new(child.id());
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
        Err(error_of(
            &Failed {
                program,
                stderr: &stderr.text,
                stdout: &stdout.text,
                exit: status.code(),
            },
            classifier,
        ))
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
    // of a secret that masking, which matches whole values, would not recognise. A line longer
    // than the whole tail keeps its end from its first whole word on (secrets hold no space),
    // so its last words are not lost; `cut` says what went before.
    if cut > 0 {
        // A newline ending the tail starts no line.
        let body = &kept[..kept.len().saturating_sub(1)];
        let after = |found: Option<usize>| found.map(|i| i + 1);
        let partial = after(body.iter().position(|b| *b == b'\n'))
            .or_else(|| after(body.iter().position(u8::is_ascii_whitespace)))
            .unwrap_or(kept.len());
        kept.drain(..partial);
        cut += partial as u64;
    }
    Tail {
        text: String::from_utf8_lossy(&kept).into_owned(),
        cut,
    }
}

/// The error of a command that failed, as a run gets it (what `migrationpilot classify`
/// shows). In this order: a last standard-error line that is a JSON error line sets it; else
/// the first of `classifier`'s rules that matches gives its code (its message is the line that
/// matched); else the last line is the message, with no code. A last line that starts like
/// JSON but is not is noted on the error, never taken silently.
pub fn error_of(failed: &Failed<'_>, classifier: &Classifier) -> StageError {
    let Failed {
        program,
        stderr,
        stdout,
        exit,
    } = *failed;
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut invalid_json = None;
    if last.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(last) {
            Err(e) => invalid_json = Some(format!("not valid JSON: {e}")),
            Ok(value) => {
                // An object with a `message` is an error line; any other JSON object (a
                // structured log line) is text like any other.
                if let Ok(line) = serde_json::from_value::<ErrorLine>(value) {
                    let mut error = StageError::new(line.message)
                        .with_severity(line.severity)
                        .with_rule("json");
                    if let Some(after) = line.retry_after {
                        error = error.with_retry_after(std::time::Duration::from_millis(after));
                    }
                    return match line.code {
                        Some(code) => error.with_code(code),
                        None => error,
                    };
                }
            }
        }
    }
    let what = match exit {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let found = classifier.classify(&Failed {
        program,
        stderr,
        stdout,
        exit,
    });
    let shown = found
        .as_ref()
        .and_then(|found| found.line.as_deref())
        .unwrap_or(last);
    let mut error = if shown.is_empty() {
        StageError::new(format!("`{program}` {what}"))
    } else {
        StageError::new(format!("{shown} (`{program}` {what})"))
    };
    if let Some(found) = found {
        error = error
            .with_code(found.code)
            .with_severity(found.severity)
            .with_retryable(found.retryable)
            .with_rule(found.rule.to_string());
        if let Some(after) = found.retry_after {
            error = error.with_retry_after(after);
        }
    }
    match invalid_json {
        Some(why) => error.with_invalid_json(why),
        None => error,
    }
}

/// Kills a command's process group when dropped before it finished. On Linux the group is
/// also the [`reaper`]'s to kill until then, should this process die first.
struct GroupGuard {
    group: Option<i32>,
    #[cfg(target_os = "linux")]
    _watched: Option<reaper::Watched>,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        let group = pid.and_then(|p| i32::try_from(p).ok());
        GroupGuard {
            group,
            #[cfg(target_os = "linux")]
            _watched: group.map(reaper::Watched::new),
        }
    }

    /// The command ended by itself: what it left running in its group is not ours to kill.
    fn disarm(mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.group {
            // SAFETY: kill(2) with a negative pid signals that process group and touches no
            // memory; the group is the command's own (process_group(0) above).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Kills the process groups of the commands still running when this process dies, whatever
/// it dies of.
///
/// A command and what it started (`sh -c 'slow & wait'`) share the command's process group,
/// which nobody kills once we are gone. So, the first time a command starts, this process forks a small
/// reaper (`mp-reaper` in `ps`), which holds nothing of ours open but one end of a socket
/// (and, being a fork, a copy-on-write snapshot of our memory at that moment: a few MB).
/// Every command's group is sent to it when the command starts, and taken back when the
/// command ends or is killed. When this process ends, however it ends, the kernel closes our
/// end of the socket; the reaper reads end-of-file, kills each group it still holds with
/// SIGKILL, and exits. On a normal exit we shut the socket ourselves and collect the reaper's
/// exit status, so it does not linger as a zombie.
///
/// Not covered: a process that leaves its command's group (`setsid`, a daemon, job control
/// with `set -m`), which is no longer the command's to lose; the children of a command that
/// started in the instant before we died, before its group reached the reaper; more than
/// [`reaper::CAPACITY`]
/// commands at once; and anything, if the reaper itself was killed before us.
#[cfg(target_os = "linux")]
mod reaper {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::OnceLock;

    use libc::{c_uint, pid_t};

    /// How many groups the reaper holds at once; a group beyond that is not covered.
    pub(super) const CAPACITY: usize = 4096;

    /// This process's reaper, forked on first use; `None` when none could be started.
    static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();

    /// A command's process group, the reaper's to kill until this is dropped.
    #[derive(Debug)]
    pub(super) struct Watched(pid_t);

    impl Watched {
        pub(super) fn new(group: pid_t) -> Self {
            if let Some(reaper) = REAPER.get_or_init(start_for_this_process) {
                reaper.tell(group);
            }
            Watched(group)
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            if let Some(Some(reaper)) = REAPER.get() {
                reaper.tell(-self.0);
            }
        }
    }

    fn start_for_this_process() -> Option<Reaper> {
        let reaper = Reaper::start()?;
        // SAFETY: atexit(3) registers a function that takes and returns nothing.
        unsafe { libc::atexit(finish_at_exit) };
        Some(reaper)
    }

    /// On a normal exit, the reaper ends as it would if we were killed, and we collect it.
    extern "C" fn finish_at_exit() {
        if let Some(Some(reaper)) = REAPER.get() {
            reaper.finish();
        }
    }

    /// The reaper process and our end of its socket (a socket, not a pipe: one message per
    /// read, and no SIGPIPE).
    #[derive(Debug)]
    pub(super) struct Reaper {
        lifeline: OwnedFd,
        pid: pid_t,
    }

    impl Reaper {
        /// Forks a reaper.
        pub(super) fn start() -> Option<Reaper> {
            let mut ends: [RawFd; 2] = [-1; 2];
            // SAFETY: socketpair(2) writes two new descriptors into `ends`.
            let made = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                    0,
                    ends.as_mut_ptr(),
                )
            };
            if made != 0 {
                return None;
            }
            // SAFETY: the two descriptors were just made, and nothing else owns them.
            let (ours, theirs) =
                unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
            // SAFETY: this process may have other threads, so the child may only call
            // async-signal-safe functions until it exits: `reap` calls nothing else,
            // allocates nothing, and never returns (so nothing of ours is dropped twice).
            match unsafe { libc::fork() } {
                0 => unsafe { reap(theirs.as_raw_fd()) },
                -1 => None,
                pid => Some(Reaper {
                    lifeline: ours,
                    pid,
                }),
            }
        }

        /// One message: a group to hold (positive) or to let go (negative).
        pub(super) fn tell(&self, message: pid_t) {
            // SAFETY: send(2) reads the `size_of::<pid_t>()` bytes of `message`.
            // MSG_NOSIGNAL: a reaper that is gone makes this fail, it does not raise SIGPIPE
            // in us.
            unsafe {
                libc::send(
                    self.lifeline.as_raw_fd(),
                    (&raw const message).cast(),
                    size_of::<pid_t>(),
                    libc::MSG_NOSIGNAL,
                );
            }
        }

        /// Ends the reaper as our death would (it reads end-of-file, kills the groups it
        /// holds, exits), then collects its exit status: orphaned, it would linger as a zombie
        /// wherever init does not reap (a container without one). Waits a bounded while, in
        /// case it was stopped.
        pub(super) fn finish(&self) {
            // SAFETY: shutdown(2) of our own socket, waitpid(2) of our own child; no memory
            // is passed.
            unsafe {
                libc::shutdown(self.lifeline.as_raw_fd(), libc::SHUT_RDWR);
                for _ in 0..200 {
                    if libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) != 0 {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    /// The reaper's life: hold the groups it is sent until `lifeline` reads end-of-file, then
    /// kill them.
    ///
    /// # Safety
    ///
    /// Only in a child just forked: it calls async-signal-safe functions only, and exits.
    unsafe fn reap(lifeline: RawFd) -> ! {
        // SAFETY: system calls on this process's own descriptors, signals and memory.
        unsafe {
            // Nothing of ours stays open here: a command's pipe held by the reaper would never
            // reach end-of-file, nor would our end of the socket.
            close_all_but(lifeline);
            // Out of our process group, and deaf to Ctrl-C, hangups and polite kills: the
            // reaper outlives us by the moment it takes to do its work, and not longer.
            libc::setpgid(0, 0);
            for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
                libc::signal(signal, libc::SIG_IGN);
            }
            libc::prctl(libc::PR_SET_NAME, c"mp-reaper".as_ptr());
            let mut groups: [pid_t; CAPACITY] = [0; CAPACITY];
            let mut held = 0;
            loop {
                let mut message: pid_t = 0;
                let read = libc::recv(lifeline, (&raw mut message).cast(), size_of::<pid_t>(), 0);
                if read == 0 {
                    break;
                }
                if read < 0 {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    break;
                }
                if message > 0 && held < CAPACITY {
                    groups[held] = message;
                    held += 1;
                } else if message < 0
                    && let Some(at) = groups[..held]
                        .iter()
                        .position(|g| *g == message.wrapping_neg())
                {
                    groups[at] = groups[held - 1];
                    held -= 1;
                }
            }
            for group in &groups[..held] {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::_exit(0)
        }
    }

    /// Closes every descriptor but `keep`.
    ///
    /// # Safety
    ///
    /// Nothing may use the other descriptors afterwards.
    unsafe fn close_all_but(keep: RawFd) {
        let Ok(keep) = c_uint::try_from(keep) else {
            return;
        };
        // SAFETY: close_range(2) (Linux 5.9) only closes descriptors; the caller uses no other.
        unsafe {
            let close_range = |first: c_uint, last: c_uint| {
                libc::syscall(libc::SYS_close_range, first, last, 0 as c_uint) == 0
            };
            let below = keep == 0 || close_range(0, keep - 1);
            let above = close_range(keep.saturating_add(1), c_uint::MAX);
            if !(below && above) {
                // An older kernel: one by one, as far as descriptors usually go.
                for fd in (0..65_536).filter(|fd| *fd != keep) {
                    libc::close(fd as RawFd);
                }
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
            StageError::critical("no connection")
                .with_code("DB_DOWN")
                .with_rule("json")
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
    async fn what_a_tool_printed_is_classified_and_a_broken_json_line_noted() {
        let refused = sh(
            "echo 'psql: error: connection to server at \"127.0.0.1\", port 5439 failed: Connection refused' >&2; \
             printf '\\tIs the server running on that host and accepting TCP/IP connections?\\n' >&2; exit 2",
        );
        let error = run(&refused, &[], None).await.unwrap_err();
        assert_eq!(error.code(), Some("ECONNREFUSED"));
        assert_eq!(error.retryable(), Some(true));
        assert_eq!(error.rule(), Some("builtin:connection-refused"));
        assert!(
            error
                .message()
                .starts_with("psql: error: connection to server at"),
            "the line that matched: {}",
            error.message()
        );
        let broken = sh(r#"echo '{"code": "DB_DOWN", "message": ' >&2; exit 1"#);
        let error = run(&broken, &[], None).await.unwrap_err();
        assert_eq!(error.code(), None);
        assert!(
            error
                .invalid_json()
                .is_some_and(|why| why.starts_with("not valid JSON: EOF")),
            "{error:?}"
        );
        // A JSON object that is not an error line (a structured log) is text like any other.
        let log = sh(r#"echo '{"level": "error", "msg": "boom"}' >&2; exit 1"#);
        let error = run(&log, &[], None).await.unwrap_err();
        assert_eq!(error.invalid_json(), None);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_tail_keeps_its_last_words() {
        let long = sh(
            "head -c 200000 /dev/zero | tr '\\0' 'x'; printf ' and the end of it\\n' >&2; \
                       head -c 200000 /dev/zero | tr '\\0' 'y' >&2; printf ' last words\\n' >&2; exit 3",
        );
        let (result, _, stderr) =
            run_logged(&long, &[], None, Classifier::builtin(), &mut |_| {}).await;
        assert!(result.is_err());
        assert_eq!(stderr.text, "last words\n");
        assert!(stderr.cut > 0);
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

    /// Whether process `pid` has ended: gone, or dead and not yet reaped by its parent.
    #[cfg(target_os = "linux")]
    fn ended(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    /// A `sh` in a process group of its own that started `sleep` in the background, and the
    /// sleep's process id.
    #[cfg(target_os = "linux")]
    fn shell_with_a_child() -> (std::process::Child, u32) {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(shell.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (shell, line.trim().parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_reaper_kills_the_groups_it_holds_when_its_process_goes() {
        // A reaper of the test's own: its socket shut here is what our death closes.
        let reaper = reaper::Reaper::start().expect("a reaper starts");
        let (mut held, held_child) = shell_with_a_child();
        let (mut let_go, let_go_child) = shell_with_a_child();
        reaper.tell(held.id() as i32);
        reaper.tell(let_go.id() as i32);
        reaper.tell(-(let_go.id() as i32));
        reaper.finish();
        let status = held.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the held group's shell was killed"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ended(held_child) {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell's own child {held_child} outlived its group"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The reaper acted on the end of its socket after every message before it.
        assert!(
            !ended(let_go.id()) && !ended(let_go_child),
            "a group taken back was killed"
        );
        // SAFETY: kill(2) of the test's own process group.
        unsafe { libc::kill(-(let_go.id() as i32), libc::SIGKILL) };
        let_go.wait().unwrap();
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
