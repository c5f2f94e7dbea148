//! A throwaway PostgreSQL database for tests: this crate's store conformance tests and the
//! binary's end-to-end tests run on one each.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

/// The admin URL of the test server, or `None` (skipped) outside CI.
fn server() -> Option<String> {
    const VARIABLE: &str = "MIGRATIONPILOT_TEST_POSTGRES_URL";
    match std::env::var(VARIABLE) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{VARIABLE} is not set: in CI, .ci/services.sh must start PostgreSQL")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED: the PostgreSQL store test needs a server: run `source .ci/services.sh start` \
                 (it sets {VARIABLE}) ***\n"
            );
            None
        }
    }
}

/// `admin` with its database replaced by `database`.
fn with_database(admin: &str, database: &str) -> String {
    let (head, query) = match admin.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (admin, None),
    };
    let (scheme, rest) = head.split_once("://").expect("a URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A database made for one test, dropped (with its connections) when this is dropped,
/// even by a failing test.
#[derive(Debug)]
pub struct TestDatabase {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TestDatabase {
    /// A fresh, empty database; `None` when no server is configured (outside CI).
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or refuses to make the database: a test's failure.
    pub async fn create() -> Option<Self> {
        let admin = server()?;
        let name = format!("mp_test_{:016x}", fastrand::u64(..));
        let mut connection = PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
        Some(TestDatabase {
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A runtime of its own: this may run inside the test's, which cannot be blocked on.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&admin).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await?;
                connection.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}
