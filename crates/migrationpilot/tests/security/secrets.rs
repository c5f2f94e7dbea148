//! No secret a stage receives is shown or stored in clear: not one it inherits, not one its
//! `env:` gives it, not one the file names in `secrets:`, not the steering token.

use std::fs;

use predicates::prelude::*;

use super::common::Workspace;

const INHERITED: &str = "inherited-secret-456";
const FROM_ENV_KEY: &str = "stage-pass-789xyz";
const NAMED: &str = "named-in-secrets-0042";
const IN_ITEM: &str = "tok-item-secret-31337";

/// Every byte the store keeps: the database and its write-ahead log.
fn store_bytes(work: &Workspace) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["journal.db", "journal.db-wal"] {
        bytes.extend(fs::read(work.path().join(name)).unwrap_or_default());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// A stage that prints every secret it was given on both streams (and its item, one itself),
/// then fails, with a custom remedy that writes the item it was handed to a file.
fn leaky(work: &Workspace) {
    work.file(
        "pipeline.yaml",
        &format!(
            r#"project: leaky
secrets: [PLAIN_NAME]
stages:
  - name: load
    command: ["sh", "-c", "echo \"out $INHERITED_TOKEN $DB_PASS $PLAIN_NAME $1\"; echo \"err $INHERITED_TOKEN $DB_PASS $PLAIN_NAME $1\" >&2; exit 1", "sh", "{{item}}"]
    items: ["${{ITEM_TOKEN}}"]
    env: {{ DB_PASS: "{FROM_ENV_KEY}" }}
healing:
  strategies:
    - name: remedy
      triggers: [ {{ type: error, pattern: "err" }} ]
      action: custom
      config: {{ command: ["sh", "-c", "printf '%s' \"$MIGRATIONPILOT_ITEM\" > remedy-item.txt; exit 1"] }}
"#
        ),
    );
}

fn secrets_env(cmd: &mut assert_cmd::Command) -> &mut assert_cmd::Command {
    cmd.env("INHERITED_TOKEN", INHERITED)
        .env("PLAIN_NAME", NAMED)
        .env("ITEM_TOKEN", IN_ITEM)
}

#[test]
fn no_secret_a_stage_received_is_shown_or_stored() {
    let work = Workspace::new();
    leaky(&work);
    let mut shown = Vec::new();
    for json in [false, true] {
        let mut run = work.cmd();
        secrets_env(&mut run).args(["run", "pipeline.yaml"]);
        if json {
            run.arg("--json-events");
        }
        let output = run.output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        shown.extend(output.stdout);
        shown.extend(output.stderr);
    }
    let run_id = {
        let output = work
            .cmd()
            .args(["runs", "--project", "leaky", "--json"])
            .output()
            .unwrap();
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        runs[0]["id"].as_str().unwrap().to_owned()
    };
    for args in [
        &["runs"][..],
        &["runs", "show", &run_id],
        &["runs", "show", &run_id, "--json"],
        &["logs", &run_id],
        &["logs", &run_id, "--json"],
        &["healing", "history", "--project", "leaky"],
        &["healing", "history", "--project", "leaky", "--json"],
    ] {
        let output = work.cmd().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        shown.extend(output.stdout);
        shown.extend(output.stderr);
    }
    let shown_text = String::from_utf8_lossy(&shown).into_owned();
    let kept = store_bytes(&work);
    for secret in [INHERITED, FROM_ENV_KEY, NAMED, IN_ITEM] {
        assert!(
            !shown_text.contains(secret),
            "{secret} shown:\n{shown_text}"
        );
        assert!(!contains(&kept, secret), "{secret} kept in the store");
    }
    assert!(shown_text.contains("out *** *** *** ***"), "{shown_text}");
    // The remedy, like the command, works with the real values.
    assert_eq!(work.read("remedy-item.txt"), IN_ITEM);
}

#[test]
fn values_shorter_than_six_characters_are_not_masked() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        "project: short\nstages:\n  - name: a\n    command: [\"sh\", \"-c\", \"echo \\\"pin $SHORT_PIN\\\" >&2; exit 1\"]\n",
    );
    work.cmd()
        .env("SHORT_PIN", "12345")
        .args(["run", "pipeline.yaml"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("pin 12345"));
}

#[test]
fn a_misplaced_secret_is_not_echoed_by_the_file_diagnostics() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n    concurrency: ${API_TOKEN}\n",
    );
    for command in ["validate", "run"] {
        work.cmd()
            .env("API_TOKEN", "tok-should-not-echo-77")
            .args([command, "pipeline.yaml"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("tok-should-not-echo-77").not());
    }
}

#[test]
fn a_check_target_is_shown_and_kept_without_its_secrets() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        r#"project: checked
stages:
  - name: a
    command: ["true"]
healing:
  healthMonitor:
    checks:
      - name: api
        type: http
        endpoint: "http://127.0.0.1:9/v1/key/pathsecret/health?token=querysecret&region=eu"
        interval: 10s
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let output = work
        .cmd()
        .args(["health", "--project", "checked"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("http://127.0.0.1:9/v1/key/***/health?token=***&region=eu"),
        "{shown}"
    );
    let kept = store_bytes(&work);
    for secret in ["pathsecret", "querysecret"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!contains(&kept, secret), "{secret} kept");
    }
}

#[test]
fn the_steering_token_is_nowhere_a_stage_can_read_it() {
    let work = Workspace::new();
    let token = "steer-token-abcdefghijklmnop";
    work.file(
        "pipeline.yaml",
        r#"project: steered
stages:
  - name: peek
    command: ["sh", "-c", "env > seen-env.txt; tr '\\0' '\\n' < /proc/$PPID/environ > seen-parent.txt; echo \"$MIGRATIONPILOT_TOKEN\""]
"#,
    );
    let output = work
        .cmd()
        .env("MIGRATIONPILOT_TOKEN", token)
        .args(["run", "pipeline.yaml", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for file in ["seen-env.txt", "seen-parent.txt"] {
        let seen = work.read(file);
        assert!(!seen.is_empty(), "{file} was not written");
        assert!(!seen.contains(token), "{file}: {seen}");
    }
    assert!(!contains(&store_bytes(&work), token));
}
