//! What a failed command's output means: real tools print their own errors (psql's
//! "Connection refused", curl's exit 7, Python's `ConnectionResetError`), and healing
//! strategies match codes (`ECONNREFUSED`, `ETIMEDOUT`, `HTTP_503`…). A [`Classifier`] turns
//! one into the other: a file's own [`rules`](ErrorRuleConfig) first, then the built-in rules
//! for common tools ([`builtin`]). The error keeps its original text and names the rule that
//! classified it.
//!
//! ```
//! use self_healing::classify::{Classifier, Failed};
//!
//! let psql = "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n\
//!             \tIs the server running on that host and accepting TCP/IP connections?\n";
//! let found = Classifier::builtin()
//!     .classify(&Failed { program: "psql", stderr: psql, stdout: "", exit: Some(2) })
//!     .unwrap();
//! assert_eq!(found.code, "ECONNREFUSED");
//! assert!(found.retryable);
//! assert_eq!(&*found.rule, "builtin:connection-refused");
//! ```

pub mod builtin;
mod rules;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use regex::Regex;

use crate::error::Severity;

pub use rules::{ErrorRuleConfig, Stream};

/// What a command left when it failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failed<'a> {
    /// The program as the command names it (its path's last part is what rules look at).
    pub program: &'a str,
    /// The tail of its standard error.
    pub stderr: &'a str,
    /// The tail of its standard output.
    pub stdout: &'a str,
    /// Its exit status; `None` when a signal ended it.
    pub exit: Option<i32>,
}

impl Failed<'_> {
    /// The program's name without its folder.
    fn program_name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(self.program)
    }
}

/// What an error was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The code healing strategies match (`ECONNREFUSED`, `HTTP_503`…).
    pub code: String,
    /// How bad it is.
    pub severity: Severity,
    /// Whether trying again may succeed: a retry policy never retries an error classified as
    /// not retryable (a wrong password, a full disk).
    pub retryable: bool,
    /// The least wait before a retry the output asked for (a `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The rule that matched: `builtin:NAME`, or `errors[i]` for a file's own.
    pub rule: Arc<str>,
    /// The line that matched, the error's message; `None` for a rule of exit codes only.
    pub line: Option<String>,
}

/// How a matched rule names its code.
#[derive(Debug, Clone)]
enum Code {
    /// Always this code.
    Fixed(Arc<str>),
    /// `HTTP_<status>` from the pattern's first group: 401 and 403 are `EAUTH`; 408, 425,
    /// 429 and 5xx are retryable.
    HttpStatus,
}

/// One rule: what it looks for, and what the error then is.
#[derive(Debug, Clone)]
pub struct Rule {
    name: Arc<str>,
    program: Option<&'static str>,
    exit: Option<i32>,
    pattern: Option<Regex>,
    stream: Stream,
    code: Code,
    severity: Severity,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Rules in the order they are tried: the first that matches classifies the error.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<Rule>,
}

/// How many lines from the end of a stream rules look at: tools print their error last, and
/// sometimes a hint after it (psql's "Is the server running…?").
const LINES_LOOKED_AT: usize = 20;

impl Classifier {
    /// The built-in rules for common tools, shared.
    pub fn builtin() -> &'static Classifier {
        static BUILTIN: OnceLock<Classifier> = OnceLock::new();
        BUILTIN.get_or_init(|| Classifier {
            rules: builtin::rules(),
        })
    }

    /// `rules` (a file's own), then the built-in ones.
    pub fn with_rules(rules: Vec<Rule>) -> Classifier {
        let mut all = rules;
        all.extend(Classifier::builtin().rules.iter().cloned());
        Classifier { rules: all }
    }

    /// Whether it has rules of a file's own, beside the built-in ones.
    pub fn is_builtin_only(&self) -> bool {
        self.rules.len() == Classifier::builtin().rules.len()
    }

    /// What `failed` means, by the first rule that matches; `None` when none does.
    pub fn classify(&self, failed: &Failed<'_>) -> Option<Classified> {
        self.rules.iter().find_map(|rule| rule.apply(failed))
    }
}

impl Rule {
    fn apply(&self, failed: &Failed<'_>) -> Option<Classified> {
        if self
            .program
            .is_some_and(|program| program != failed.program_name())
        {
            return None;
        }
        if self.exit.is_some() && self.exit != failed.exit {
            return None;
        }
        let mut code = match &self.code {
            Code::Fixed(code) => code.to_string(),
            Code::HttpStatus => String::new(),
        };
        let (mut severity, mut retryable) = (self.severity, self.retryable);
        let mut line = None;
        if let Some(pattern) = &self.pattern {
            let (found, captures) = self.find(pattern, failed)?;
            if let Code::HttpStatus = self.code {
                let status: u16 = captures?.parse().ok()?;
                (code, retryable) = http_status(status);
                severity = Severity::Error;
            }
            line = Some(found.to_owned());
        } else if let Code::HttpStatus = self.code {
            return None;
        }
        let retry_after = self.retry_after.or_else(|| retry_after_of(failed));
        Some(Classified {
            code,
            severity,
            retryable,
            retry_after: retry_after.filter(|_| retryable),
            rule: Arc::clone(&self.name),
            line,
        })
    }

    /// The last line of the streams looked at that matches, with the pattern's first group.
    fn find<'t>(&self, pattern: &Regex, failed: &Failed<'t>) -> Option<(&'t str, Option<&'t str>)> {
        let streams: &[&'t str] = match self.stream {
            Stream::Stderr => &[failed.stderr],
            Stream::Stdout => &[failed.stdout],
            Stream::Any => &[failed.stderr, failed.stdout],
        };
        streams.iter().find_map(|text| {
            text.lines()
                .rev()
                .filter(|l| !l.trim().is_empty())
                .take(LINES_LOOKED_AT)
                .find_map(|line| {
                    let captures = pattern.captures(line)?;
                    let group = captures.get(1).map(|g| g.as_str());
                    Some((line.trim(), group))
                })
        })
    }
}

/// The code and retryability of an HTTP status.
fn http_status(status: u16) -> (String, bool) {
    match status {
        401 | 403 => ("EAUTH".to_owned(), false),
        408 | 425 | 429 | 500..=599 => (format!("HTTP_{status}"), true),
        _ => (format!("HTTP_{status}"), false),
    }
}

/// A `Retry-After: N` (seconds) the output carries, as an HTTP answer printed by `curl -i` or
/// a tool's own message does.
fn retry_after_of(failed: &Failed<'_>) -> Option<Duration> {
    static RETRY_AFTER: OnceLock<Regex> = OnceLock::new();
    let pattern = RETRY_AFTER.get_or_init(|| {
        Regex::new(r"(?i)retry[- ]after:?\s*(\d{1,6})\b").expect("a valid pattern")
    });
    [failed.stderr, failed.stdout].iter().find_map(|text| {
        let captures = pattern.captures(text)?;
        let seconds: u64 = captures.get(1)?.as_str().parse().ok()?;
        Some(Duration::from_secs(seconds))
    })
}

#[cfg(test)]
mod tests;
