//! The store is ours or refused, and run ids are never reused.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use predicates::prelude::*;

use super::common::Workspace;

const PIPELINE: &str = "project: vault\nstages:\n  - name: load\n    command: [\"true\"]\n";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_store_and_the_folders_made_for_it_are_its_owners_alone() {
    let work = Workspace::new();
    work.file("pipeline.yaml", PIPELINE);
    let store = work.path().join("state/deep/journal.db");
    work.cmd()
        .env(
            "MIGRATIONPILOT_STORE",
            format!("sqlite://{}", store.display()),
        )
        .args(["run", "pipeline.yaml"])
        .assert()
        .success();
    assert_eq!(mode(&work.path().join("state")), 0o700);
    assert_eq!(mode(&work.path().join("state/deep")), 0o700);
    let made = files(&work.path().join("state/deep"));
    assert!(made.contains(&"journal.db".to_owned()), "{made:?}");
    for file in made {
        let path = work.path().join("state/deep").join(&file);
        assert_eq!(mode(&path), 0o600, "{file}");
    }
}

/// An SQLite database of another program, with a table of its own.
fn foreign_database(path: &Path) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection;
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let mut connection = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            sqlx::raw_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');")
                .execute(&mut connection)
                .await
                .unwrap();
            connection.close().await.unwrap();
        });
}

#[test]
fn another_programs_database_is_refused_and_left_byte_for_byte_as_it_was() {
    let work = Workspace::new();
    work.file("pipeline.yaml", PIPELINE);
    let other = work.path().join("app/app.db");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    foreign_database(&other);
    let before = fs::read(&other).unwrap();
    let url = format!("sqlite://{}", other.display());
    for args in [
        &["runs"][..],
        &["health", "--project", "vault"],
        &["run", "pipeline.yaml"],
        &["healing", "disable", "--project", "vault"],
    ] {
        work.cmd()
            .env("MIGRATIONPILOT_STORE", &url)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "is another program's database (it holds users), not a migrationpilot store",
            ));
    }
    assert_eq!(fs::read(&other).unwrap(), before, "the file changed");
    assert_eq!(
        files(other.parent().unwrap()),
        ["app.db"],
        "files were added"
    );
}

#[test]
fn a_file_that_is_no_database_is_refused() {
    let work = Workspace::new();
    let notes = work.file(
        "notes.txt",
        "not a database, but a long enough text for a header\n",
    );
    work.cmd()
        .env(
            "MIGRATIONPILOT_STORE",
            format!("sqlite://{}", notes.display()),
        )
        .args(["runs"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a migrationpilot store"));
}

#[test]
fn unknown_schemes_and_empty_paths_are_refused_and_nothing_is_made() {
    let work = Workspace::new();
    for (url, says) in [
        ("mysql://x", "`mysql://` is not a store"),
        ("redis://127.0.0.1/0", "`redis://` is not a store"),
        ("sqlite://", "names no file"),
        ("sqlite:", "names no file"),
        ("", "names no file"),
    ] {
        work.cmd()
            .env("MIGRATIONPILOT_STORE", url)
            .args(["runs"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    assert!(files(work.path()).is_empty(), "{:?}", files(work.path()));
}

#[test]
fn commands_that_read_never_make_a_store() {
    let work = Workspace::new();
    let typo = work.path().join("jornal.db");
    let url = format!("sqlite://{}", typo.display());
    for args in [
        &["runs"][..],
        &["runs", "show", "run-1"],
        &["logs", "run-1"],
        &["health", "--project", "p"],
        &["alerts", "--project", "p"],
        &["healing", "history", "--project", "p"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        work.cmd()
            .env("MIGRATIONPILOT_STORE", &url)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "no store at {}",
                typo.display()
            )));
    }
    assert!(files(work.path()).is_empty(), "{:?}", files(work.path()));
}

#[test]
fn a_store_the_user_may_only_read_can_be_read() {
    let work = Workspace::new();
    work.file("pipeline.yaml", PIPELINE);
    let folder = work.path().join("kept");
    let store = folder.join("journal.db");
    let url = format!("sqlite://{}", store.display());
    work.cmd()
        .env("MIGRATIONPILOT_STORE", &url)
        .args(["run", "pipeline.yaml"])
        .assert()
        .success();
    // Read by someone who may read the folder and its files but write neither (as root, that
    // takes another user: root may write anything).
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for file in files(&folder) {
        fs::set_permissions(folder.join(file), fs::Permissions::from_mode(0o444)).unwrap();
    }
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o555)).unwrap();
    let binary = assert_cmd::cargo::cargo_bin("migrationpilot");
    let mut reader = if unsafe { libc::geteuid() } == 0 {
        let mut as_nobody = std::process::Command::new("setpriv");
        as_nobody.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        as_nobody.arg(&binary);
        as_nobody
    } else {
        std::process::Command::new(&binary)
    };
    let output = reader
        .env("MIGRATIONPILOT_STORE", &url)
        .args(["runs", "--project", "vault"])
        .output()
        .unwrap();
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
}

#[test]
fn two_runs_with_one_seed_are_two_runs() {
    let work = Workspace::new();
    work.file("pipeline.yaml", PIPELINE);
    for _ in 0..2 {
        work.cmd()
            .args(["run", "pipeline.yaml", "--seed", "7"])
            .assert()
            .success();
    }
    let output = work
        .cmd()
        .args(["runs", "--project", "vault", "--json"])
        .output()
        .unwrap();
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_ne!(runs[0]["id"], runs[1]["id"]);
}
