//! Alerts end to end: the exact Slack and PagerDuty payloads from firing to resolved (in manual
//! mode, which stops remedies, not alerts), email through a real SMTP server, a real
//! Alertmanager receiving an alert and its end, and alerts a dead channel could not take
//! delivered once it is back, across a kill -9.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Receiver, Served, Workspace, http, tool};

on_every_store!(
    alerts_a_dead_channel_could_not_take_are_delivered_when_it_is_back_even_after_kill_9,
);

/// A pipeline whose stage fails critically unless the file `fixed` exists; a `page` strategy
/// notifies critically on it and a rollback strategy would roll back.
fn paging_pipeline(work: &Workspace, channels: &str) {
    work.script(
        "load.sh",
        r#"[ -f fixed ] && exit 0
echo '{"message":"ledger totals do not match","severity":"critical"}' >&2; exit 1"#,
    );
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: payroll
stages:
  - name: load
    command: ["./load.sh"]
healing:
  strategies:
    - name: page
      triggers: [{{ type: error, severity: critical }}]
      action: notify
      config: {{ severity: critical, message: "the ledger needs a person" }}
    - name: roll-back
      priority: 10
      triggers: [{{ type: error, severity: critical }}]
      action: rollback
  alerts:
    groupWait: 100
    channels:
{channels}
"#
        ),
    );
}

#[test]
fn slack_and_pagerduty_get_the_alert_in_manual_mode_then_its_resolution_under_one_key() {
    let hooks = Receiver::start();
    let work = Workspace::new();
    paging_pipeline(
        &work,
        &format!(
            "      - {{ type: slack, webhook: \"{}\" }}\n      - {{ type: pagerduty, routingKey: \"${{PD_KEY}}\", url: \"{}\" }}\n",
            hooks.url("/slack/T000/B000/secret"),
            hooks.url("/pagerduty")
        ),
    );
    // Manual mode: remedies stop, alerts do not.
    work.cmd()
        .args([
            "healing",
            "disable",
            "--project",
            "payroll",
            "--reason",
            "change freeze",
        ])
        .assert()
        .success();
    work.cmd()
        .args(["run", "pipeline.yaml"])
        .env("PD_KEY", "R0UT1NGKEY")
        .assert()
        .code(1);
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "payroll", "--json"])
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let outcome = |strategy: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["strategy"] == strategy)
            .map(|r| {
                (
                    r["outcome"].as_str().unwrap().to_owned(),
                    r["detail"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    assert_eq!(outcome("roll-back").0, "would-have");
    let (page, detail) = outcome("page");
    assert_eq!(page, "succeeded");
    assert!(detail.contains("manual mode"), "{detail}");

    // The page, and the run's failure (a critical page of its own, under its own key).
    let of = |events: Vec<Value>, key: &str| -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| e["dedup_key"] == key)
            .collect()
    };
    let fired = of(hooks.wait("/pagerduty", 2), "payroll/load/page");
    let failed = of(hooks.wait("/pagerduty", 2), "payroll/-/run-failed");
    assert_eq!(failed[0]["payload"]["severity"], "critical");
    assert_eq!(
        fired[0],
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "dedup_key": "payroll/load/page",
            "payload": {
                "summary": fired[0]["payload"]["summary"],
                "source": "payroll",
                "severity": "critical",
                "timestamp": fired[0]["payload"]["timestamp"],
                "component": "load",
                "group": "payroll",
                "class": "page",
                "custom_details": {
                    "message": "the ledger needs a person",
                    "value": null,
                    "strategy": "page",
                },
            },
        })
    );
    assert!(
        fired[0]["payload"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let slack = hooks.wait("/slack/T000/B000/secret", 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(text.starts_with("*[CRITICAL] payroll: page*"), "{text}");
    assert!(text.contains("project `payroll` · stage `load`"), "{text}");
    assert!(text.contains("the ledger needs a person"), "{text}");

    // Fixed, healing back on: the next run succeeds and resolves the alert it left firing.
    work.file("fixed", "");
    work.cmd()
        .args(["healing", "enable", "--project", "payroll"])
        .assert()
        .success();
    work.cmd()
        .args(["run", "pipeline.yaml"])
        .env("PD_KEY", "R0UT1NGKEY")
        .assert()
        .success();
    let events = of(hooks.wait("/pagerduty", 4), "payroll/load/page");
    assert_eq!(
        events[1],
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "resolve",
            "dedup_key": "payroll/load/page",
        })
    );
    let resolved = |text: &str| text.contains("*[RESOLVED] payroll: page*");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hooks
        .wait("/slack/T000/B000/secret", 1)
        .iter()
        .any(|m| resolved(m["text"].as_str().unwrap()))
    {
        assert!(
            Instant::now() < deadline,
            "the page never resolved in Slack"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let alerts = work
        .cmd()
        .args(["alerts", "--project", "payroll", "--json"])
        .output()
        .unwrap();
    let alerts: Value = serde_json::from_slice(&alerts.stdout).unwrap();
    let page = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert"]["name"] == "page")
        .unwrap();
    assert_eq!(page["alert"]["status"], "resolved");
    let delivered: Vec<&str> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        delivered, ["delivered"; 4],
        "two channels, firing and resolved"
    );
    // The run's failure paged too, and resolved with the success.
    let failed = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert"]["name"] == "run-failed")
        .unwrap();
    assert_eq!(failed["alert"]["status"], "resolved");
}

#[test]
#[cfg_attr(
    missing_aiosmtpd,
    ignore = "needs aiosmtpd: source .ci/services.sh start"
)]
fn a_critical_alert_and_its_resolution_arrive_by_email_through_a_real_smtp_server() {
    let Some(python) = tool("MIGRATIONPILOT_TEST_AIOSMTPD", "python3-with-aiosmtpd") else {
        return;
    };
    let work = Workspace::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = work.path().join("maildir");
    let mut smtp = std::process::Command::new(&python)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
            maildir.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the SMTP server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    paging_pipeline(
        &work,
        &format!(
            "      - {{ type: email, recipients: [\"oncall@example.com\"], smtp: {{ host: 127.0.0.1, port: {port}, from: \"MigrationPilot <alerts@example.com>\", tls: none }} }}\n"
        ),
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(3);
    work.file("fixed", "");
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();

    let read_mail = || -> Vec<String> {
        let mut mails: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(maildir.join("new"))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            (
                                e.metadata().unwrap().modified().unwrap(),
                                std::fs::read_to_string(e.path()).unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        mails.sort();
        mails.into_iter().map(|(_, m)| m).collect()
    };
    // The rollback's alert, the page and the run's failure fire (in one message or more, as
    // they fall in the group wait); all resolve with the next run.
    let blocks = |mails: &[String], status: &str| {
        mails
            .iter()
            .map(|m| m.matches(&format!("status:   {status}")).count())
            .sum::<usize>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mails = loop {
        let mails = read_mail();
        if blocks(&mails, "firing") == 3 && blocks(&mails, "resolved") == 3 {
            break mails;
        }
        assert!(Instant::now() < deadline, "mail: {mails:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = smtp.kill();
    let _ = smtp.wait();
    let firing = mails
        .iter()
        .find(|m| m.contains("status:   firing") && m.contains("alert:    rollback"))
        .unwrap();
    let subject = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        subject(firing).starts_with("[CRITICAL] payroll: "),
        "{firing}"
    );
    assert!(firing.contains("To: oncall@example.com"), "{firing}");
    assert!(firing.contains("stage:    load"), "{firing}");
    assert!(firing.contains("ledger totals do not match"), "{firing}");
    let resolved = mails
        .iter()
        .find(|m| m.contains("status:   resolved"))
        .unwrap();
    assert!(
        subject(resolved).starts_with("[RESOLVED] payroll: "),
        "{resolved}"
    );
    assert!(resolved.contains("ended:"), "{resolved}");
}

#[test]
#[cfg_attr(
    missing_alertmanager,
    ignore = "needs Alertmanager: source .ci/services.sh start"
)]
fn a_real_alertmanager_receives_an_alert_and_then_its_end() {
    let Some(alertmanager) = tool(
        "MIGRATIONPILOT_TEST_ALERTMANAGER",
        "prometheus-alertmanager",
    ) else {
        return;
    };
    let work = Workspace::new();
    work.file(
        "alertmanager.yml",
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(alertmanager)
        .args([
            "--config.file=alertmanager.yml",
            "--storage.path=am-data",
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=",
        ])
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http("GET", &api, &[], None).0 != 200 {
        assert!(Instant::now() < deadline, "Alertmanager never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    paging_pipeline(
        &work,
        &format!("      - {{ type: alertmanager, url: \"http://127.0.0.1:{port}\" }}\n"),
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(3);
    let active = |name: &str| -> Option<Value> {
        let (_, body) = http("GET", &api, &[], None);
        let alerts: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        alerts
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let rollback = loop {
        if let Some(alert) = active("rollback") {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "the alert never reached Alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rollback["labels"]["project"], "payroll");
    assert_eq!(rollback["labels"]["stage"], "load");
    assert_eq!(rollback["labels"]["severity"], "critical");
    assert_eq!(rollback["status"]["state"], "active");
    assert!(
        rollback["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("rolling back")
    );

    // The run's failure pages too, on the project, with what to do in its description.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        if let Some(alert) = active("run-failed") {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "run-failed never reached Alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["labels"]["severity"], "critical");
    assert_eq!(failed["labels"].get("stage"), None);
    assert!(
        failed["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("What to do:"),
        "{failed}"
    );

    work.file("fixed", "");
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let deadline = Instant::now() + Duration::from_secs(60);
    while active("rollback").is_some() || active("run-failed").is_some() {
        assert!(
            Instant::now() < deadline,
            "the alert never ended in Alertmanager"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
}

fn alerts_a_dead_channel_could_not_take_are_delivered_when_it_is_back_even_after_kill_9(
    work: Workspace,
) {
    // A port with nothing listening: the channel refuses. A receiver that never answers: the
    // channel hangs. Both take the same alerts as a working one.
    let refusing = TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing_port = refusing.local_addr().unwrap().port();
    drop(refusing);
    let hanging = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hanging.incoming().flatten() {
            held.push(stream);
        }
    });
    let working = Receiver::start();
    // The compensation waits for a file, so the run can be killed mid-rollback, its alert owed.
    work.script(
        "undo.sh",
        "touch undoing; while [ ! -f go ]; do sleep 0.05; done",
    );
    work.script(
        "load.sh",
        r#"echo '{"message":"ledger totals do not match","severity":"critical"}' >&2; exit 1"#,
    );
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: owed
stages:
  - name: extract
    command: ["true"]
    rollback: ["./undo.sh"]
  - name: load
    command: ["./load.sh"]
healing:
  strategies:
    - name: roll-back
      triggers: [{{ type: error, severity: critical }}]
      action: rollback
  alerts:
    groupWait: 100
    channels:
      - {{ type: webhook, name: refusing, url: "http://127.0.0.1:{refusing_port}/hook" }}
      - {{ type: webhook, name: hanging, url: "http://127.0.0.1:{hanging_port}/hook" }}
      - {{ type: webhook, name: working, url: "{}" }}
"#,
            working.url("/hook")
        ),
    );
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("undoing");
    // The working channel gets the rollback alert while the others fail or hang.
    let got = working.wait("/hook", 1);
    assert_eq!(got[0]["alerts"][0]["name"], "rollback");
    let owed = || -> Vec<(String, String, i64)> {
        work.journal("SELECT channel, status, attempts FROM deliveries ORDER BY channel")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = owed();
        let refused_once = rows
            .iter()
            .any(|(c, s, a)| c == "refusing" && s == "owed" && *a >= 1);
        if refused_once {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let rows = owed();
    assert!(
        rows.contains(&("working".into(), "delivered".into(), 1)),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|(c, s, _)| c == "refusing" && s == "owed"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|(c, s, _)| c == "hanging" && s == "owed"),
        "{rows:?}"
    );

    // The refusing channel comes back; `serve` delivers what the killed run owed it.
    let back = Receiver::on(TcpListener::bind(("127.0.0.1", refusing_port)).unwrap());
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    // (It also tells every channel the killed run is lost.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let rollback = loop {
        let found = back
            .wait("/hook", 1)
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["name"] == "rollback");
        if let Some(alert) = found {
            break alert;
        }
        assert!(
            Instant::now() < deadline,
            "the owed rollback alert never came"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(rollback["status"], "firing");
    // ... and records it delivered (stopping it before then would leave it owed, to be sent
    // again: delivery is at least once).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !owed()
        .iter()
        .any(|(c, s, a)| c == "refusing" && s == "delivered" && *a >= 2)
    {
        assert!(Instant::now() < deadline, "{:?}", owed());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Serve journals its deliveries as a run does.
    let outcomes = || -> Vec<(String,)> {
        work.journal(
            "SELECT kind FROM events WHERE kind LIKE 'alert-%' AND body LIKE '%\"refusing\"%' ORDER BY id",
        )
    };
    while !outcomes().contains(&("alert-delivered".to_owned(),)) {
        assert!(Instant::now() < deadline, "{:?}", outcomes());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(served);
}

/// What a webhook received, in order: `name status severity` per alert.
fn received(hooks: &Receiver) -> Vec<String> {
    hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            format!(
                "{} {} {}",
                a["name"].as_str().unwrap_or("?"),
                a["status"].as_str().unwrap_or("?"),
                a["severity"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Waits (a bounded while) until the webhook received an alert line `line`.
fn wait_line(hooks: &Receiver, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !received(hooks).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "never received `{line}`: {:?}",
            received(hooks)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stage that fails on an error no retry cures (exit 3, "schema mismatch") until `fixed`
/// exists, with healing in manual mode and nothing but the built-in alerts: the run pages, and
/// the project's next successful run resolves the page.
#[test]
fn a_failed_run_pages_even_in_manual_mode_and_the_next_success_resolves_it() {
    let hooks = Receiver::start();
    let work = Workspace::new();
    work.script(
        "load.sh",
        "[ -f fixed ] && exit 0\necho 'ERROR: schema mismatch in table ledger' >&2; exit 3",
    );
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: ledger
stages:
  - name: load
    command: ["./load.sh"]
healing:
  enabled: false
  alerts:
    groupWait: 100
    runbook: https://wiki.example/ledger
    channels:
      - {{ type: webhook, url: "{}" }}
"#,
            hooks.url("/hook")
        ),
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(1);
    wait_line(&hooks, "run-failed firing critical");
    let page = hooks
        .wait("/hook", 1)
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["name"] == "run-failed")
        .unwrap();
    assert_eq!(page["project"], "ledger");
    assert_eq!(page["runbook"], "https://wiki.example/ledger");
    assert!(
        page["message"]
            .as_str()
            .unwrap()
            .contains("schema mismatch"),
        "{page}"
    );
    let shown = work
        .cmd()
        .args(["alerts", "--project", "ledger"])
        .assert()
        .success();
    let shown = String::from_utf8_lossy(&shown.get_output().stdout).into_owned();
    assert!(shown.contains("ledger/-/run-failed"), "{shown}");
    assert!(
        shown.contains("runbook: https://wiki.example/ledger"),
        "{shown}"
    );

    work.file("fixed", "");
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    wait_line(&hooks, "run-failed resolved critical");
}

/// A run of one second whose error rate is far over its critical level fires at its end,
/// though no sample interval (5 s) passed during it.
#[test]
fn a_one_second_run_over_an_error_rate_threshold_fires() {
    let hooks = Receiver::start();
    let work = Workspace::new();
    // Each item fails its first attempt and passes its second: an error rate of 0.5.
    work.script(
        "copy.sh",
        "[ -f \"done-$1\" ] && exit 0\ntouch \"done-$1\"; echo 'read ECONNRESET' >&2; exit 1",
    );
    let items: Vec<String> = (0..12).map(|i| format!("\"b{i}\"")).collect();
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: short
stages:
  - name: copy
    command: ["./copy.sh", "{{item}}"]
    items: [{}]
    concurrency: 4
    retryPolicy: {{ maxAttempts: 2, initialDelay: 10ms, retryableErrors: ["ECONNRESET"] }}
healing:
  alerts:
    groupWait: 100
    thresholds:
      - {{ metric: errorRate, warning: 0.2, critical: 0.4, runbook: https://wiki.example/errors }}
    channels:
      - {{ type: webhook, url: "{}" }}
"#,
            items.join(", "),
            hooks.url("/hook")
        ),
    );
    let started = Instant::now();
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the run is shorter than one sample interval"
    );
    wait_line(&hooks, "errorRate firing critical");
    let fired: Vec<Value> = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["name"] == "errorRate" && a["status"] == "firing")
        .collect();
    assert!(
        fired
            .iter()
            .all(|a| a["runbook"] == "https://wiki.example/errors"
                && a["value"].as_f64().unwrap() >= 0.4),
        "{fired:#?}"
    );
}

/// A run killed with SIGKILL is reported lost by `serve` within its lease (10 s) and 30 s, and
/// resumed, the alert resolves.
#[test]
fn a_killed_run_is_told_of_by_serve_or_the_next_run_and_a_resume_or_success_ends_it() {
    let hooks = Receiver::start();
    let work = Workspace::new();
    work.script("slow.sh", "[ -f pass ] && exit 0\ntouch started; sleep 60");
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: nightly
stages:
  - name: move
    command: ["./slow.sh"]
healing:
  alerts:
    groupWait: 100
    builtin:
      runLost: {{ runbook: https://wiki.example/lost }}
    channels:
      - {{ type: webhook, url: "{}" }}
"#,
            hooks.url("/hook")
        ),
    );
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("started");
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = Instant::now();
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    wait_line(&hooks, "run-lost firing critical");
    assert!(
        killed.elapsed() < Duration::from_secs(40),
        "reported {:?} after the kill",
        killed.elapsed()
    );
    let lost = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| a["name"] == "run-lost")
        .unwrap();
    assert_eq!(lost["runbook"], "https://wiki.example/lost");
    assert!(
        lost["message"].as_str().unwrap().contains("--resume"),
        "{lost}"
    );
    drop(served);
    assert_eq!(
        received(&hooks)
            .iter()
            .filter(|l| l.starts_with("run-lost firing"))
            .count(),
        1,
        "told of once"
    );

    work.file("pass", "");
    work.cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .assert()
        .success();
    wait_line(&hooks, "run-lost resolved critical");

    // Another run killed, and no serve: the project's next run tells of it as it starts.
    std::fs::remove_file(work.path().join("pass")).unwrap();
    std::fs::remove_file(work.path().join("started")).unwrap();
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("started");
    run.kill().unwrap();
    run.wait().unwrap();
    work.file("pass", "");
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let lost: Vec<String> = received(&hooks)
        .into_iter()
        .filter(|l| l.starts_with("run-lost"))
        .collect();
    assert_eq!(
        lost,
        [
            "run-lost firing critical",
            "run-lost resolved critical",
            "run-lost firing critical",
            "run-lost resolved critical"
        ],
        "the second lost run is told of, and the fresh run's success resolves it"
    );
}
