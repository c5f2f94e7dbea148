//! End-to-end: `serve` and `run --listen` over real sockets: the API's answers and refusals,
//! the token rules, the event stream, the Prometheus exposition (checked by `promtool` and
//! scraped by a real Prometheus), and a command's metric lines driving a strategy.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Served, Workspace, http, json, tool};

on_every_store!(
    the_api_answers_and_refuses_over_a_real_socket,
    the_event_stream_follows_a_run_and_resumes_from_last_event_id,
);

const TOKEN: &str = "s3cret-token-for-tests";

/// A project `api` with one finished run: two stages, items that fail once with ECONNRESET and
/// are retried, each attempt printing a line.
fn seeded(work: &Workspace) -> String {
    work.script(
        "flaky.sh",
        r#"echo "working on $1 (attempt $MIGRATIONPILOT_ATTEMPT)"
if [ "$MIGRATIONPILOT_ATTEMPT" -lt 2 ]; then echo "read ECONNRESET" >&2; exit 1; fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: api
stages:
  - name: extract
    command: ["./flaky.sh", "{item}"]
    items: [a, b, c]
  - name: publish
    command: ["true"]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 10 }
"#,
    );
    let out = work
        .cmd()
        .args(["run", "pipeline.yaml", "--json-events"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    report["report"]["runId"].as_str().unwrap().to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn the_api_answers_and_refuses_over_a_real_socket(work: Workspace) {
    let run = seeded(&work);
    let served = Served::start(
        &work,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("MIGRATIONPILOT_TOKEN", TOKEN)],
    );
    served.wait_ready();
    let url = |path: &str| format!("{}{path}", served.url);
    let auth = bearer(TOKEN);
    let with_token = [("Authorization", auth.as_str())];

    // Reading.
    assert_eq!(
        json("GET", &url("/healthz"), &[], None),
        (200, serde_json::json!({"status": "ok"}))
    );
    let (status, projects) = json("GET", &url("/api/v1/projects"), &[], None);
    assert_eq!(status, 200);
    assert_eq!(projects[0]["name"], "api");
    assert_eq!(projects[0]["latestRun"]["id"], run.as_str());
    assert_eq!(projects[0]["latestRun"]["live"], false);
    assert_eq!(projects[0]["healing"]["enabled"], true);
    let (status, detail) = json("GET", &url(&format!("/api/v1/runs/{run}")), &[], None);
    assert_eq!(status, 200);
    assert_eq!(detail["run"]["status"], "succeeded");
    assert_eq!(detail["stages"][0]["stage"], "extract");
    assert_eq!(detail["stages"][0]["items"], 3);
    assert_eq!(detail["metrics"]["retryCount"], 3);
    let (_, events) = json(
        "GET",
        &url(&format!("/api/v1/runs/{run}/events?limit=2")),
        &[],
        None,
    );
    assert_eq!(events.as_array().unwrap().len(), 2);
    let after = events[1]["id"].as_i64().unwrap();
    let (_, next) = json(
        "GET",
        &url(&format!("/api/v1/runs/{run}/events?after={after}&limit=1")),
        &[],
        None,
    );
    assert!(next[0]["id"].as_i64().unwrap() > after);
    let (_, logs) = json(
        "GET",
        &url(&format!(
            "/api/v1/runs/{run}/logs?stage=extract&item=b&attempt=2"
        )),
        &[],
        None,
    );
    assert_eq!(logs.as_array().unwrap().len(), 1, "{logs}");
    assert_eq!(
        logs[0]["stdoutBytes"], 25,
        "listed with its size, without its output"
    );
    assert!(logs[0].get("stdout").is_none(), "{logs}");
    let (_, log) = json(
        "GET",
        &url(&format!("/api/v1/runs/{run}/logs/{}", logs[0]["id"])),
        &[],
        None,
    );
    assert_eq!(log["stdout"], "working on b (attempt 2)\n");
    assert_eq!(log["attempt"], 2);
    let (_, history) = json("GET", &url("/api/v1/projects/api/healing"), &[], None);
    assert_eq!(history.as_array().unwrap().len(), 3);
    assert_eq!(history[0]["action"], "retry");
    let (status, health) = json("GET", &url("/api/v1/projects/api/health"), &[], None);
    assert_eq!((status, &health["live"]), (200, &Value::Bool(false)));
    let (status, openapi) = json("GET", &url("/api/v1/openapi.json"), &[], None);
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/api/v1/projects/{project}/alerts"].is_object());
    // Every documented operation is served (the stream is tested below).
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        if path.ends_with("/stream") {
            continue;
        }
        let methods = operations.as_object().unwrap().keys();
        for method in methods.filter(|m| ["get", "post", "put", "delete"].contains(&m.as_str())) {
            let concrete = path
                .replace("{project}", "api")
                .replace("{run}", &run)
                .replace("{id}", "1");
            let (status, body) = http(&method.to_uppercase(), &url(&concrete), &[], None);
            assert!(
                status != 405 && !(status == 404 && body.contains("no endpoint")),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }

    // Reading, refused.
    for (path, status, says) in [
        ("/api/v1/runs/run-nope".to_owned(), 404, "no run `run-nope`"),
        (
            "/api/v1/projects/nope/runs".to_owned(),
            404,
            "no project `nope`",
        ),
        (
            "/api/v1/projects/nope/health".to_owned(),
            404,
            "no project `nope`",
        ),
        (
            "/api/v1/projects/api/runs?limit=0".to_owned(),
            400,
            "limit must be at least 1",
        ),
        (
            "/api/v1/projects/api/runs?limit=9999".to_owned(),
            400,
            "at most 500",
        ),
        (
            "/api/v1/projects/api/runs?limit=ten".to_owned(),
            400,
            "limit",
        ),
        (
            "/api/v1/projects/api/runs?colour=red".to_owned(),
            400,
            "colour",
        ),
        (
            format!("/api/v1/runs/{run}/logs?stage=nope"),
            404,
            "no stage `nope`",
        ),
        (
            format!("/api/v1/runs/{run}/logs?attempt=0"),
            400,
            "attempt counts from 1",
        ),
        ("/api/v1/nothing".to_owned(), 404, "no endpoint"),
    ] {
        let (got, body) = json("GET", &url(&path), &[], None);
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["status"], status, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    assert_eq!(json("DELETE", &url("/api/v1/projects"), &[], None).0, 405);
    let (status, _) = http(
        "GET",
        &url("/api/v1/events/stream"),
        &[("Last-Event-ID", "seventeen")],
        None,
    );
    assert_eq!(status, 400);

    // Steering: the token rules.
    let trigger = url("/api/v1/projects/api/healing/trigger");
    let body = r#"{"action": "restart", "stage": "publish"}"#;
    assert_eq!(json("POST", &trigger, &[], Some(body)).0, 401);
    assert_eq!(
        json(
            "POST",
            &trigger,
            &[("Authorization", "Bearer wrong")],
            Some(body)
        )
        .0,
        403
    );
    assert_eq!(
        json("POST", &trigger, &[("Authorization", TOKEN)], Some(body)).0,
        401
    );

    // Steering, refused with what is wrong.
    for (path, sent, status, says) in [
        ("trigger", r#"{"action": "restart""#, 400, "bad JSON body"),
        (
            "trigger",
            r#"{"action": "restart", "stage": 7}"#,
            400,
            "`stage`",
        ),
        (
            "trigger",
            r#"{"action": "restart", "stage": "publish", "force": true}"#,
            400,
            "force",
        ),
        (
            "trigger",
            r#"{"action": "explode", "stage": "publish"}"#,
            400,
            "explode",
        ),
        (
            "trigger",
            r#"{"action": "retry", "stage": "publish"}"#,
            400,
            "cannot be triggered",
        ),
        (
            "trigger",
            r#"{"action": "restart", "stage": "pubish"}"#,
            404,
            "did you mean `publish`",
        ),
        (
            "configure",
            r#"{"strategy": "retry-transient"}"#,
            400,
            "nothing to change",
        ),
        (
            "configure",
            r#"{"strategy": "retry-transient", "maxAttempts": 0}"#,
            400,
            "at least 1",
        ),
        (
            "configure",
            r#"{"strategy": "nope", "maxAttempts": 2}"#,
            404,
            "it has retry-transient",
        ),
        (
            "configure",
            r#"{"strategy": "retry-transient", "mode": "maybe"}"#,
            400,
            "`mode`",
        ),
        ("disable", r#"{"why": "x"}"#, 400, "why"),
    ] {
        let (got, answer) = json(
            "POST",
            &url(&format!("/api/v1/projects/api/healing/{path}")),
            &with_token,
            Some(sent),
        );
        assert_eq!(got, status, "{path} {sent}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{path} {sent}: {answer}"
        );
    }
    let (status, answer) = json(
        "POST",
        &url("/api/v1/projects/nope/healing/disable"),
        &with_token,
        None,
    );
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (404, "the store knows no project `nope`")
    );

    // Steering, carried out: visible to the CLI, which reads the same store.
    let (status, answer) = json("POST", &trigger, &with_token, Some(body));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["action"], "restart");
    assert_eq!(answer["running"], false);
    let (status, answer) = json(
        "POST",
        &url("/api/v1/projects/api/healing/configure"),
        &with_token,
        Some(r#"{"strategy": "retry-transient", "maxAttempts": 5, "cooldown": 60000}"#),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["configured"]["maxAttempts"], 5);
    let (status, _) = json(
        "POST",
        &url("/api/v1/projects/api/healing/disable"),
        &with_token,
        Some(r#"{"reason": "maintenance window"}"#),
    );
    assert_eq!(status, 200);
    let (_, projects) = json("GET", &url("/api/v1/projects"), &[], None);
    assert_eq!(projects[0]["healing"]["enabled"], false);
    assert_eq!(projects[0]["healing"]["reason"], "maintenance window");
    let health = work
        .cmd()
        .args(["health", "--project", "api"])
        .output()
        .unwrap();
    let health = String::from_utf8_lossy(&health.stdout);
    assert!(health.contains("maintenance window"), "{health}");
    // `enable` takes no body, or an empty one.
    assert_eq!(
        http(
            "POST",
            &url("/api/v1/projects/api/healing/enable"),
            &with_token,
            None
        )
        .0,
        200
    );

    let stderr = served.stop();
    assert!(
        !stderr.contains(TOKEN),
        "the token never appears in a log: {stderr}"
    );
}

#[test]
fn without_a_token_steering_is_refused_and_other_machines_are_not_served() {
    let work = Workspace::new();
    seeded(&work);
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    let (status, answer) = json(
        "POST",
        &format!("{}/api/v1/projects/api/healing/disable", served.url),
        &[("Authorization", "Bearer anything-at-all-here")],
        None,
    );
    assert_eq!(status, 403);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("MIGRATIONPILOT_TOKEN")
    );
    drop(served);

    work.cmd()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("MIGRATIONPILOT_TOKEN")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("reachable from other machines"));
    work.cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MIGRATIONPILOT_TOKEN", "short")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("at least 16 characters"));
    work.cmd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "missing.txt",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--token-file missing.txt"));
    work.cmd()
        .args(["serve", "--listen", "nowhere:port"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--listen nowhere:port"));
}

/// Reads server-sent events from `url` (after `last_id`), calling `each` with every message's
/// id and data until it returns false.
fn follow_stream(url: &str, last_id: Option<&str>, mut each: impl FnMut(&str, Value) -> bool) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
    if let Some(id) = last_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut id = String::new();
    for line in lines.by_ref() {
        let line = line.expect("the stream stays open");
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:")
            && let Ok(value) = serde_json::from_str::<Value>(data.trim())
            && !each(&id, value)
        {
            return;
        }
    }
}

fn the_event_stream_follows_a_run_and_resumes_from_last_event_id(work: Workspace) {
    seeded(&work);
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    served.wait_ready();
    let stream = format!("{}/api/v1/events/stream", served.url);
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            follow_stream(&stream, None, |id, entry| {
                let kind = entry["kind"].as_str().unwrap_or("").to_owned();
                seen.push((id.to_owned(), kind.clone(), entry));
                if seen.len() == 1 {
                    tx.send(()).unwrap();
                }
                kind != "run-finished"
            });
            seen
        })
    };
    // The stream starts from now: the earlier run is not replayed. A second run is followed.
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the stream delivered");
    let seen = listener.join().unwrap();
    let kinds: Vec<&str> = seen.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run-started"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "item-succeeded").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "healing-decision").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"attempt-failed"), "{kinds:?}");
    for (id, _, entry) in &seen {
        assert_eq!(entry["project"], "api");
        assert_eq!(entry["id"], id.as_str());
    }
    // Reconnecting with the id of the fourth message gives what came after it, no more.
    // Entries of different tables may come in another order (each table's rows in their own
    // order, merged by time; the live stream got each as it was committed), and so with other
    // ids: the entries themselves are compared.
    let (resume_at, _, _) = &seen[3];
    let without_id = |entry: &Value| {
        let mut entry = entry.clone();
        entry.as_object_mut().unwrap().remove("id");
        entry.to_string()
    };
    let mut again = Vec::new();
    let expected = seen.len() - 4;
    follow_stream(&stream, Some(resume_at), |_, entry| {
        again.push(without_id(&entry));
        again.len() < expected
    });
    let mut after: Vec<String> = seen[4..].iter().map(|(_, _, e)| without_id(e)).collect();
    after.sort();
    again.sort();
    assert_eq!(again, after);
}

/// The exposition of `url`'s `/metrics`, checked by `promtool check metrics`.
fn promtool_accepts(promtool: &std::path::Path, url: &str) -> String {
    let (status, text) = http("GET", &format!("{url}/metrics"), &[], None);
    assert_eq!(status, 200);
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
#[cfg_attr(
    missing_promtool,
    ignore = "needs promtool: source .ci/services.sh start"
)]
fn promtool_accepts_the_exposition_of_serve_and_of_a_live_run() {
    let Some(promtool) = tool("MIGRATIONPILOT_TEST_PROMTOOL", "promtool") else {
        return;
    };
    let work = Workspace::new();
    seeded(&work);
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    served.wait_ready();
    let text = promtool_accepts(&promtool, &served.url);
    assert!(
        text.contains(r#"migrationpilot_healing_events_total{project="api",action="retry"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"migrationpilot_attempts_total{project="api",stage="extract",outcome="failed"} 3"#
        ),
        "{text}"
    );
    let (status, open) = http(
        "GET",
        &format!("{}/metrics", served.url),
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
    );
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "OpenMetrics when asked: {open}");
    drop(served);

    // A run that waits for a file, served live while it waits.
    work.script("wait.sh", "while [ ! -f go ]; do sleep 0.05; done");
    work.file(
        "live.yaml",
        "project: live\nstages:\n  - name: hold\n    command: [\"./wait.sh\"]\n",
    );
    let live = Served::start(&work, &["run", "live.yaml", "--listen", "127.0.0.1:0"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = promtool_accepts(&promtool, &live.url);
        if text.contains(r#"migrationpilot_stage_concurrency{project="live",stage="hold"} 1"#) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the live run's stage never showed: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (_, projects) = json("GET", &format!("{}/api/v1/projects", live.url), &[], None);
    let live_project = projects
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "live")
        .unwrap();
    assert_eq!(live_project["live"], true, "{text}");
    work.file("go", "");
    let mut live = live;
    assert!(live.child.wait().unwrap().success());
}

#[test]
#[cfg_attr(
    missing_prometheus,
    ignore = "needs Prometheus: source .ci/services.sh start"
)]
fn prometheus_scrapes_serve_and_agrees_with_the_healing_history() {
    let Some(prometheus) = tool("MIGRATIONPILOT_TEST_PROMETHEUS", "prometheus") else {
        return;
    };
    let work = Workspace::new();
    seeded(&work);
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    served.wait_ready();
    let target = served.url.strip_prefix("http://").unwrap();
    work.file(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: migrationpilot\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(prometheus)
        .args([
            "--config.file=prometheus.yml",
            "--storage.tsdb.path=tsdb",
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=migrationpilot_healing_events_total%7Baction%3D%22retry%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let scraped = loop {
        let (status, body) = http("GET", &query, &[], None);
        if status == 200
            && let Ok(answer) = serde_json::from_str::<Value>(&body)
            && let Some(value) = answer["data"]["result"][0]["value"][1].as_str()
        {
            break value.parse::<f64>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = server.kill();
    let _ = server.wait();
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "api", "--json"])
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let retries = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "retry" && r["outcome"] == "succeeded")
        .count();
    assert_eq!(retries, 3);
    assert_eq!(scraped, retries as f64);
}

#[test]
fn a_commands_metric_lines_drive_the_seeds_queue_depth_strategy() {
    let work = Workspace::new();
    // The stage reports a deep queue, then waits (a bounded while) for the remedy.
    work.script(
        "consume.sh",
        r#"echo '{"metric": "queueDepth", "value": 12000}'
for _ in $(seq 1 600); do [ -f cleared ] && exit 0; sleep 0.1; done
echo "the queue was never cleared" >&2; exit 1"#,
    );
    work.script(
        "clear-dlq.sh",
        "echo \"$MIGRATIONPILOT_STRATEGY\" > cleared",
    );
    work.file(
        "pipeline.yaml",
        r#"
project: queues
stages:
  - name: consume
    command: ["./consume.sh"]
healing:
  metricsCollector: { metrics: [queueDepth] }
  strategies:
    - name: custom-fix
      priority: 50
      triggers: [{ type: metrics, metric: queueDepth, threshold: 10000 }]
      action: custom
      config: { command: ["./clear-dlq.sh"] }
      cooldown: 300000
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    assert_eq!(work.read("cleared").trim(), "custom-fix");
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "queues", "--json"])
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let fix = &history[0];
    assert_eq!(fix["strategy"], "custom-fix", "{history}");
    assert_eq!(fix["trigger"]["kind"], "metrics");
    assert_eq!(fix["trigger"]["observed"], 12000.0);
    assert_eq!(fix["outcome"], "succeeded");
    // The line is a metric, and also kept in the attempt's log.
    let logs = work
        .cmd()
        .args(["logs", &latest_run(&work, "queues")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&logs.stdout).contains("queueDepth"));
}

fn latest_run(work: &Workspace, project: &str) -> String {
    let runs = work
        .cmd()
        .args(["runs", "--project", project, "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    runs[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn beyond_loopback_every_api_request_needs_the_token_and_loopback_names_itself() {
    let work = Workspace::new();
    seeded(&work);
    let open = Served::start(
        &work,
        &["serve", "--listen", "0.0.0.0:0"],
        &[("MIGRATIONPILOT_TOKEN", TOKEN)],
    );
    let url = |path: &str| format!("{}{path}", open.url);
    let auth = bearer(TOKEN);
    assert_eq!(json("GET", &url("/api/v1/projects"), &[], None).0, 401);
    assert_eq!(
        json(
            "GET",
            &url("/api/v1/projects"),
            &[("Authorization", "Bearer not-the-token-at-all")],
            None
        )
        .0,
        403
    );
    assert_eq!(
        json(
            "GET",
            &url("/api/v1/projects"),
            &[("Authorization", auth.as_str())],
            None
        )
        .0,
        200
    );
    // The stream takes it in the query, as a browser's EventSource cannot send headers.
    let (status, _) = http_head(&url(&format!("/api/v1/events/stream?access_token={TOKEN}")));
    assert_eq!(status, 200);
    assert_eq!(http_head(&url("/api/v1/events/stream")).0, 401);
    assert_eq!(
        http("GET", &url("/metrics"), &[], None).0,
        200,
        "metrics stay open"
    );
    drop(open);

    let local = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    let (status, body) = json(
        "GET",
        &format!("{}/api/v1/projects", local.url),
        &[("Host", "attacker.example:80")],
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("attacker.example"));
}

/// The status of a GET whose answer may never end (a stream): only its head is read.
fn http_head(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).unwrap();
    let status = first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, first)
}

/// Schemathesis, run against the OpenAPI document `serve` serves, over a store with a
/// succeeded and a failed run: every operation but the never-ending event stream (tested
/// above) with all its checks (no 5xx, answers that match their schemas and documented
/// statuses, schema-valid requests accepted and schema-violating ones refused, auth that is not
/// ignored, 405 with `Allow` for other methods…) and its stateful phase along the document's
/// links. Bounded by examples per operation and a seed, so a failure reproduces; killed past a
/// deadline.
#[test]
#[cfg_attr(
    missing_schemathesis,
    ignore = "needs schemathesis: source .ci/services.sh start"
)]
fn schemathesis_finds_nothing_against_serves_own_document() {
    use std::io::Read;
    let Some(schemathesis) = tool("MIGRATIONPILOT_TEST_SCHEMATHESIS", "schemathesis") else {
        return;
    };
    let work = Workspace::new();
    seeded(&work);
    work.script("broken.sh", "echo 'schema mismatch' >&2; exit 1");
    work.file(
        "ledger.yaml",
        "project: ledger\nstages:\n  - name: load\n    command: [\"./broken.sh\"]\nhealing:\n  strategies:\n    - { name: page-oncall, triggers: [{ type: error }], action: notify, config: { severity: critical } }\n",
    );
    work.cmd().args(["run", "ledger.yaml"]).assert().code(1);
    let served = Served::start(
        &work,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("MIGRATIONPILOT_TOKEN", TOKEN)],
    );
    served.wait_ready();

    let auth = format!("Authorization: {}", bearer(TOKEN));
    let document = format!("{}/api/v1/openapi.json", served.url);
    let mut child = std::process::Command::new(&schemathesis)
        .args([
            "run",
            &document,
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "250",
            "--seed",
            "20261207",
            "--generation-database",
            "none",
            "--exclude-operation-id",
            "streamEvents",
            "--header",
            &auth,
            "--request-timeout",
            "10",
            "--no-color",
        ])
        // Whatever it writes beside its report stays in the workspace.
        .current_dir(work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", schemathesis.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    println!("{report}");
    match status {
        None => panic!("schemathesis ran past its 150 s deadline:\n{report}"),
        Some(status) => assert!(
            status.success() && report.contains("No issues found"),
            "schemathesis found failures ({status}):\n{report}\nserve said:\n{}",
            served.stop()
        ),
    }
}

/// The OpenAPI document names every action and trigger kind the healing history records, so a
/// client generated from it accepts every record.
#[test]
fn the_openapi_document_lists_every_action_and_trigger_kind() {
    use self_healing::event::{ActionKind, TriggerKind};
    let document: Value = serde_json::from_str(include_str!("../src/serve/openapi.json")).unwrap();
    let schemas = &document["components"]["schemas"];
    let listed = |schema: &str, property: &str| -> Vec<Value> {
        schemas[schema]["properties"][property]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema}.{property} has no enum"))
            .clone()
    };
    let actions: Vec<Value> = ActionKind::ALL
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    let triggers: Vec<Value> = TriggerKind::ALL
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    assert_eq!(listed("HealingRecord", "action"), actions);
    assert_eq!(listed("TriggerMatch", "kind"), triggers);
}

/// The OpenAPI document has a schema for every event kind, chosen by its `type`, so a client
/// generated from it reads every event the journal and the stream give. The kinds are read from
/// `EventKind`'s source, where adding one is done.
#[test]
fn the_openapi_document_lists_every_event_kind() {
    let source = include_str!("../../self-healing/src/event/mod.rs");
    let body = source
        .split_once("pub enum EventKind {")
        .expect("EventKind in event/mod.rs")
        .1;
    let body = &body[..body.find("\n}\n").expect("the enum's end")];
    let kinds: Vec<String> = body
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("    ")?;
            let name = name.split([' ', ',', '{', '(']).next()?;
            name.starts_with(|c: char| c.is_ascii_uppercase()).then(|| {
                // CamelCase to kebab-case, as serde's `rename_all` writes it.
                let mut kebab = String::new();
                for (i, c) in name.chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        kebab.push('-');
                    }
                    kebab.push(c.to_ascii_lowercase());
                }
                kebab
            })
        })
        .collect();
    assert!(kinds.len() >= 27, "{kinds:?}");
    let document: Value = serde_json::from_str(include_str!("../src/serve/openapi.json")).unwrap();
    let schemas = &document["components"]["schemas"];
    let listed: Vec<String> = schemas["EventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, sorted, "EventType against EventKind");
    let mapping = &schemas["Event"]["discriminator"]["mapping"];
    for kind in &kinds {
        let target = mapping[kind]
            .as_str()
            .unwrap_or_else(|| panic!("no discriminator mapping for {kind}"));
        let name = target.trim_start_matches("#/components/schemas/");
        assert_eq!(
            schemas[name]["properties"]["type"]["const"], *kind,
            "{name} is the schema of {kind}"
        );
        assert!(
            schemas["Event"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .any(|one| one["$ref"] == target),
            "{target} in Event's oneOf"
        );
    }
}
