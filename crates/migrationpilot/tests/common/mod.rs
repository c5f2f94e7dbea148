//! The workspace every end-to-end test of the binary runs in.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The `migrationpilot` binary, with no store it could open: a test that needs one runs in a
/// [`Workspace`], so no test writes to the user's own store.
pub fn migrationpilot() -> Command {
    let mut cmd = Command::cargo_bin("migrationpilot").unwrap();
    cmd.env(
        "MIGRATIONPILOT_STORE",
        "sqlite:///dev/null/no-store-outside-a-workspace",
    );
    cmd
}

/// A temporary directory holding `pipeline.yaml` and any scripts.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.file(name, &format!("#!/bin/sh\nset -eu\n{body}\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    pub fn store(&self) -> String {
        format!("sqlite://{}", self.path().join("journal.db").display())
    }

    /// The binary, run in this workspace with its own store.
    pub fn cmd(&self) -> Command {
        let mut cmd = migrationpilot();
        cmd.current_dir(self.path())
            .env("MIGRATIONPILOT_STORE", self.store());
        cmd
    }

    /// The same, as a `std::process::Command` for runs that go on in the background.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("migrationpilot"))
            .args(args)
            .current_dir(self.path())
            .env("MIGRATIONPILOT_STORE", self.store())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits (a bounded while) until `name` exists: the moment a script reached a point.
    pub fn wait_for(&self, name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.path().join(name).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs a query against the journal.
    pub fn journal<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let url = self.store();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
            })
    }
}
