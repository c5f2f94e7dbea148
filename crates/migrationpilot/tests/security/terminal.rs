//! See `security.rs`. What a stage prints cannot take over the operator's terminal, a reader
//! that leaves does not crash the command, the command line refuses what the API refuses, and a
//! run killed with SIGKILL looks dead and takes its processes with it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::Workspace;

/// A stage that writes escape sequences on both streams: a window title (OSC), a screen
/// clear (CSI), a carriage return forging a line, and a C1 CSI (U+009B) encoded in UTF-8.
/// Its last standard-error line, the attempt's error, has all of them too.
const HOSTILE: &str = r#"printf 'title \033]0;pwned\007 clear \033[2J\n'
printf 'ok\rFORGED ok\n'
printf 'c1 \302\23331m red\n'
printf 'err \033]0;pwned\007 \033[2J\r✔ load: forged \302\233 done\n' >&2
exit 1"#;

/// The pipeline: the hostile stage over a plain item and one whose name holds an escape.
const PIPELINE: &str = r#"
project: hostile
stages:
  - name: load
    command: ["./hostile.sh", "{item}"]
    items: ["evil\e]0;item\a", "plain"]
    concurrency: 2
"#;

/// The first control character (C0, C1 or DEL) other than newline and tab in `text`, which
/// would reach a terminal raw.
fn raw_control(text: &str) -> Option<char> {
    text.chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
}

fn assert_escaped(what: &str, text: &str) {
    if let Some(c) = raw_control(text) {
        panic!("{what} printed {c:?} raw:\n{}", text.escape_debug());
    }
}

/// Runs the binary in `work` to its end: status, standard output, standard error.
fn output(work: &Workspace, args: &[&str]) -> (Option<i32>, String, String) {
    let out = work.cmd().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A workspace where the hostile pipeline has run (and failed); its run id.
fn hostile_run() -> (Workspace, String, String) {
    let work = Workspace::new();
    work.script("hostile.sh", HOSTILE);
    work.file("pipeline.yaml", PIPELINE);
    let (status, progress, stderr) = output(&work, &["run", "pipeline.yaml"]);
    assert_eq!(status, Some(1), "the run fails: {stderr}");
    let runs: Vec<(String,)> = work.journal("SELECT id FROM runs");
    let run = runs[0].0.clone();
    (work, run, progress)
}

#[test]
fn escape_sequences_from_a_stage_reach_no_terminal_raw() {
    let (work, run, progress) = hostile_run();
    assert_escaped("run's progress lines", &progress);
    assert!(
        progress.contains("\\u{1b}]0;pwned\\u{7}") && progress.contains("\\u{9b}"),
        "the attempt's error is shown, escaped:\n{progress}"
    );
    assert!(
        progress.contains("load/evil\\u{1b}]0;item\\u{7}"),
        "the item is shown, escaped:\n{progress}"
    );

    for args in [
        vec!["runs"],
        vec!["runs", "--project", "hostile"],
        vec!["runs", "show", &run],
        vec!["logs", &run],
        vec!["health", "--project", "hostile"],
        vec!["healing", "history", "--project", "hostile"],
        vec!["alerts", "--project", "hostile"],
    ] {
        let (status, stdout, stderr) = output(&work, &args);
        assert_eq!(status, Some(0), "{args:?}: {stderr}");
        assert_escaped(&format!("{args:?}"), &stdout);
        assert_escaped(&format!("{args:?} (standard error)"), &stderr);
    }
    let (_, runs, _) = output(&work, &["runs"]);
    assert!(runs.contains("\\u{1b}[2J"), "the run's error:\n{runs}");
    let (_, show, _) = output(&work, &["runs", "show", &run]);
    assert!(show.contains("\\u{d}✔ load: forged"), "{show}");

    let (_, logs, _) = output(&work, &["logs", &run]);
    for shown in [
        "title \\u{1b}]0;pwned\\u{7} clear \\u{1b}[2J",
        "ok\\u{d}FORGED ok",
        "c1 \\u{9b}31m red",
        "evil\\u{1b}]0;item\\u{7}",
    ] {
        assert!(logs.contains(shown), "`{shown}` in:\n{logs}");
    }

    // `--raw` is the operator asking for the bytes as the stage wrote them.
    let (status, raw, _) = output(&work, &["logs", &run, "--raw"]);
    assert_eq!(status, Some(0));
    for kept in [
        "title \u{1b}]0;pwned\u{7} clear \u{1b}[2J",
        "ok\rFORGED ok",
        "c1 \u{9b}31m red",
    ] {
        assert!(
            raw.contains(kept),
            "`{}` in:\n{}",
            kept.escape_debug(),
            raw.escape_debug()
        );
    }
    assert!(
        raw.contains("── load/evil\\u{1b}]0;item\\u{7} attempt 1"),
        "headers are still escaped: {}",
        raw.escape_debug()
    );

    // JSON is read by programs: escaped as JSON (C1 and DEL included), the same values.
    for args in [
        vec!["logs", &run, "--json"],
        vec!["runs", "show", &run, "--json"],
        vec!["runs", "--json"],
    ] {
        let (status, json, _) = output(&work, &args);
        assert_eq!(status, Some(0));
        assert_escaped(&format!("{args:?}"), &json);
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
    }
    let (_, json, _) = output(&work, &["logs", &run, "--json"]);
    let logs: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .any(|log| log["stdout"].as_str().unwrap().contains("c1 \u{9b}31m red")),
        "{json}"
    );
    let (_, events, _) = output(&work, &["run", "pipeline.yaml", "--json-events"]);
    assert_escaped("run --json-events", &events);
    for line in events.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

/// On a terminal (progress bars), the hostile sequences are escaped too. `script`
/// (util-linux) gives the binary a real pseudo-terminal; the bars' own escape codes are
/// expected, the stage's are not.
#[test]
fn escape_sequences_from_a_stage_do_not_reach_the_progress_bars() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("\n*** SKIPPED: `script` (util-linux) is not installed ***\n");
        return;
    }
    let work = Workspace::new();
    work.script("hostile.sh", HOSTILE);
    work.file("pipeline.yaml", PIPELINE);
    let binary = assert_cmd::cargo::cargo_bin("migrationpilot");
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} run pipeline.yaml", binary.display()),
            "/dev/null",
        ])
        .current_dir(work.path())
        .env("MIGRATIONPILOT_STORE", work.store())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    for raw in [
        "\u{1b}]0;",
        "\u{1b}[2J",
        "\u{7}",
        "\u{9b}",
        "\r✔ load: forged",
    ] {
        assert!(
            !screen.contains(raw),
            "`{}` reached the terminal:\n{}",
            raw.escape_debug(),
            screen.escape_debug()
        );
    }
    assert!(
        screen.contains("\\u{1b}]0;pwned\\u{7}"),
        "{}",
        screen.escape_debug()
    );
}

/// Runs the binary with its standard output (and, with `shared`, its standard error) on a
/// pipe whose reader is gone before it prints anything: its exit status.
fn with_a_closed_pipe(work: &Workspace, args: &[&str], shared: bool) -> std::process::ExitStatus {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("migrationpilot"));
    command
        .args(args)
        .current_dir(work.path())
        .env("MIGRATIONPILOT_STORE", work.store())
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap());
    if shared {
        command.stderr(writer);
    } else {
        command.stderr(Stdio::piped());
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "{args:?} with its reader gone: {:?}\n{stderr}",
        out.status
    );
    out.status
}

#[test]
fn a_reader_that_goes_away_ends_the_output_not_the_command() {
    let (work, run, _) = hostile_run();
    for args in [
        vec!["runs"],
        vec!["runs", "--json"],
        vec!["runs", "show", &run],
        vec!["runs", "show", &run, "--json"],
        vec!["logs", &run],
        vec!["logs", &run, "--raw"],
        vec!["health", "--project", "hostile"],
        vec!["healing", "history", "--project", "hostile"],
        vec!["alerts", "--project", "hostile"],
        vec!["validate", "pipeline.yaml"],
        vec!["--help"],
    ] {
        for shared in [false, true] {
            let status = with_a_closed_pipe(&work, &args, shared);
            assert_eq!(status.code(), Some(0), "{args:?}: a quiet end");
        }
    }
    // A run goes on to its end when its reader leaves, and says how it ended.
    work.script("ok.sh", "echo fine");
    work.file(
        "ok.yaml",
        "project: quiet\nstages:\n  - name: one\n    command: [\"./ok.sh\"]\n",
    );
    for args in [
        &["run", "ok.yaml", "--json-events"][..],
        &["run", "ok.yaml"],
    ] {
        for shared in [false, true] {
            assert_eq!(with_a_closed_pipe(&work, args, shared).code(), Some(0));
        }
    }
    assert_eq!(
        with_a_closed_pipe(&work, &["run", "pipeline.yaml"], true).code(),
        Some(1)
    );
    let runs: Vec<(String,)> = work.journal("SELECT status FROM runs WHERE project = 'quiet'");
    assert_eq!(runs.len(), 4);
    assert!(
        runs.iter().all(|(status,)| status == "succeeded"),
        "{runs:?}"
    );

    // The way people meet it: `| head -1` on more output than a pipe holds.
    work.script("loud.sh", "seq 1 20000");
    work.file(
        "loud.yaml",
        "project: loud\nstages:\n  - name: one\n    command: [\"./loud.sh\", \"{item}\"]\n    items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]\n",
    );
    let (status, _, _) = output(&work, &["run", "loud.yaml"]);
    assert_eq!(status, Some(0));
    let loud: Vec<(String,)> = work.journal("SELECT id FROM runs WHERE project = 'loud'");
    let binary = assert_cmd::cargo::cargo_bin("migrationpilot");
    let piped = Command::new("sh")
        .args([
            "-c",
            r#""$0" logs "$1" 2>err.txt | head -1; cat err.txt"#,
            binary.to_str().unwrap(),
            &loud[0].0,
        ])
        .current_dir(work.path())
        .env("MIGRATIONPILOT_STORE", work.store())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&piped.stdout);
    assert!(
        shown.starts_with("── one/") && shown.lines().count() == 1,
        "head's one line, and nothing on standard error:\n{shown}"
    );
}

/// The bounds of a list's `limit` in the API's own document.
fn api_limit(path: &str) -> (i64, i64) {
    let document: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/serve/openapi.json"
    )))
    .unwrap();
    let parameters = document["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = parameters
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap_or_else(|| panic!("{path} has a limit"));
    (
        limit["schema"]["minimum"].as_i64().unwrap(),
        limit["schema"]["maximum"].as_i64().unwrap(),
    )
}

#[test]
fn limits_outside_the_apis_bounds_are_refused() {
    let (work, _, _) = hostile_run();
    for (path, args) in [
        ("/api/v1/projects/{project}/runs", vec!["runs"]),
        (
            "/api/v1/projects/{project}/healing",
            vec!["healing", "history", "--project", "hostile"],
        ),
        (
            "/api/v1/projects/{project}/alerts",
            vec!["alerts", "--project", "hostile"],
        ),
    ] {
        let (min, max) = api_limit(path);
        for (limit, expected) in [(min - 1, 2), (min, 0), (max, 0), (max + 1, 2)] {
            let limit = limit.to_string();
            let mut args = args.clone();
            args.extend(["--limit", &limit]);
            let (status, _, stderr) = output(&work, &args);
            assert_eq!(status, Some(expected), "{args:?}: {stderr}");
            if expected == 2 {
                assert!(
                    stderr.contains("--limit") && stderr.contains(&format!("{min}..={max}")),
                    "{args:?} says what it takes: {stderr}"
                );
            }
        }
    }
}

#[test]
fn logs_refuses_a_stage_the_run_lacks_and_attempt_zero() {
    let (work, run, _) = hostile_run();
    let (status, _, stderr) = output(&work, &["logs", &run, "--stage", "nope"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("no stage `nope`") && stderr.contains("(it has load)"),
        "{stderr}"
    );
    let (status, _, stderr) = output(&work, &["logs", &run, "--stage", "\u{1b}[2J"]);
    assert_eq!(status, Some(2));
    assert_escaped("the refusal", &stderr);
    assert!(stderr.contains("`\\u{1b}[2J`"), "{stderr}");
    for attempt in ["0", "-1", "x"] {
        let (status, _, stderr) = output(&work, &["logs", &run, "--attempt", attempt]);
        assert_eq!(status, Some(2), "--attempt {attempt}: {stderr}");
    }
    let (_, _, stderr) = output(&work, &["logs", &run, "--attempt", "0"]);
    assert!(stderr.contains("attempts count from 1"), "{stderr}");
    let (status, stdout, _) = output(&work, &["logs", &run, "--stage", "load", "--attempt", "1"]);
    assert_eq!(status, Some(0));
    assert!(stdout.contains("attempt 1"), "{stdout}");
}

/// Whether process `pid` has ended: gone, or dead and not yet reaped (a zombie, which
/// `kill(pid, 0)` still finds).
fn ended(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Kills what a failed test would leave running.
struct Leftovers(Vec<i32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) of processes this test's stage started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

/// Polls `done` every 20 ms until it holds, for at most `limit`; how long it took.
fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn a_run_killed_with_sigkill_is_lost_and_its_processes_die_with_it() {
    let work = Workspace::new();
    work.script(
        "stage.sh",
        "echo $$ > child.pid\nsleep 300 &\necho $! > grandchild.pid.tmp\nmv grandchild.pid.tmp grandchild.pid\nwait",
    );
    work.file(
        "pipeline.yaml",
        "project: doomed\nstages:\n  - name: slow\n    command: [\"./stage.sh\"]\n",
    );
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("grandchild.pid");
    let pids: Vec<i32> = ["child.pid", "grandchild.pid"]
        .iter()
        .map(|f| work.read(f).trim().parse().unwrap())
        .collect();
    let _leftovers = Leftovers(pids.clone());
    let (_, runs, _) = output(&work, &["runs", "--project", "doomed"]);
    assert!(runs.contains(" running "), "alive, it is running:\n{runs}");

    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    // On this host, a run whose process is gone is lost at once, without waiting out its
    // lease (10 s).
    let took = within(Duration::from_secs(30), "`runs` shows the run lost", || {
        output(&work, &["runs", "--project", "doomed"])
            .1
            .contains(" lost ")
    });
    assert!(
        took < migrationpilot::store::LEASE,
        "lost in {took:?}, before its lease ran out"
    );
    let (_, json, _) = output(&work, &["runs", "--project", "doomed", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["status"], "running", "the row is as it was left");
    assert_eq!(listed[0]["live"], false, "as the API's `live` says");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (_, show, _) = output(&work, &["runs", "show", &id]);
    assert!(show.contains("status    lost:"), "{show}");
    let (_, detail, _) = output(&work, &["runs", "show", &id, "--json"]);
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["run"]["live"], false);
    let (_, health, _) = output(&work, &["health", "--project", "doomed"]);
    assert!(health.contains(" lost "), "{health}");

    // The stage's shell got the parent-death signal, the `sleep` it started in the
    // background was killed with its process group by the reaper.
    for (pid, what) in pids.iter().zip(["the stage's command", "its own child"]) {
        within(
            Duration::from_secs(10),
            &format!("{what} ({pid}) died"),
            || ended(*pid),
        );
    }
}
