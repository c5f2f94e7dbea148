//! Checks as configuration files declare them (the seed's `healthMonitor.checks`).

use std::sync::Arc;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use self_healing::InvalidConfig;
use self_healing::de::{Tagged, deserialize_tagged, list, tagged_schema};
use self_healing::health::{Check, CheckSpec, CommandCheck, TcpCheck};

use crate::DatabaseCheck;

/// Declares a check kind's config: the keys every check has (`name`, `interval`, `timeout`,
/// `stage`) followed by its own, as one struct with `deny_unknown_fields`.
macro_rules! check_config {
    ($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The check's name, unique in the monitor.
            pub name: String,
            /// Default: the monitor's `checkInterval`.
            #[serde(default, deserialize_with = "self_healing::duration::option::deserialize")]
            #[schemars(with = "Option<self_healing::duration::Written>")]
            pub interval: Option<Duration>,
            /// Default: 5 s.
            #[serde(default, deserialize_with = "self_healing::duration::option::deserialize")]
            #[schemars(with = "Option<self_healing::duration::Written>")]
            pub timeout: Option<Duration>,
            /// The stage the check is attached to; `None` attaches it to none.
            pub stage: Option<String>,
            $($(#[$field_doc])* pub $field: $ty,)*
        }
    };
}

check_config!(
    /// `http`: `method endpoint` answers `expectedStatus`, its body holding `bodyContains`.
    HttpCheckConfig {
        /// The http:// or https:// URL to request.
        endpoint: String,
        /// The HTTP method, in any case (default `GET`).
        method: Option<String>,
        /// The status the answer must have (default 200).
        expected_status: Option<u16>,
        /// Text the answer's body must contain; `None` does not read the body.
        body_contains: Option<String>,
    }
);

check_config!(
    /// `tcp`: a connection to `host:port` opens.
    TcpCheckConfig {
        /// The host name or IP address to connect to.
        host: String,
        /// The TCP port to connect to.
        port: u16,
    }
);

check_config!(
    /// `database`: a connection to `connectionString` opens and `query` runs.
    DatabaseCheckConfig {
        /// The database URL; its scheme (postgres, mysql, mariadb, sqlite) picks the driver.
        connection_string: String,
        /// The query to run on the connection (default `SELECT 1`).
        query: Option<String>,
    }
);

check_config!(
    /// `redis`: a connection to `url` answers PING.
    RedisCheckConfig {
        /// The `redis://` URL, credentials included if the server needs them.
        url: String,
    }
);

check_config!(
    /// `command`: the argv (no shell) exits 0.
    CommandCheckConfig {
        /// The program and its arguments, run without a shell.
        command: Vec<String>,
    }
);

/// One check as a file declares it, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckConfig {
    /// `type: http`: an HTTP request gets the expected answer.
    Http(HttpCheckConfig),
    /// `type: tcp`: a TCP connection opens.
    Tcp(TcpCheckConfig),
    /// `type: database`: a database connection opens and a query runs.
    Database(DatabaseCheckConfig),
    /// `type: redis`: a Redis server answers PING.
    Redis(RedisCheckConfig),
    /// `type: command`: a command exits 0.
    Command(CommandCheckConfig),
}

impl Tagged for CheckConfig {
    const TAG: &'static str = "type";
    self_healing::tagged_variants!(CheckConfig {
        "http" => Http,
        "tcp" => Tcp,
        "database" => Database,
        "redis" => Redis,
        "command" => Command,
    });

    fn misplaced(key: &str, tag: &str, takes: &[&str]) -> String {
        format!(
            "`{key}` does not apply to {tag} checks (they take {})",
            list(takes)
        )
    }
}

impl<'de> Deserialize<'de> for CheckConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer)
    }
}

impl JsonSchema for CheckConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CheckConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        tagged_schema::<Self>(generator)
    }
}

impl self_healing::config::BuildCheck for CheckConfig {
    fn name(&self) -> &str {
        CheckConfig::name(self)
    }

    fn build(&self) -> Result<CheckSpec, InvalidConfig> {
        CheckConfig::build(self)
    }
}

impl CheckConfig {
    /// The check's name.
    pub fn name(&self) -> &str {
        self.common().0
    }

    /// (name, interval, timeout, stage): what every kind of check has.
    fn common(&self) -> (&str, Option<Duration>, Option<Duration>, Option<&str>) {
        macro_rules! common {
            ($c:expr) => {
                (&*$c.name, $c.interval, $c.timeout, $c.stage.as_deref())
            };
        }
        match self {
            CheckConfig::Http(c) => common!(c),
            CheckConfig::Tcp(c) => common!(c),
            CheckConfig::Database(c) => common!(c),
            CheckConfig::Redis(c) => common!(c),
            CheckConfig::Command(c) => common!(c),
        }
    }

    /// The runnable check. Fails when the build lacks the feature the check needs, or a
    /// setting cannot work; the error names the setting.
    pub fn build(&self) -> Result<CheckSpec, InvalidConfig> {
        let check: Arc<dyn Check> = match self {
            #[cfg(feature = "http")]
            CheckConfig::Http(c) => {
                let mut check = crate::HttpCheck::new(c.endpoint.clone())?;
                if let Some(method) = &c.method {
                    check = check.method(method)?;
                }
                if let Some(status) = c.expected_status {
                    check = check.expected_status(status)?;
                }
                if let Some(text) = &c.body_contains {
                    check = check.body_contains(text.clone());
                }
                Arc::new(check)
            }
            #[cfg(not(feature = "http"))]
            CheckConfig::Http(_) => return Err(missing("http")),
            CheckConfig::Tcp(c) => Arc::new(TcpCheck::new(c.host.clone(), c.port)?),
            CheckConfig::Database(c) => {
                let mut check = DatabaseCheck::new(c.connection_string.clone())?;
                if let Some(query) = &c.query {
                    check = check.query(query.clone())?;
                }
                Arc::new(check)
            }
            #[cfg(feature = "redis")]
            CheckConfig::Redis(c) => Arc::new(crate::RedisCheck::new(c.url.clone())?),
            #[cfg(not(feature = "redis"))]
            CheckConfig::Redis(_) => return Err(missing("redis")),
            CheckConfig::Command(c) => Arc::new(CommandCheck::new(c.command.clone())?),
        };
        let (name, interval, timeout, stage) = self.common();
        let mut spec = CheckSpec::from_arc(name, check);
        if let Some(interval) = interval {
            spec = spec.interval(interval);
        }
        if let Some(timeout) = timeout {
            spec = spec.timeout(timeout);
        }
        if let Some(stage) = stage {
            spec = spec.stage(stage);
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
        let CheckConfig::Http(api) = api else {
            panic!("{api:?}")
        };
        assert_eq!(api.interval, Some(Duration::from_secs(10)));
        assert_eq!(api.timeout, Some(Duration::from_secs(5)));
        let db = parse(
            r#"{"name": "database", "type": "database", "connectionString": "postgres://u:p@db/x",
                "query": "SELECT 1", "interval": 30000}"#,
        )
        .unwrap();
        assert!(matches!(db, CheckConfig::Database(_)));
        let tcp = parse(
            r#"{"name": "redis", "type": "tcp", "host": "redis", "port": 6379, "interval": "15s"}"#,
        )
        .unwrap();
        let CheckConfig::Tcp(tcp) = tcp else {
            panic!("{tcp:?}")
        };
        assert_eq!((tcp.host.as_str(), tcp.port), ("redis", 6379));
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
            misplaced.contains("`endpoint` does not apply to tcp checks (they take name, interval, timeout, stage, host, port)"),
            "{misplaced}"
        );
        let missing = parse(r#"{"name": "a", "type": "http"}"#).unwrap_err();
        assert!(missing.contains("missing field `endpoint`"), "{missing}");
        let kind = parse(r#"{"name": "a", "type": "ping"}"#).unwrap_err();
        assert!(kind.contains("unknown variant `ping`"), "{kind}");
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
