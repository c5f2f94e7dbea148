//! The workspace every end-to-end test of the binary runs in.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

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

/// A temporary directory holding `pipeline.yaml` and any scripts, and the store its commands
/// use: an SQLite file in it, or a PostgreSQL database made for it.
pub struct Workspace {
    dir: tempfile::TempDir,
    store: String,
    #[cfg(feature = "postgres")]
    _database: Option<migrationpilot::store::TestDatabase>,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Workspace {
            store: format!("sqlite://{}", dir.path().join("journal.db").display()),
            dir,
            #[cfg(feature = "postgres")]
            _database: None,
        }
    }

    /// A workspace whose store is a fresh PostgreSQL database, or `None` (the test says so
    /// loudly, and fails under `CI=true`) when no server is configured.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> Option<Self> {
        let database = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(migrationpilot::store::TestDatabase::create())?;
        Some(Workspace {
            store: database.url.clone(),
            _database: Some(database),
            ..Workspace::new()
        })
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
        self.store.clone()
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
        self.spawn_with(args, &[])
    }

    /// [`Workspace::spawn`] with variables added to the process's environment.
    pub fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("migrationpilot"))
            .args(args)
            .current_dir(self.path())
            .env("MIGRATIONPILOT_STORE", self.store())
            .envs(env.iter().copied())
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

    /// Runs a query against the journal, on whichever database the store is.
    pub fn journal<T>(&self, sql: &'static str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
        T: Journaled,
    {
        let url = self.store();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection;
                #[cfg(feature = "postgres")]
                if url.starts_with("postgres") {
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    return sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .fetch_all(&mut c)
                        .await
                        .unwrap();
                }
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
            })
    }
}

/// What a journal query reads, from either backend.
#[cfg(feature = "postgres")]
pub trait Journaled: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>> Journaled for T {}
/// What a journal query reads.
#[cfg(not(feature = "postgres"))]
pub trait Journaled {}
#[cfg(not(feature = "postgres"))]
impl<T> Journaled for T {}

/// A test of the binary run once per store backend: on SQLite, and on PostgreSQL in a build
/// with the `postgres` feature.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::common::Workspace::new());
                }

                #[cfg(feature = "postgres")]
                #[test]
                #[cfg_attr(missing_postgres, ignore = "needs PostgreSQL: source .ci/services.sh start")]
                fn postgres() {
                    if let Some(work) = $crate::common::Workspace::postgres() {
                        super::$name(work);
                    }
                }
            }
        )*
    };
}

/// A program the environment provides (`.ci/services.sh` sets `variable` to its path; else it
/// is looked up on `PATH` as `name`), or `None`: the test says loudly it was skipped, and
/// fails under `CI=true`.
pub fn tool(variable: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{variable} is not set and `{name}` is not on PATH: in CI, .ci/services.sh must install it"
            );
        }
        eprintln!(
            "\n*** SKIPPED: this test needs `{name}`: run `source .ci/services.sh start` (it sets {variable}) ***\n"
        );
    }
    found
}

/// A `migrationpilot` process serving HTTP (`serve`, or `run --listen`), killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Everything it printed on standard output after the address line, as it comes.
    pub stdout: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Starts the binary in `work` with `args` (which must include `--listen 127.0.0.1:0`) and
    /// `env`, and waits for the line giving its address.
    pub fn start(work: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Served {
        use std::io::BufRead;
        let mut command =
            std::process::Command::new(assert_cmd::cargo::cargo_bin("migrationpilot"));
        command
            .args(args)
            .current_dir(work.path())
            .env("MIGRATIONPILOT_STORE", work.store())
            .env_remove("MIGRATIONPILOT_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let url = loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the server printed its address");
            if let Some(at) = line.find("http://") {
                let address: String = line[at + "http://".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                break format!("http://{}", address.trim_end_matches(':'));
            }
        };
        Served {
            child,
            url,
            stdout: rx,
        }
    }

    /// Waits (a bounded while) until `/readyz` says ready.
    pub fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if http("GET", &format!("{}/readyz", self.url), &[], None).0 == 200 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never ready");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Stops it and returns what it wrote on standard error.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        stderr
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection: the status (0 when nothing answered) and the
/// body. Enough for a test to talk to the server as any client would.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let named_host = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !named_host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    // Read the head, then exactly the body: some servers keep the connection open anyway.
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push_str(&line),
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    let mut raw = Vec::new();
    match length {
        Some(n) => {
            raw.resize(n, 0);
            let _ = reader.read_exact(&mut raw);
        }
        None => {
            let _ = reader.read_to_end(&mut raw);
        }
    }
    let body = String::from_utf8_lossy(&raw).into_owned();
    let chunked = lower.contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

/// A chunked body, joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// A JSON answer.
pub fn json(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = http(method, url, headers, body);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    (status, value)
}

/// A loopback HTTP receiver that keeps every request's path and JSON body and answers 202.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    pub fn on(listener: TcpListener) -> Receiver {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The bodies received on `path`, waiting (a bounded while) until there are `n`.
    pub fn wait(&self, path: &str, n: usize) -> Vec<Value> {
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
