//! Health checks that need a driver, for `self_healing::health::HealthMonitor`: HTTP, SQL
//! databases (PostgreSQL, MySQL/MariaDB, SQLite, chosen by URL scheme) and Redis.
//!
//! | feature | check | default |
//! |---|---|---|
//! | `http` | [`HttpCheck`] | yes |
//! | `sqlite` | [`DatabaseCheck`] for `sqlite:` URLs | yes |
//! | `postgres` | [`DatabaseCheck`] for `postgres:`/`postgresql:` URLs | no |
//! | `mysql` | [`DatabaseCheck`] for `mysql:`/`mariadb:` URLs | no |
//! | `redis` | [`RedisCheck`] | no |
//!
//! [`CheckConfig`] is a check as a configuration file declares it, with the seed's keys; its
//! [`build`](CheckConfig::build) makes the runnable check, including the driver-free ones (tcp,
//! command) from `self_healing::health`.
//!
//! Connection strings and credentials never appear in errors, reports or events: every check
//! redacts them (`postgres://app:***@db/prod`).
//!
//! ```
//! use self_healing::health::HealthMonitor;
//! use self_healing_checks::CheckConfig;
//!
//! let checks: Vec<CheckConfig> = serde_json::from_str(r#"[
//!     {"name": "api-health", "type": "http", "endpoint": "http://127.0.0.1:3000/health",
//!      "interval": 10000, "timeout": "5s", "expectedStatus": 200},
//!     {"name": "redis-port", "type": "tcp", "host": "127.0.0.1", "port": 6379, "interval": 15000},
//!     {"name": "journal", "type": "database", "connectionString": "sqlite://journal.db"}
//! ]"#)?;
//! let mut monitor = HealthMonitor::builder();
//! for check in &checks {
//!     monitor = monitor.check(check.build()?);
//! }
//! let monitor = monitor.build()?;
//! assert_eq!(monitor.report()[0].target, "GET http://127.0.0.1:3000/health");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod database;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "redis")]
mod redis_check;

pub use config::{
    CheckConfig, CommandCheckConfig, DatabaseCheckConfig, HttpCheckConfig, RedisCheckConfig,
    TcpCheckConfig,
};
pub use database::DatabaseCheck;
#[cfg(feature = "http")]
pub use http::HttpCheck;
#[cfg(feature = "redis")]
pub use redis_check::RedisCheck;
