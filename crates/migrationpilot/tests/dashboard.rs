//! The dashboard as a person sees it: headless Chromium, driven over the DevTools protocol,
//! loads `serve`'s page against a store with a finished, a failed and a running run; the DOM
//! after the scripts ran shows them, a running run moves to its end without a reload, the
//! steering forms work with the token and fail cleanly without it, and screenshots are written
//! to `target/tmp/` for a person to look at.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

mod common;
use common::{Served, Workspace, http, tool};

const TOKEN: &str = "dashboard-token-for-tests";

/// Headless Chromium with one page, driven over the DevTools protocol.
struct Browser {
    child: std::process::Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1366,900",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines();
        let browser = loop {
            let line = lines
                .next()
                .expect("Chromium said where DevTools listens")
                .unwrap();
            if let Some(at) = line.find("ws://") {
                break line[at..].trim().to_owned();
            }
        };
        // Keep draining Chromium's standard error so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let host = browser
            .strip_prefix("ws://")
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let page = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, list) = http("GET", &format!("http://{host}/json/list"), &[], None);
                let list: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
                if let Some(page) = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["type"] == "page")
                {
                    break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
                }
                assert!(Instant::now() < deadline, "no page target: {list}");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let (socket, _) = tungstenite::connect(page.as_str()).unwrap();
        Browser {
            child,
            socket,
            next: 0,
            _profile: profile,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if answer["id"] == id {
                return match answer["error"].is_null() {
                    true => Ok(answer["result"].clone()),
                    false => Err(answer["error"].clone()),
                };
            }
        }
    }

    /// Evaluates `script` (an expression, awaited if it is a promise) in the page. A page
    /// still loading (its context replaced under the call) is asked again.
    fn eval(&mut self, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let params =
                json!({ "expression": script, "awaitPromise": true, "returnByValue": true });
            match self.try_call("Runtime.evaluate", params) {
                Ok(result) => {
                    assert!(
                        result["exceptionDetails"].is_null(),
                        "{script}: {}",
                        result["exceptionDetails"]
                    );
                    return result["result"]["value"].clone();
                }
                Err(error)
                    if error["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("context")) =>
                {
                    assert!(Instant::now() < deadline, "{script}: {error}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("{script}: {error}"),
            }
        }
    }

    /// Waits in the page (up to 60 s) until `condition`, an expression, is truthy; returns
    /// its value.
    fn wait(&mut self, condition: &str) -> Value {
        let script = format!(
            "new Promise((resolve, reject) => {{
                const until = Date.now() + 60000;
                const poll = () => {{
                    let value;
                    try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
                    if (value) return resolve(value);
                    if (Date.now() > until) return reject(new Error('timed out waiting for: ' + {quoted}));
                    setTimeout(poll, 50);
                }};
                poll();
            }})",
            quoted = serde_json::to_string(condition).unwrap()
        );
        self.eval(&script)
    }

    /// Loads `url` and waits until the new page has loaded.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait(&format!(
            "location.href === {} && document.readyState === 'complete'",
            serde_json::to_string(url).unwrap()
        ));
    }

    /// A PNG of the page as it is, written to `target/tmp/NAME.png`.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (u32::from(value(*c)) << (18 - 6 * i)));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Three projects: `payroll` succeeded after retries, `ledger` failed, `inventory` is running
/// (its stage waits for the file `go`).
fn three_runs(work: &Workspace) -> std::process::Child {
    work.script(
        "flaky.sh",
        r#"echo "migrating $1"
if [ "$MIGRATIONPILOT_ATTEMPT" -lt 2 ]; then echo "read ECONNRESET" >&2; exit 1; fi"#,
    );
    work.file(
        "payroll.yaml",
        r#"
project: payroll
stages:
  - name: analysis
    command: ["./flaky.sh", "{item}"]
    items: [PAYROLL.cbl, LEDGER.cbl, TAXCALC.cbl]
  - name: validation
    command: ["true"]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 10 }
"#,
    );
    work.cmd().args(["run", "payroll.yaml"]).assert().success();
    work.script("broken.sh", "echo 'schema mismatch in ledger' >&2; exit 1");
    work.file(
        "ledger.yaml",
        "project: ledger\nstages:\n  - name: load\n    command: [\"./broken.sh\"]\nhealing:\n  strategies:\n    - { name: page-oncall, triggers: [{ type: error }], action: notify, config: { severity: critical }, runbook: \"https://wiki.example/ledger\" }\n",
    );
    work.cmd().args(["run", "ledger.yaml"]).assert().code(1);
    work.script(
        "hold.sh",
        "touch started; while [ ! -f go ]; do sleep 0.05; done; echo done",
    );
    work.file(
        "inventory.yaml",
        "project: inventory\nstages:\n  - name: copy\n    command: [\"./hold.sh\"]\n  - name: verify\n    command: [\"true\"]\n",
    );
    let running = work.spawn(&["run", "inventory.yaml"]);
    work.wait_for("started");
    running
}

#[test]
#[cfg_attr(
    missing_chromium,
    ignore = "needs Chromium: source .ci/services.sh start"
)]
fn chromium_shows_the_runs_follows_a_live_one_and_steers_with_the_token() {
    let Some(chromium) = tool("MIGRATIONPILOT_TEST_CHROMIUM", "chromium") else {
        return;
    };
    let work = Workspace::new();
    let mut running = three_runs(&work);
    let served = Served::start(
        &work,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("MIGRATIONPILOT_TOKEN", TOKEN)],
    );
    served.wait_ready();
    let mut browser = Browser::launch(&chromium, &format!("{}/?project=payroll", served.url));

    // Projects with their latest run's status.
    let statuses = browser.wait(
        "document.querySelectorAll('#projects > li[data-project]').length === 3 &&
         Object.fromEntries([...document.querySelectorAll('#projects > li[data-project]')]
            .map(li => [li.dataset.project, li.dataset.status]))",
    );
    assert_eq!(
        statuses,
        json!({ "payroll": "succeeded", "ledger": "failed", "inventory": "running" })
    );
    // The selected project's run, its stages, and its healing records.
    let stages = browser.wait(
        "document.querySelectorAll('#stages > li.stage').length === 2 &&
         [...document.querySelectorAll('#stages > li.stage')].map(s => s.dataset.stage + ':' + s.dataset.status)",
    );
    assert_eq!(
        stages,
        json!(["analysis:succeeded", "validation:succeeded"])
    );
    let records = browser.wait(
        "document.querySelectorAll('#healing tbody tr.record').length >= 3 &&
         [...document.querySelectorAll('#healing tbody tr.record')].map(r =>
            r.querySelector('td.action').textContent.trim() + ' ' + r.dataset.outcome)",
    );
    assert_eq!(
        records,
        json!(["retry succeeded", "retry succeeded", "retry succeeded"])
    );
    let metrics = browser.wait("document.querySelector('#metrics .metric') && document.querySelector('#metrics').textContent");
    assert!(metrics.as_str().unwrap().contains('3'), "{metrics}");
    // The attempts are listed without their output, which loads when one is opened.
    let attempts = browser.wait(
        "document.querySelectorAll('#log-list li[data-log]').length >= 6 &&
         document.querySelectorAll('#log-list li[data-log]').length",
    );
    assert!(attempts.as_u64().unwrap() >= 6, "{attempts}");
    browser.eval("document.querySelector('#log-list li[data-log] button').click(); true");
    let output = browser.wait(
        "document.querySelector('#log-view pre') && document.querySelector('#log-view').textContent",
    );
    assert!(output.as_str().unwrap().contains("migrating "), "{output}");
    browser.screenshot("dashboard-finished-run");

    // The failed run shows its error.
    browser.open(&format!("{}/?project=ledger", served.url));
    let error = browser.wait(
        "document.querySelector('#runs > li[data-status=failed] .err') &&
         document.querySelector('#runs > li[data-status=failed] .err').textContent",
    );
    assert!(
        error.as_str().unwrap().contains("schema mismatch"),
        "{error}"
    );
    // The strategy's page with its runbook as a link, and the run's failure with what to do.
    let alerts = browser.wait(
        "document.querySelectorAll('#alerts tr.alert-row[data-status=firing][data-severity=critical]').length === 2 &&
         [...document.querySelectorAll('#alerts tr.alert-row')].map((r) => [r.dataset.fingerprint,
           r.querySelector('.runbook a') ? r.querySelector('.runbook a').href : r.textContent]).sort()",
    );
    assert_eq!(alerts[0][0], json!("ledger/-/run-failed"));
    assert!(
        alerts[0][1].as_str().unwrap().contains("What to do:"),
        "{alerts}"
    );
    assert_eq!(
        alerts[1],
        json!(["ledger/load/page-oncall", "https://wiki.example/ledger"])
    );
    browser.screenshot("dashboard-failed-run");

    // The running run moves to its end without a reload.
    browser.open(&format!("{}/?project=inventory", served.url));
    browser
        .wait("document.querySelector('#stages > li.stage[data-stage=copy][data-status=running]')");
    browser.wait("document.querySelector('#live').dataset.state === 'live'");
    browser.screenshot("dashboard-running-run");
    browser.eval("window.__sameDocument = true");
    work.file("go", "");
    assert!(running.wait().unwrap().success());
    browser.wait(
        "document.querySelector('#runs > li[data-status=succeeded]') &&
         document.querySelector('#stages > li.stage[data-stage=verify][data-status=succeeded]')",
    );
    assert_eq!(
        browser.eval("window.__sameDocument === true"),
        json!(true),
        "no reload"
    );

    // Steering: refused cleanly without the token, done with it.
    let steer = |browser: &mut Browser| -> (String, String) {
        browser.eval(
            "document.querySelector('#steer-result').dataset.ok = 'pending';
             document.querySelector('#steer-disable [name=reason]').value = 'freeze from the dashboard';
             document.querySelector('#steer-disable').requestSubmit(); true",
        );
        let answer = browser.wait(
            "document.querySelector('#steer-result').dataset.ok !== 'pending' &&
             [document.querySelector('#steer-result').dataset.ok, document.querySelector('#steer-result').textContent]",
        );
        (
            answer[0].as_str().unwrap().to_owned(),
            answer[1].as_str().unwrap().to_owned(),
        )
    };
    browser.eval("document.querySelector('#token').value = ''; true");
    let (ok, text) = steer(&mut browser);
    assert_eq!(ok, "false", "{text}");
    assert!(text.contains("401"), "{text}");
    let mode = work
        .cmd()
        .args(["health", "--project", "inventory"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&mout(&mode)).contains("freeze"));
    browser.screenshot("dashboard-steering-refused");

    browser.eval(&format!(
        "const t = document.querySelector('#token'); t.value = '{TOKEN}';
         t.dispatchEvent(new Event('input')); true"
    ));
    let (ok, text) = steer(&mut browser);
    assert_eq!(ok, "true", "{text}");
    let mode = work
        .cmd()
        .args(["health", "--project", "inventory"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&mout(&mode)).contains("freeze from the dashboard"));
    browser.wait("document.querySelector('#projects > li[data-project=inventory] .tag-manual')");
    browser.screenshot("dashboard-steering-done");
}

fn mout(output: &std::process::Output) -> Vec<u8> {
    output.stdout.clone()
}
