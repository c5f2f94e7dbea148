//! A file's own error rules (`errors:`), tried before the built-in ones: what its tools print
//! that the built-ins do not know, or know otherwise.

use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Code, Rule};
use crate::error::{InvalidConfig, Severity};

/// Which output a rule's `pattern` is looked for in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard error (the default): where tools print their errors.
    #[default]
    Stderr,
    /// Standard output.
    Stdout,
    /// Either.
    Any,
}

/// One of a file's `errors:` rules: a failed command whose output has a line matching
/// `pattern`, or that exited with `exitCode`, or both, fails with `code`.
///
/// ```
/// use self_healing::classify::{Classifier, ErrorRuleConfig, Failed};
///
/// let rule: ErrorRuleConfig = serde_json::from_str(
///     r#"{"pattern": "lock timeout on batch", "code": "ELOCKED", "retryAfter": "5s"}"#,
/// )?;
/// let classifier = Classifier::with_rules(vec![rule.build(0)?]);
/// let found = classifier
///     .classify(&Failed { program: "./load.sh", stderr: "lock timeout on batch 7", stdout: "", exit: Some(1) })
///     .unwrap();
/// assert_eq!((found.code.as_str(), &*found.rule), ("ELOCKED", "errors[0]"));
/// assert_eq!(found.retry_after, Some(std::time::Duration::from_secs(5)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRuleConfig {
    /// A regular expression a line of the output must match.
    pub pattern: Option<String>,
    /// The exit status the command must have ended with.
    pub exit_code: Option<i32>,
    /// Where `pattern` is looked for (default `stderr`).
    #[serde(default)]
    pub stream: Stream,
    /// The code the error gets, which strategies' triggers match.
    pub code: String,
    /// Its severity (default `error`).
    #[serde(default)]
    pub severity: Severity,
    /// Whether trying again may succeed (default `true`); a retry policy never retries an
    /// error that is not.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// The least wait before a retry.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub retry_after: Option<Duration>,
}

fn yes() -> bool {
    true
}

impl ErrorRuleConfig {
    /// The rule, named `errors[index]`; the error names the setting at fault.
    pub fn build(&self, index: usize) -> Result<Rule, InvalidConfig> {
        if self.pattern.is_none() && self.exit_code.is_none() {
            return Err(InvalidConfig::new(
                "pattern",
                "a rule needs a `pattern`, an `exitCode`, or both",
            ));
        }
        let code = self.code.trim();
        if code.is_empty() || code.chars().any(char::is_whitespace) {
            return Err(InvalidConfig::new(
                "code",
                "a code is one word (`ELOCKED`, `HTTP_503`)",
            ));
        }
        let pattern = self
            .pattern
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| InvalidConfig::new("pattern", e.to_string()))?;
        Ok(Rule {
            name: format!("errors[{index}]").into(),
            program: None,
            exit: self.exit_code,
            pattern,
            stream: self.stream,
            code: Code::Fixed(code.into()),
            severity: self.severity,
            retryable: self.retryable,
            retry_after: self.retry_after,
        })
    }
}
