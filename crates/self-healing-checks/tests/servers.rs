//! Health checks against real servers on loopback: an HTTP server started here, SQLite files,
//! and PostgreSQL, MariaDB and Redis started by `.ci/services.sh`.
//!
//! Each test goes healthy, then (server stopped or made to fail) degraded and unhealthy, then
//! (restored) healthy, and asserts that exact sequence of transitions. A round is one
//! `check_all()`, so the sequence does not depend on timing. Without its server a test is
//! listed as ignored with what it needs (the build script's `cfg(missing_…)`), except in CI
//! (`CI=true`), where that is a failure.

// Which tests exist depends on the features; helpers serve whichever are compiled.
#![cfg_attr(
    not(all(
        feature = "http",
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql",
        feature = "redis"
    )),
    allow(dead_code, unused_imports)
)]

use std::future::Future;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use self_healing::health::{Check, CheckSpec, HealthMonitor, HealthStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use HealthStatus::*;

/// The URL of a server the environment provides, or `None` (skipped) outside CI.
fn server(variable: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{variable} is not set: in CI, .ci/services.sh must start {what}")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED: the {what} test needs a server: run `source .ci/services.sh start` \
                 (it sets {variable}) ***\n"
            );
            None
        }
    }
}

/// `admin_url` with its credentials replaced.
fn with_credentials(admin_url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = admin_url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// Runs the healthy → failing → restored cycle and checks the transitions.
async fn cycle<F, R>(check: impl Check, fail: F, restore: R) -> HealthMonitor
where
    F: Future<Output = ()>,
    R: Future<Output = ()>,
{
    let monitor = HealthMonitor::builder()
        .thresholds(3, 5)
        .check(CheckSpec::new("dependency", check).stage("load"))
        .build()
        .unwrap();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&changes);
    monitor.on_health_changed(move |c| sink.lock().unwrap().push((c.old_status, c.new_status)));
    let round = || monitor.check_all();

    for _ in 0..3 {
        round().await;
    }
    let report = &monitor.report()[0];
    assert_eq!(report.status, Healthy, "{report:#?}");
    assert!(changes.lock().unwrap().is_empty(), "healthy from the start");

    fail.await;
    round().await;
    assert_eq!(
        monitor.status("dependency"),
        Some(Degraded),
        "{:#?}",
        monitor.report()
    );
    round().await;
    round().await;
    assert_eq!(
        monitor.stage_status("load"),
        Unhealthy,
        "{:#?}",
        monitor.report()
    );

    restore.await;
    for _ in 0..4 {
        round().await;
    }
    assert_eq!(
        monitor.status("dependency"),
        Some(Unhealthy),
        "needs 5 successes in a row"
    );
    round().await;
    assert_eq!(
        *changes.lock().unwrap(),
        [
            (Healthy, Degraded),
            (Degraded, Unhealthy),
            (Unhealthy, Healthy)
        ]
    );
    monitor
}

/// The last error the check reported while failing, from a fresh failing run.
fn assert_redacted(error: &str, secret: &str) {
    assert!(!error.contains(secret), "the secret leaked: {error}");
    assert!(error.contains(":***@"), "no redacted URL in: {error}");
}

/// A small HTTP/1.1 server answering every request with `status` and a fixed body.
async fn http_server(listener: TcpListener, status: Arc<AtomicU16>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = "{\"status\": \"ready\"}";
            let code = status.load(Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(feature = "http")]
#[tokio::test]
async fn http_server_stopped_then_restarted() {
    use self_healing_checks::HttpCheck;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let server = Arc::new(Mutex::new(Some(tokio::spawn(http_server(
        listener,
        Arc::clone(&status),
    )))));
    let check = HttpCheck::new(format!("http://{address}/health"))
        .unwrap()
        .expected_status(200)
        .unwrap()
        .body_contains("ready");
    let stopper = Arc::clone(&server);
    let monitor = cycle(
        check,
        async move {
            let task = stopper.lock().unwrap().take().unwrap();
            task.abort();
            let _ = task.await; // the listener is closed once the task is gone
        },
        async move {
            let listener = TcpListener::bind(address).await.unwrap();
            *server.lock().unwrap() = Some(tokio::spawn(http_server(listener, status)));
        },
    )
    .await;
    assert!(monitor.report()[0].latency.is_some());
}

#[cfg(feature = "http")]
#[tokio::test]
async fn http_server_answering_errors_or_the_wrong_body() {
    use self_healing_checks::HttpCheck;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    tokio::spawn(http_server(listener, Arc::clone(&status)));
    let endpoint = format!("http://{address}/health?token=t0ps3cret");
    let check = HttpCheck::new(endpoint.clone()).unwrap();
    let (fail, restore) = (Arc::clone(&status), Arc::clone(&status));
    let monitor = cycle(
        check,
        async move { fail.store(503, Ordering::SeqCst) },
        async move { restore.store(200, Ordering::SeqCst) },
    )
    .await;
    assert_eq!(
        monitor.report()[0].target,
        format!("GET http://{address}/health?token=***")
    );

    status.store(503, Ordering::SeqCst);
    let error = HttpCheck::new(endpoint.clone())
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .0;
    assert_eq!(
        error,
        format!("GET http://{address}/health?token=***: answered 503, expected 200")
    );
    status.store(200, Ordering::SeqCst);
    let wrong_body = HttpCheck::new(endpoint)
        .unwrap()
        .body_contains("\"up\"")
        .check()
        .await
        .unwrap_err();
    assert!(
        wrong_body.0.ends_with("body does not contain `\"up\"`"),
        "{wrong_body}"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_file_removed_then_restored() {
    use self_healing_checks::DatabaseCheck;
    use sqlx::Connection;

    let path = std::env::temp_dir().join(format!("mp-health-{}.db", std::process::id()));
    let create = |path: std::path::PathBuf| async move {
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS t (x)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    };
    create(path.clone()).await;
    let check = DatabaseCheck::new(format!("sqlite://{}", path.display()))
        .unwrap()
        .query("SELECT count(*) FROM t")
        .unwrap();
    let doomed = path.clone();
    cycle(
        check,
        async move { std::fs::remove_file(&doomed).unwrap() },
        create(path.clone()),
    )
    .await;
    std::fs::remove_file(&path).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
async fn postgres_role_locked_then_unlocked() {
    use self_healing_checks::DatabaseCheck;
    use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

    let Some(admin_url) = server("MIGRATIONPILOT_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let role = format!("mp_probe_{}", std::process::id());
    let admin = Arc::new(tokio::sync::Mutex::new(
        PgConnection::connect(&admin_url).await.unwrap(),
    ));
    let run = |sql: String| {
        let admin = Arc::clone(&admin);
        async move {
            admin
                .lock()
                .await
                .execute(AssertSqlSafe(sql))
                .await
                .unwrap();
        }
    };
    run(format!("DROP ROLE IF EXISTS {role}")).await;
    run(format!("CREATE ROLE {role} LOGIN PASSWORD 'pr0be s3cret!'")).await;
    let url = with_credentials(&admin_url, &role, "pr0be%20s3cret%21");
    let check = DatabaseCheck::new(url.clone()).unwrap();

    cycle(
        check,
        run(format!("ALTER ROLE {role} NOLOGIN")),
        run(format!("ALTER ROLE {role} LOGIN")),
    )
    .await;

    run(format!("ALTER ROLE {role} NOLOGIN")).await;
    let error = DatabaseCheck::new(url)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .0;
    assert!(error.contains("not permitted to log in"), "{error}");
    assert_redacted(&error, "s3cret");
    run(format!("DROP ROLE {role}")).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
#[cfg_attr(missing_mysql, ignore = "needs MariaDB: source .ci/services.sh start")]
async fn mariadb_account_locked_then_unlocked() {
    use self_healing_checks::DatabaseCheck;
    use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection};

    let Some(admin_url) = server("MIGRATIONPILOT_TEST_MYSQL_URL", "MariaDB") else {
        return;
    };
    let user = format!("mp_probe_{}", std::process::id());
    let admin = Arc::new(tokio::sync::Mutex::new(
        MySqlConnection::connect(&admin_url).await.unwrap(),
    ));
    let run = |sql: String| {
        let admin = Arc::clone(&admin);
        async move {
            admin
                .lock()
                .await
                .execute(AssertSqlSafe(sql))
                .await
                .unwrap();
        }
    };
    run(format!("DROP USER IF EXISTS '{user}'@'127.0.0.1'")).await;
    run(format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pr0be-s3cret'"
    ))
    .await;
    let host = admin_url
        .rsplit_once('@')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let url = format!("mariadb://{user}:pr0be-s3cret@{host}");
    let check = DatabaseCheck::new(url.clone()).unwrap();

    cycle(
        check,
        run(format!("ALTER USER '{user}'@'127.0.0.1' ACCOUNT LOCK")),
        run(format!("ALTER USER '{user}'@'127.0.0.1' ACCOUNT UNLOCK")),
    )
    .await;

    run(format!("ALTER USER '{user}'@'127.0.0.1' ACCOUNT LOCK")).await;
    let error = DatabaseCheck::new(url)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .0;
    assert_redacted(&error, "s3cret");
    run(format!("DROP USER '{user}'@'127.0.0.1'")).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
#[cfg_attr(missing_redis, ignore = "needs Redis: source .ci/services.sh start")]
async fn redis_user_disabled_then_enabled() {
    use self_healing_checks::RedisCheck;

    let Some(admin_url) = server("MIGRATIONPILOT_TEST_REDIS_URL", "Redis") else {
        return;
    };
    let user = format!("mp_probe_{}", std::process::id());
    let client = redis::Client::open(admin_url.as_str()).unwrap();
    let admin = client.get_multiplexed_async_connection().await.unwrap();
    let acl = |args: Vec<String>| {
        let mut admin = admin.clone();
        async move {
            let _: () = redis::cmd("ACL")
                .arg(args)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    };
    let setuser = |state: &str| {
        vec![
            "SETUSER".into(),
            user.clone(),
            state.into(),
            ">pr0be-s3cret".into(),
            "+ping".into(),
        ]
    };
    acl(setuser("on")).await;
    let url = with_credentials(&admin_url, &user, "pr0be-s3cret");
    let check = RedisCheck::new(url.clone()).unwrap();

    cycle(check, acl(setuser("off")), acl(setuser("on"))).await;

    acl(setuser("off")).await;
    let error = RedisCheck::new(url).unwrap().check().await.unwrap_err().0;
    assert_redacted(&error, "s3cret");
    acl(vec!["DELUSER".into(), user.clone()]).await;
}
