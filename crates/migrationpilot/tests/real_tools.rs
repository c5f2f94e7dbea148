//! Healing what real tools print: a stage of `psql` commands loading a real PostgreSQL that is
//! stopped and started under it, healed with the recommended configuration of
//! docs/HEALING.md and no JSON line from the command.
//!
//! The database is a cluster of the test's own (`initdb` in a temporary directory, on a free
//! port), so stopping it disturbs no other test.
#![cfg(feature = "postgres")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Workspace;

/// Batches of 100 rows each; those from [`GATED`] on wait for a lock the test holds until it
/// stops the database, so the stop always falls in the middle of the run.
const BATCHES: u32 = 30;
const GATED: u32 = 10;

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn real_psql_batches_survive_the_database_stopped_and_started() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    cluster.start();
    let url = cluster.url();
    psql(
        &url,
        "CREATE TABLE orders (id integer PRIMARY KEY, batch integer NOT NULL)",
    )
    .unwrap();

    // The gate: an exclusive advisory lock held by a session of the test's own.
    let work = Workspace::new();
    let locked = work.path().join("locked");
    let mut holder = Command::new("psql")
        .args([url.as_str(), "-qX", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql runs");
    writeln!(
        holder.stdin.as_mut().unwrap(),
        "SELECT pg_advisory_lock(1);\n\\! touch {}",
        locked.display()
    )
    .unwrap();
    work.wait_for("locked");

    work.file(
        "batches.txt",
        &(0..BATCHES).map(|b| format!("{b}\n")).collect::<String>(),
    );
    work.file(
        "pipeline.yaml",
        &format!(
            r#"project: real-psql
stages:
  - name: load
    # One batch of rows per item; ON CONFLICT makes a batch run twice harmless.
    command: ["psql", "${{DATABASE_URL}}", "-qX", "-v", "ON_ERROR_STOP=1", "-c",
              "SELECT pg_advisory_xact_lock_shared(1) WHERE {{item}} >= {GATED}; INSERT INTO orders SELECT g, {{item}} FROM generate_series({{item}} * 100 + 1, {{item}} * 100 + 100) g ON CONFLICT DO NOTHING"]
    items: {{ file: batches.txt }}
    concurrency: 4
    timeout: 60s
    dependsOn: [database]
    breaker: database
healing:
  healthMonitor:
    thresholds: {{ consecutiveFailures: 1, consecutiveSuccesses: 1 }}
    checks:
      - {{ name: database, type: database, connectionString: "${{DATABASE_URL}}", interval: 500ms, timeout: 1s }}
  retryPolicy:
    maxAttempts: 20
    backoff: exponential
    initialDelay: 100ms
    maxDelay: 2s
    jitter: true
    retryableErrors: [ECONNRESET, ETIMEDOUT, ECONNREFUSED, EDBSTARTING, EDEADLOCK, ESERIALIZATION,
                      HTTP_429, HTTP_502, HTTP_503, HTTP_504]
  breakers:
    database: {{ failureThreshold: 8, breakDuration: 1s, halfOpenRequests: 1 }}
  strategies:
    - name: break-on-refused
      priority: 30
      triggers: [{{ type: error, pattern: "^(ECONNREFUSED|EDBSTARTING)$" }}]
      action: circuit-break
      config: {{ breakDuration: 1s, halfOpenRequests: 1 }}
"#
        ),
    );
    let mut run = work.spawn_with(
        &["run", "pipeline.yaml", "--seed", "7", "--json-events"],
        &[("DATABASE_URL", url.as_str())],
    );
    let events = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let reader = {
        let (events, stdout) = (events.clone(), run.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                events.lock().unwrap().push(event);
            }
        })
    };

    // The ungated batches are in and four gated ones wait on the lock: stop the database
    // under them.
    wait_until("the first batches loaded and the next waiting", || {
        psql(
            &url,
            "SELECT (SELECT count(*) FROM orders) = 100 * $GATED \
             AND (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted) = 4"
                .replace("$GATED", &GATED.to_string())
                .as_str(),
        )
        .is_ok_and(|answer| answer == "t")
    });
    cluster.stop();
    let _ = holder.kill();
    let _ = holder.wait();

    // What psql prints against the stopped server, as it prints it now, is ECONNREFUSED.
    let refused = psql(&url, "SELECT 1").expect_err("the database is stopped");
    let classified = work
        .cmd()
        .args([
            "classify",
            "--program",
            "psql",
            "--exit",
            "2",
            refused.trim(),
        ])
        .output()
        .unwrap();
    let classified = String::from_utf8_lossy(&classified.stdout);
    assert!(
        classified.contains("ECONNREFUSED") && classified.contains("builtin:connection-refused"),
        "{refused} was classified as:\n{classified}"
    );

    // Held by its check, the stage starts nothing while the database is down.
    wait_until("the stage held by its check", || {
        events.lock().unwrap().iter().any(|event| {
            event["type"] == "stage-held" && event["heldBy"] == serde_json::json!(["database"])
        })
    });
    cluster.start();

    let output = run.wait_with_output().unwrap();
    reader.join().unwrap();
    let events = std::mem::take(&mut *events.lock().unwrap());
    assert!(
        output.status.success(),
        "the run failed: {}\n{events:#?}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        events.last().unwrap()["report"]["status"],
        "succeeded",
        "{:?}",
        events.last()
    );

    // Every row once, every batch whole.
    assert_eq!(
        psql(
            &url,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM orders"
        )
        .unwrap(),
        format!("{n}|{n}|1|{n}", n = BATCHES * 100)
    );

    // The failures were psql's own words, classified without a JSON line: the sessions the
    // stop ended (ECONNRESET), and any attempt made before the check saw the database down
    // (ECONNREFUSED) or up again before it accepted queries (EDBSTARTING).
    let failures: Vec<&serde_json::Value> = events
        .iter()
        .filter(|event| event["type"] == "attempt-failed")
        .map(|event| &event["error"])
        .collect();
    assert!(
        failures.len() >= 4,
        "the four waiting batches failed when the database stopped: {failures:?}"
    );
    eprintln!(
        "failures: {:?}",
        failures
            .iter()
            .map(|e| e["code"].as_str())
            .collect::<Vec<_>>()
    );
    for error in &failures {
        let code = error["code"].as_str().unwrap_or_default();
        assert!(
            ["ECONNRESET", "ECONNREFUSED", "EDBSTARTING"].contains(&code),
            "an unclassified or unexpected failure: {error}"
        );
        assert!(
            error["rule"]
                .as_str()
                .unwrap_or_default()
                .starts_with("builtin:"),
            "{error}"
        );
    }

    // No attempt started between the hold and its release.
    let mut held = false;
    let mut releases = 0;
    for event in &events {
        match event["type"].as_str().unwrap() {
            "stage-held" => {
                held = event["heldBy"].as_array().is_some_and(|by| !by.is_empty());
                releases += usize::from(!held);
            }
            "attempt-started" => assert!(!held, "an attempt started while held: {event}"),
            _ => {}
        }
    }
    assert!(releases >= 1, "the hold was released");
}

/// Runs one statement with the real psql: its unaligned output, or what it printed on error.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Waits (a bounded while) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL cluster of the test's own, stopped and removed when dropped.
struct Cluster {
    /// The server's programs (`initdb`, `pg_ctl`).
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// As root, the server runs as `postgres` (it refuses root).
    as_postgres: bool,
}

impl Cluster {
    /// Makes one with `initdb`, or `None` when PostgreSQL's programs are not installed (said
    /// loudly; a failure under `CI=true`).
    fn create() -> Option<Cluster> {
        let Some(bin) = server_programs() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL's server programs are not in /usr/lib/postgresql: in CI, .ci/services.sh installs them"
            );
            eprintln!("\n*** SKIPPED: this test needs PostgreSQL's server programs ***\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres", &dir.path().display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "chown to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once: its sessions are ended, new connections refused.
    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.program(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// One of the server's programs, run as the user the server runs as.
    fn program(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .program("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's `bin` directory.
fn server_programs() -> Option<PathBuf> {
    let versions = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}
