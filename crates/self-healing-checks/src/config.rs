//! Checks as configuration files declare them (the seed's `healthMonitor.checks`).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use self_healing::InvalidConfig;
use self_healing::health::{Check, CheckSpec, CommandCheck, TcpCheck};

use crate::DatabaseCheck;

/// One check: its name, schedule, the stage it belongs to, and what it checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckConfig {
    pub name: String,
    /// Default: the monitor's `checkInterval`.
    pub interval: Option<Duration>,
    /// Default: 5 s.
    pub timeout: Option<Duration>,
    pub stage: Option<String>,
    pub kind: CheckKind,
}

/// What a check checks, by its `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Http {
        endpoint: String,
        method: Option<String>,
        expected_status: Option<u16>,
        body_contains: Option<String>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Database {
        connection_string: String,
        query: Option<String>,
    },
    Redis {
        url: String,
    },
    Command {
        command: Vec<String>,
    },
}

impl CheckConfig {
    /// The runnable check. Fails when the build lacks the feature the check needs, or a
    /// setting cannot work; the error names the setting.
    pub fn build(&self) -> Result<CheckSpec, InvalidConfig> {
        let check: Arc<dyn Check> = match &self.kind {
            #[cfg(feature = "http")]
            CheckKind::Http {
                endpoint,
                method,
                expected_status,
                body_contains,
            } => {
                let mut check = crate::HttpCheck::new(endpoint.clone())?;
                if let Some(method) = method {
                    check = check.method(method)?;
                }
                if let Some(status) = expected_status {
                    check = check.expected_status(*status)?;
                }
                if let Some(text) = body_contains {
                    check = check.body_contains(text.clone());
                }
                Arc::new(check)
            }
            #[cfg(not(feature = "http"))]
            CheckKind::Http { .. } => return Err(missing("http")),
            CheckKind::Tcp { host, port } => Arc::new(TcpCheck::new(host.clone(), *port)?),
            CheckKind::Database {
                connection_string,
                query,
            } => {
                let mut check = DatabaseCheck::new(connection_string.clone())?;
                if let Some(query) = query {
                    check = check.query(query.clone())?;
                }
                Arc::new(check)
            }
            #[cfg(feature = "redis")]
            CheckKind::Redis { url } => Arc::new(crate::RedisCheck::new(url.clone())?),
            #[cfg(not(feature = "redis"))]
            CheckKind::Redis { .. } => return Err(missing("redis")),
            CheckKind::Command { command } => Arc::new(CommandCheck::new(command.clone())?),
        };
        let mut spec = CheckSpec::from_arc(self.name.clone(), check);
        if let Some(interval) = self.interval {
            spec = spec.interval(interval);
        }
        if let Some(timeout) = self.timeout {
            spec = spec.timeout(timeout);
        }
        if let Some(stage) = &self.stage {
            spec = spec.stage(stage.clone());
        }
        Ok(spec)
    }
}

#[allow(dead_code)] // unused when every optional check is compiled in
fn missing(feature: &str) -> InvalidConfig {
    InvalidConfig::new(
        "type",
        format!("`{feature}` checks need the `{feature}` feature, which this build does not have"),
    )
}

/// Every key any check may have; [`CheckConfig`] checks which apply to its type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCheck {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(
        default,
        deserialize_with = "self_healing::duration::option::deserialize"
    )]
    interval: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "self_healing::duration::option::deserialize"
    )]
    timeout: Option<Duration>,
    stage: Option<String>,
    endpoint: Option<String>,
    method: Option<String>,
    expected_status: Option<u16>,
    body_contains: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    connection_string: Option<String>,
    query: Option<String>,
    url: Option<String>,
    command: Option<Vec<String>>,
}

impl TryFrom<RawCheck> for CheckConfig {
    type Error = String;

    fn try_from(raw: RawCheck) -> Result<Self, String> {
        let given: [(&str, bool); 10] = [
            ("endpoint", raw.endpoint.is_some()),
            ("method", raw.method.is_some()),
            ("expectedStatus", raw.expected_status.is_some()),
            ("bodyContains", raw.body_contains.is_some()),
            ("host", raw.host.is_some()),
            ("port", raw.port.is_some()),
            ("connectionString", raw.connection_string.is_some()),
            ("query", raw.query.is_some()),
            ("url", raw.url.is_some()),
            ("command", raw.command.is_some()),
        ];
        let allowed: &[&str] = match raw.kind.as_str() {
            "http" => &["endpoint", "method", "expectedStatus", "bodyContains"],
            "tcp" => &["host", "port"],
            "database" => &["connectionString", "query"],
            "redis" => &["url"],
            "command" => &["command"],
            other => {
                return Err(format!(
                    "check `{}`: unknown type `{other}`, expected one of http, tcp, database, redis, command",
                    raw.name
                ));
            }
        };
        if let Some((key, _)) = given
            .iter()
            .find(|(key, set)| *set && !allowed.contains(key))
        {
            return Err(format!(
                "check `{}`: `{key}` does not apply to {} checks (they take {})",
                raw.name,
                raw.kind,
                allowed.join(", ")
            ));
        }
        let need = |value: Option<String>, key: &str| {
            value.ok_or_else(|| format!("check `{}`: {} checks need `{key}`", raw.name, raw.kind))
        };
        let kind = match raw.kind.as_str() {
            "http" => CheckKind::Http {
                endpoint: need(raw.endpoint, "endpoint")?,
                method: raw.method,
                expected_status: raw.expected_status,
                body_contains: raw.body_contains,
            },
            "tcp" => CheckKind::Tcp {
                host: need(raw.host, "host")?,
                port: raw
                    .port
                    .ok_or_else(|| format!("check `{}`: tcp checks need `port`", raw.name))?,
            },
            "database" => CheckKind::Database {
                connection_string: need(raw.connection_string, "connectionString")?,
                query: raw.query,
            },
            "redis" => CheckKind::Redis {
                url: need(raw.url, "url")?,
            },
            _ => CheckKind::Command {
                command: raw.command.ok_or_else(|| {
                    format!("check `{}`: command checks need `command`", raw.name)
                })?,
            },
        };
        Ok(CheckConfig {
            name: raw.name,
            interval: raw.interval,
            timeout: raw.timeout,
            stage: raw.stage,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CheckConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn the_seeds_checks_load() {
        let api = parse(
            r#"{"name": "api-health", "type": "http", "endpoint": "http://api:3000/health",
                "interval": 10000, "timeout": 5000, "expectedStatus": 200}"#,
        )
        .unwrap();
        assert_eq!(api.interval, Some(Duration::from_secs(10)));
        assert_eq!(api.timeout, Some(Duration::from_secs(5)));
        let db = parse(
            r#"{"name": "database", "type": "database", "connectionString": "postgres://u:p@db/x",
                "query": "SELECT 1", "interval": 30000}"#,
        )
        .unwrap();
        assert!(matches!(db.kind, CheckKind::Database { .. }));
        let tcp = parse(
            r#"{"name": "redis", "type": "tcp", "host": "redis", "port": 6379, "interval": "15s"}"#,
        )
        .unwrap();
        assert_eq!(
            tcp.kind,
            CheckKind::Tcp {
                host: "redis".into(),
                port: 6379
            }
        );
    }

    #[test]
    fn wrong_keys_and_types_are_named() {
        let unknown = parse(r#"{"name": "a", "type": "tcp", "host": "h", "port": 1, "prot": 2}"#)
            .unwrap_err();
        assert!(unknown.contains("unknown field `prot`"), "{unknown}");
        let misplaced =
            parse(r#"{"name": "a", "type": "tcp", "host": "h", "port": 1, "endpoint": "x"}"#)
                .unwrap_err();
        assert!(
            misplaced.contains("`endpoint` does not apply to tcp checks"),
            "{misplaced}"
        );
        let missing = parse(r#"{"name": "a", "type": "http"}"#).unwrap_err();
        assert!(missing.contains("http checks need `endpoint`"), "{missing}");
        let kind = parse(r#"{"name": "a", "type": "ping"}"#).unwrap_err();
        assert!(kind.contains("unknown type `ping`"), "{kind}");
        let bad_port =
            parse(r#"{"name": "a", "type": "tcp", "host": "h", "port": 70000}"#).unwrap_err();
        assert!(bad_port.contains("70000"), "{bad_port}");
    }

    #[test]
    fn build_rejects_what_cannot_work_without_leaking_secrets() {
        let db = parse(
            r#"{"name": "d", "type": "database", "connectionString": "oracle://u:hunter2@h/x"}"#,
        )
        .unwrap();
        let error = db.build().err().unwrap().to_string();
        assert!(
            error.contains("oracle://u:***@h/x") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
