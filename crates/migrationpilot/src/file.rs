//! Pipeline files: YAML or TOML (by extension) with the seed's keys, `${NAME}` taken from the
//! environment, and errors that name the file, line, column and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use self_healing::alert::ChannelConfig;
use self_healing::config::{
    BudgetConfig, CircuitBreakerConfig, MetricsCollectorConfig, RetryPolicyConfig, StrategyConfig,
    did_you_mean,
};
use self_healing::duration::option::deserialize as opt_duration;
use self_healing_checks::CheckConfig;

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineFile {
    pub project: String,
    pub stages: Vec<StageFile>,
    #[serde(default)]
    pub healing: HealingFile,
}

/// One stage. `command` is an argv run without a shell; `{item}` in any argument is replaced by
/// the item, as one argument.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageFile {
    pub name: String,
    pub command: Vec<String>,
    pub items: Option<Items>,
    pub concurrency: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub rollback: Option<Vec<String>>,
    pub failover: Option<Vec<String>>,
    pub reset: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub max_restarts: Option<u32>,
}

/// Where a stage's items come from: a list, `{ file: items.txt }` (one item per line) or
/// `{ glob: "legacy/**/*.cbl" }` (paths relative to the pipeline file's folder).
#[derive(Debug, Clone, PartialEq)]
pub enum Items {
    List(Vec<String>),
    File(PathBuf),
    Glob(String),
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;

        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of items, `{ file: PATH }` or `{ glob: PATTERN }`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<ItemValue>()? {
                    items.push(item.0);
                }
                Ok(Items::List(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("give `file` or `glob`"));
                };
                let items = match key.as_str() {
                    "file" => Items::File(map.next_value()?),
                    "glob" => Items::Glob(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["file", "glob"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`{extra}`: give one of `file` or `glob`, not both"
                    )));
                }
                Ok(items)
            }
        }

        deserializer.deserialize_any(ItemsVisitor)
    }
}

/// An item written as a string or a number; items reach commands as text.
struct ItemValue(String);

impl<'de> Deserialize<'de> for ItemValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ItemValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an item (a string or a number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ItemValue, E> {
                Ok(ItemValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ItemValue, E> {
                Ok(ItemValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ItemValue, E> {
                Ok(ItemValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ItemValue, E> {
                Ok(ItemValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The seed's `SelfHealingConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealingFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub health_monitor: Option<HealthMonitorFile>,
    pub metrics_collector: Option<MetricsCollectorConfig>,
    #[serde(default)]
    pub strategies: Vec<StrategyConfig>,
    pub alerts: Option<AlertsFile>,
    pub retry_policy: Option<RetryPolicyConfig>,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    pub budget: Option<BudgetConfig>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub evaluation_interval: Option<Duration>,
}

impl Default for HealingFile {
    fn default() -> Self {
        HealingFile {
            enabled: true,
            health_monitor: None,
            metrics_collector: None,
            strategies: Vec::new(),
            alerts: None,
            retry_policy: None,
            circuit_breaker: None,
            budget: None,
            evaluation_interval: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The seed's `healthMonitor`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthMonitorFile {
    #[serde(default, deserialize_with = "opt_duration")]
    pub check_interval: Option<Duration>,
    /// The seed also writes these two at the top level of `healthMonitor`.
    pub consecutive_failures: Option<u32>,
    pub consecutive_successes: Option<u32>,
    pub thresholds: Option<ThresholdsFile>,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdsFile {
    pub consecutive_failures: Option<u32>,
    pub consecutive_successes: Option<u32>,
}

/// The seed's `alerts`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsFile {
    #[serde(default)]
    pub thresholds: Vec<AlertThresholdFile>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// Alert when `metric` reaches `warning` or `critical`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertThresholdFile {
    pub metric: String,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

/// A problem in a file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The key path, `healing.strategies[0].config.maxAttempts`.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(path) = &self.path {
            write!(f, "`{path}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for FileError {}

/// Reads and parses a pipeline file. The text is kept for locating later errors.
pub fn load(path: &Path) -> Result<(PipelineFile, String), FileError> {
    let at = |message: String| FileError {
        file: path.to_owned(),
        line: None,
        column: None,
        path: None,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read: {e}")))?;
    let text = substitute_env(&text, |name| std::env::var(name).ok()).map_err(
        |(line, column, message)| FileError {
            line: Some(line),
            column: Some(column),
            ..at(message)
        },
    )?;
    let file = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => parse_yaml(&text),
        Some("toml") => parse_toml(&text),
        _ => Err(Located::message(
            "a pipeline file ends in .yaml, .yml or .toml".to_owned(),
        )),
    }
    .map_err(|l| FileError {
        line: l.line,
        column: l.column,
        path: l.path,
        ..at(l.message)
    })?;
    Ok((file, text))
}

/// A parse error before it knows its file.
struct Located {
    line: Option<u64>,
    column: Option<u64>,
    path: Option<String>,
    message: String,
}

impl Located {
    fn message(message: String) -> Self {
        Located {
            line: None,
            column: None,
            path: None,
            message,
        }
    }
}

fn parse_yaml(text: &str) -> Result<PipelineFile, Located> {
    let mut path = None;
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let location = e.location();
        Located {
            line: location.map(|l| l.line()),
            column: location.map(|l| l.column()),
            path: path.filter(|p| p != "."),
            message: polish(&strip_location(&e.to_string())),
        }
    })
}

fn parse_toml(text: &str) -> Result<PipelineFile, Located> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        toml_error(text, e.inner(), Some(path).filter(|p| p != "."))
    })
}

fn toml_error(text: &str, error: &toml::de::Error, path: Option<String>) -> Located {
    let (line, column) = match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Located {
        line,
        column,
        path,
        message: polish(error.message()),
    }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, column)
}

/// Drops the " at line N column M" parsers append: the location is printed up front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
    .trim()
    .to_owned()
}

/// Adds a did-you-mean to serde's "unknown field `x`, expected one of `a`, `b`" (YAML's parser
/// lists the names without backticks).
fn polish(message: &str) -> String {
    let message = message.trim().to_owned();
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message;
    };
    let Some((given, tail)) = rest.split_once('`') else {
        return message;
    };
    let Some((_, expected)) = tail
        .split_once("expected one of ")
        .or_else(|| tail.split_once("expected "))
    else {
        return message;
    };
    let candidates: Vec<&str> = expected
        .split(", ")
        .map(|c| c.trim().trim_matches('`'))
        .collect();
    format!("{message}{}", did_you_mean(given, candidates.into_iter()))
}

/// Replaces `${NAME}` with the variable's value; `$${` stays a literal `${`. A variable that is
/// not set is an error at its line and column.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (u64, u64, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            consumed += start + 2;
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            let (line, column) = line_column(text, consumed + start);
            return Err((line, column, "`${` without a closing `}`".into()));
        };
        let name = &rest[start + 2..start + end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        let (line, column) = line_column(text, consumed + start);
        if !valid {
            return Err((
                line,
                column,
                format!("`${{{name}}}` is not an environment variable name"),
            ));
        }
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => {
                return Err((
                    line,
                    column,
                    format!("environment variable `{name}` is not set"),
                ));
            }
        }
        consumed += start + end + 1;
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a key path appears in the text: the line and column of its last key. Used for errors
/// found after parsing (a stage that cannot be built, say).
pub fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    // Walk the path's keys in order through the text; list indexes count `- ` entries.
    let mut offset = 0;
    for part in path.split('.') {
        let (key, indexes) = match part.split_once('[') {
            Some((key, rest)) => (
                key,
                rest.trim_end_matches(']')
                    .split("][")
                    .map(|i| i.parse::<usize>().ok())
                    .collect(),
            ),
            None => (part, Vec::new()),
        };
        if !key.is_empty() {
            let found = find_key(&text[offset..], key)?;
            offset += found;
        }
        for index in indexes {
            let index = index?;
            let mut entry = offset;
            for _ in 0..=index {
                let next = text[entry..]
                    .find("- ")
                    .or_else(|| text[entry..].find("[["))?;
                entry += next + 2;
            }
            offset = entry - 2;
        }
    }
    Some(line_column(text, offset))
}

fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(key) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + key.len()..]
            .trim_start_matches(['"', '\''])
            .chars()
            .next();
        let boundary_before = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary_before && matches!(after, Some(':' | '=' | ' ')) {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution_names_what_is_missing_and_where() {
        let env = |name: &str| (name == "HOOK").then(|| "https://hooks.example/x".to_owned());
        assert_eq!(
            substitute_env("a: ${HOOK}\n", env).unwrap(),
            "a: https://hooks.example/x\n"
        );
        assert_eq!(
            substitute_env("cost: $${HOOK}", env).unwrap(),
            "cost: ${HOOK}"
        );
        assert_eq!(
            substitute_env("a: 1\nb: ${MISSING}", env).unwrap_err(),
            (2, 4, "environment variable `MISSING` is not set".into())
        );
        assert!(
            substitute_env("a: ${", env)
                .unwrap_err()
                .2
                .contains("without a closing")
        );
        assert!(
            substitute_env("a: ${1X}", env)
                .unwrap_err()
                .2
                .contains("not an environment variable name")
        );
    }

    #[test]
    fn key_paths_are_located_in_the_text() {
        let text = "project: p\nstages:\n  - name: a\n    command: [x]\n  - name: b\n    command: [y]\n    timeout: 0\n";
        assert_eq!(locate(text, "stages[1].timeout"), Some((7, 5)));
        assert_eq!(locate(text, "stages[0].name"), Some((3, 5)));
        assert_eq!(locate(text, "project"), Some((1, 1)));
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        assert_eq!(
            polish("unknown field `concurency`, expected one of `name`, `concurrency`"),
            "unknown field `concurency`, expected one of `name`, `concurrency` (did you mean `concurrency`?)"
        );
        assert!(
            polish("unknown field `comand`, expected one of name, command, items")
                .ends_with("(did you mean `command`?)")
        );
    }
}
