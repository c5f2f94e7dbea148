//! Errors: what a stage reports when it fails, and what a builder reports when its settings are
//! impossible.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How bad a stage failure is. Triggers match on it; alert channels filter by it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The least severe level: something went wrong, but it may not matter.
    Warning,
    /// An ordinary failure (the default).
    #[default]
    Error,
    /// The most severe level: a failure that needs attention at once.
    Critical,
}

impl Severity {
    /// The lowercase name used on the wire and in configuration: `warning`, `error` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = InvalidConfig;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            "critical" => Ok(Severity::Critical),
            other => Err(InvalidConfig::new(
                "severity",
                format!("`{other}` is not one of warning, error, critical"),
            )),
        }
    }
}

/// The error a stage handler returns: a message, an optional machine-readable code and a
/// severity (default [`Severity::Error`]).
///
/// Healing strategies match on all three, so a handler that knows its failure is transient or
/// fatal should say so:
///
/// ```
/// use self_healing::{Severity, StageError};
///
/// let transient = StageError::new("connection reset by peer").with_code("ECONNRESET");
/// let fatal = StageError::critical("schema mismatch in target table");
/// assert_eq!(transient.severity(), Severity::Error);
/// assert_eq!(fatal.severity(), Severity::Critical);
///
/// // The usual error types convert with `?`; I/O errors keep their errno-style code.
/// fn read() -> Result<String, StageError> {
///     Ok(std::fs::read_to_string("/definitely/not/here")?)
/// }
/// assert_eq!(read().unwrap_err().code(), Some("ENOENT"));
/// ```
///
/// It is one pointer wide: results and events that carry it stay small on the path where
/// nothing fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageError(Box<Failure>);

/// What a [`StageError`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Failure {
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<Cow<'static, str>>,
    #[serde(default)]
    severity: Severity,
    /// The least wait before a retry the failing side asked for (milliseconds in JSON).
    #[serde(
        default,
        rename = "retryAfter",
        skip_serializing_if = "Option::is_none",
        with = "retry_after_ms"
    )]
    retry_after: Option<Duration>,
    /// Whether trying again may succeed, when something knows: a classified error says (a
    /// refused connection may pass, a wrong password will not); `None` leaves it to the retry
    /// policy's patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retryable: Option<bool>,
    /// The rule that gave the error its code: `builtin:NAME`, `errors[i]` (a file's own),
    /// `json` for a command's own JSON error line, or [`StageError::INJECTED_RULE`]
    /// for a failure injected on purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<Cow<'static, str>>,
    /// Why a last standard-error line that looked like a JSON error line could not be read: the
    /// command meant to set its error and did not manage to.
    #[serde(
        default,
        rename = "invalidJson",
        skip_serializing_if = "Option::is_none"
    )]
    invalid_json: Option<String>,
}

/// `Option<Duration>` as whole milliseconds.
mod retry_after_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes a reference to the field
    pub fn serialize<S: Serializer>(
        after: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match after {
            Some(after) => {
                serializer.serialize_u64(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

impl StageError {
    /// The rule of a failure injected on purpose (`run --chaos`), not met: what every view of
    /// a run's failures counts apart.
    pub const INJECTED_RULE: &'static str = "chaos";

    /// An error with `message`, no code and severity `Error`.
    pub fn new(message: impl Into<String>) -> Self {
        StageError(Box::new(Failure {
            message: message.into(),
            code: None,
            severity: Severity::Error,
            retry_after: None,
            retryable: None,
            rule: None,
            invalid_json: None,
        }))
    }

    /// This error known to be worth trying again (`true`) or not (`false`): a retry policy never
    /// retries an error that is not.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.0.retryable = Some(retryable);
        self
    }

    /// Whether trying again may succeed, when something knows.
    pub fn retryable(&self) -> Option<bool> {
        self.0.retryable
    }

    /// This error with the name of the rule that classified it.
    pub fn with_rule(mut self, rule: impl Into<Cow<'static, str>>) -> Self {
        self.0.rule = Some(rule.into());
        self
    }

    /// The rule that gave the error its code, if one did.
    pub fn rule(&self) -> Option<&str> {
        self.0.rule.as_deref()
    }

    /// This error noting why its command's JSON error line could not be read.
    pub fn with_invalid_json(mut self, why: impl Into<String>) -> Self {
        self.0.invalid_json = Some(why.into());
        self
    }

    /// Why the command's last standard-error line, which looked like a JSON error line, could
    /// not be read; `None` when there was none or it was read.
    pub fn invalid_json(&self) -> Option<&str> {
        self.0.invalid_json.as_deref()
    }

    /// This error asking that a retry wait at least `after` (an HTTP 429's `Retry-After`, a
    /// rate limit's reset): a retry waits the longer of its backoff and this.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// The least wait before a retry this error asks for.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// An error with `message`, no code and severity `Warning`.
    pub fn warning(message: impl Into<String>) -> Self {
        StageError::new(message).with_severity(Severity::Warning)
    }

    /// An error with `message`, no code and severity `Critical`.
    pub fn critical(message: impl Into<String>) -> Self {
        StageError::new(message).with_severity(Severity::Critical)
    }

    /// Wraps any error, keeping its whole `source()` chain in the message.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        StageError::new(error_chain(error))
    }

    /// Sets the machine-readable code (`ECONNRESET`, `ETIMEDOUT`…) that retry patterns and
    /// triggers match.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.0.code = Some(code.into());
        self
    }

    /// Sets the severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.0.severity = severity;
        self
    }

    /// The same error with another message (a redacted one, say).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.0.message = message.into();
        self
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The machine-readable code, or `None` when none was set.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// How bad the failure is.
    pub fn severity(&self) -> Severity {
        self.0.severity
    }

    /// The error an attempt ends with when it outlives its stage's `timeout`.
    pub fn timed_out(after: std::time::Duration) -> Self {
        StageError::new(format!("attempt timed out after {after:?}")).with_code(CODE_TIMEOUT)
    }

    /// True when this is the error of an attempt cut at its timeout.
    pub fn is_timeout(&self) -> bool {
        self.code() == Some(CODE_TIMEOUT)
    }
}

/// An error and its causes on one line, `outer: cause: root cause`: many errors' own message
/// alone does not say why.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The code of an attempt cut at its stage's `timeout`. It is the errno-style name the seed's
/// `ETIMEDOUT` patterns already match.
pub const CODE_TIMEOUT: &str = "ETIMEDOUT";

/// The code of the error a stage fails with when its restart limit refuses another restart.
pub const CODE_RESTART_LIMIT: &str = "RESTART_LIMIT";

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = &self.0;
        match &failure.code {
            Some(code) => write!(f, "{}: {} [{}]", failure.severity, failure.message, code),
            None => write!(f, "{}: {}", failure.severity, failure.message),
        }
    }
}

impl std::error::Error for StageError {}

impl From<String> for StageError {
    fn from(message: String) -> Self {
        StageError::new(message)
    }
}

impl From<&str> for StageError {
    fn from(message: &str) -> Self {
        StageError::new(message)
    }
}

impl From<std::io::Error> for StageError {
    fn from(error: std::io::Error) -> Self {
        let code = io_code(&error);
        let err = StageError::from_error(&error);
        match code {
            Some(code) => err.with_code(code),
            None => err,
        }
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for StageError {
    fn from(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        match error.downcast::<StageError>() {
            Ok(stage) => *stage,
            Err(other) => StageError::from_error(other.as_ref()),
        }
    }
}

impl From<tokio::time::error::Elapsed> for StageError {
    fn from(error: tokio::time::error::Elapsed) -> Self {
        StageError::from_error(&error).with_code(CODE_TIMEOUT)
    }
}

impl From<std::fmt::Error> for StageError {
    fn from(error: std::fmt::Error) -> Self {
        StageError::from_error(&error)
    }
}

impl From<std::num::ParseIntError> for StageError {
    fn from(error: std::num::ParseIntError) -> Self {
        StageError::from_error(&error)
    }
}

impl From<std::num::ParseFloatError> for StageError {
    fn from(error: std::num::ParseFloatError) -> Self {
        StageError::from_error(&error)
    }
}

impl From<std::str::Utf8Error> for StageError {
    fn from(error: std::str::Utf8Error) -> Self {
        StageError::from_error(&error)
    }
}

impl From<std::string::FromUtf8Error> for StageError {
    fn from(error: std::string::FromUtf8Error) -> Self {
        StageError::from_error(&error)
    }
}

/// Errno-style codes for the I/O failures a flaky downstream produces, so the seed's patterns
/// (`ECONNRESET|ETIMEDOUT|ECONNREFUSED`) match Rust I/O errors without extra mapping.
fn io_code(error: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind::*;
    Some(match error.kind() {
        ConnectionReset => "ECONNRESET",
        ConnectionRefused => "ECONNREFUSED",
        ConnectionAborted => "ECONNABORTED",
        TimedOut => CODE_TIMEOUT,
        NotFound => "ENOENT",
        PermissionDenied => "EACCES",
        BrokenPipe => "EPIPE",
        AddrInUse => "EADDRINUSE",
        AddrNotAvailable => "EADDRNOTAVAIL",
        NotConnected => "ENOTCONN",
        Interrupted => "EINTR",
        WouldBlock => "EAGAIN",
        _ => return None,
    })
}

/// A builder was given settings that cannot work. Says which setting and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidConfig {
    field: Cow<'static, str>,
    reason: String,
}

impl InvalidConfig {
    /// An error saying that `field` is invalid because of `reason`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The setting at fault, named as in the configuration (`maxAttempts`, `stages[2].name`…).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the setting cannot work.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Prefixes the field with the path of the object holding it.
    pub fn within(mut self, parent: impl fmt::Display) -> Self {
        self.field = format!("{parent}.{}", self.field).into();
        self
    }
}

/// The first name that stands twice in a list, as an error at `{list}[i].name` saying it
/// "names two {kind}": builders of stages, strategies and checks share this rule.
pub(crate) fn unique_names<'a>(
    list: &str,
    kind: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), InvalidConfig> {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.into_iter().enumerate() {
        if !seen.insert(name) {
            return Err(InvalidConfig::new(
                format!("{list}[{i}].name"),
                format!("`{name}` names two {kind}"),
            ));
        }
    }
    Ok(())
}

/// Why `name` names no `kind` a configuration declares: the names it has (with a close one
/// suggested), or that `list`, where they would be, has none.
pub fn no_such(kind: &str, name: &str, known: &[&str], list: &str) -> String {
    if known.is_empty() {
        format!("no {kind} is named `{name}`: `{list}` has none")
    } else {
        format!(
            "no {kind} is named `{name}`{} (the {kind}s are {})",
            did_you_mean(name, known.iter().copied()),
            known.join(", ")
        )
    }
}

/// ` (did you mean `x`?)` when a candidate is close to `given`.
pub fn did_you_mean<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| {
            (
                edit_distance(&given.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_errno_codes() {
        let err: StageError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(err.code(), Some("ECONNRESET"));
        assert_eq!(err.severity(), Severity::Error);
    }

    #[test]
    fn boxed_stage_errors_round_trip() {
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(StageError::critical("boom").with_code("X"));
        let back = StageError::from(boxed);
        assert_eq!(back, StageError::critical("boom").with_code("X"));
    }

    #[test]
    fn display_names_severity_and_code() {
        let err = StageError::warning("slow").with_code("SLOW");
        assert_eq!(err.to_string(), "warning: slow [SLOW]");
    }

    #[test]
    fn severity_parses_and_orders() {
        assert_eq!("critical".parse::<Severity>().unwrap(), Severity::Critical);
        assert!("fatal".parse::<Severity>().is_err());
        assert!(Severity::Warning < Severity::Error && Severity::Error < Severity::Critical);
    }
}
