//! Alerts end to end: the exact Slack and PagerDuty payloads from firing to resolved (in manual
//! mode, which stops remedies, not alerts), email through a real SMTP server, a real
//! Alertmanager receiving an alert and its end, and alerts a dead channel could not take
//! delivered once it is back, across a kill -9.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Served, Workspace, http, tool};

on_every_store!(
    alerts_a_dead_channel_could_not_take_are_delivered_when_it_is_back_even_after_kill_9,
);

/// A loopback HTTP receiver that keeps every request's path and JSON body and answers 202.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || serve_one(stream, &keep));
            }
        });
        Receiver { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The bodies received on `path`, waiting (a bounded while) until there are `n`.
    fn wait(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let bodies: Vec<Value> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, b)| b.clone())
                .collect();
            if bodies.len() >= n {
                return bodies;
            }
            assert!(Instant::now() < deadline, "{n} on {path}, got {bodies:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_one(stream: TcpStream, keep: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    keep.lock()
        .unwrap()
        .push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    let mut stream = stream;
    let _ = stream
        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
}

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

    let fired = hooks.wait("/pagerduty", 1);
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
    let events = hooks.wait("/pagerduty", 2);
    assert_eq!(
        events[1],
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "resolve",
            "dedup_key": "payroll/load/page",
        })
    );
    let slack = hooks.wait("/slack/T000/B000/secret", 2);
    assert!(
        slack[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("*[RESOLVED] payroll: page*")
    );

    let alerts = work
        .cmd()
        .args(["alerts", "--project", "payroll", "--json"])
        .output()
        .unwrap();
    let alerts: Value = serde_json::from_slice(&alerts.stdout).unwrap();
    assert_eq!(alerts[0]["alert"]["status"], "resolved");
    let delivered: Vec<&str> = alerts[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        delivered, ["delivered"; 4],
        "two channels, firing and resolved"
    );
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
    // The rollback's alert and the page fire (in one message or two, as they fall in the
    // group wait); both resolve with the next run.
    let blocks = |mails: &[String], status: &str| {
        mails
            .iter()
            .map(|m| m.matches(&format!("status:   {status}")).count())
            .sum::<usize>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mails = loop {
        let mails = read_mail();
        if blocks(&mails, "firing") == 2 && blocks(&mails, "resolved") == 2 {
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

    work.file("fixed", "");
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let deadline = Instant::now() + Duration::from_secs(60);
    while active("rollback").is_some() {
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
    let got = back.wait("/hook", 1);
    assert_eq!(got[0]["alerts"][0]["name"], "rollback");
    assert_eq!(got[0]["alerts"][0]["status"], "firing");
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
