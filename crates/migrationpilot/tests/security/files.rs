//! Pipeline and items files are bounded, and never a FIFO or a device: a file that would never
//! end, or fill the memory, is refused with what is wrong and where.

use std::fs;

use predicates::prelude::*;

use super::common::Workspace;

#[test]
fn a_pipeline_file_that_is_a_fifo_a_device_or_too_large_is_refused() {
    let work = Workspace::new();
    let fifo = work.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    work.cmd()
        .args(["validate", "pipe.yaml"])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a regular file"));
    std::os::unix::fs::symlink("/dev/zero", work.path().join("zero.yaml")).unwrap();
    work.cmd()
        .args(["validate", "zero.yaml"])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a regular file"));
    let mut huge = String::from("project: p\nstages:\n  - name: a\n    command: [\"true\"]\n");
    while huge.len() <= 4 * 1024 * 1024 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    work.file("huge.yaml", &huge);
    work.cmd()
        .args(["validate", "huge.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("larger than 4 MiB"));
}

#[test]
fn an_items_file_that_is_a_fifo_or_holds_an_endless_line_fails_its_stage_with_the_reason() {
    let work = Workspace::new();
    let made = std::process::Command::new("mkfifo")
        .arg(work.path().join("items.fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let line = "x".repeat(64 * 1024 + 10);
    fs::write(work.path().join("items.long"), format!("ok\n{line}\n")).unwrap();
    for (items, why) in [
        ("items.fifo", "is not a regular file"),
        ("items.long", "line 2 is longer than 64 KiB"),
    ] {
        work.file(
            "pipeline.yaml",
            &format!(
                "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n    items: {{ file: {items} }}\n"
            ),
        );
        work.cmd()
            .args(["run", "pipeline.yaml"])
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .code(1)
            .stdout(predicate::str::contains(why));
    }
}
