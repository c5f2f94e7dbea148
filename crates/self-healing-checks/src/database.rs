//! SQL database checks through sqlx's `Any` driver: the URL scheme picks the database.

use std::sync::Once;

use self_healing::BoxFuture;
use self_healing::InvalidConfig;
use self_healing::health::{Check, CheckError, redact_secrets, redact_url};
use sqlx::Connection;

/// Healthy when a fresh connection to the database opens and `query` (default `SELECT 1`)
/// runs. A new connection each time: a pool would hide a server that stopped taking them.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    url: String,
    query: String,
}

/// The database kinds this build can check, by URL scheme, and the feature each needs.
const SCHEMES: [(&str, &str, bool); 5] = [
    ("sqlite", "sqlite", cfg!(feature = "sqlite")),
    ("postgres", "postgres", cfg!(feature = "postgres")),
    ("postgresql", "postgres", cfg!(feature = "postgres")),
    ("mysql", "mysql", cfg!(feature = "mysql")),
    ("mariadb", "mysql", cfg!(feature = "mysql")),
];

impl DatabaseCheck {
    /// A check of the database `url` names (`postgres://`, `postgresql://`, `mysql://`,
    /// `mariadb://` or `sqlite:`), running `SELECT 1`. Fails when the scheme is unknown or
    /// this build lacks its feature; the error never shows the URL's credentials.
    pub fn new(url: impl Into<String>) -> Result<Self, InvalidConfig> {
        let url = url.into();
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match SCHEMES.iter().find(|(s, _, _)| *s == scheme) {
            Some((_, _, true)) => {}
            Some((_, feature, false)) => {
                return Err(InvalidConfig::new(
                    "connectionString",
                    format!(
                        "`{}` needs the `{feature}` feature, which this build does not have",
                        redact_url(&url)
                    ),
                ));
            }
            None => {
                return Err(InvalidConfig::new(
                    "connectionString",
                    format!(
                        "`{}` is not a postgres://, mysql://, mariadb:// or sqlite: URL",
                        redact_url(&url)
                    ),
                ));
            }
        }
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        // sqlx knows MariaDB as mysql.
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url,
        };
        Ok(DatabaseCheck {
            url,
            query: "SELECT 1".into(),
        })
    }

    /// Runs `query` instead of `SELECT 1`. Fails when it is empty.
    pub fn query(mut self, query: impl Into<String>) -> Result<Self, InvalidConfig> {
        let query = query.into();
        if query.trim().is_empty() {
            return Err(InvalidConfig::new("query", "must not be empty"));
        }
        self.query = query;
        Ok(self)
    }

    fn fail(&self, what: impl std::fmt::Display) -> CheckError {
        CheckError::new(redact_secrets(
            &format!("{}: {what}", self.target()),
            &self.url,
        ))
    }
}

impl Check for DatabaseCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            let mut connection = sqlx::AnyConnection::connect(&self.url)
                .await
                .map_err(|e| self.fail(e))?;
            // The query is the operator's own, from their configuration, run as they wrote it.
            let query = sqlx::AssertSqlSafe(self.query.as_str());
            let result = sqlx::query(query).fetch_all(&mut connection).await;
            let _ = connection.close().await;
            result.map(drop).map_err(|e| self.fail(e))
        })
    }

    fn target(&self) -> String {
        redact_url(&self.url)
    }
}
