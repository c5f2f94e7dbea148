//! Pipeline files: YAML or TOML (by extension) with the seed's keys, `${NAME}` taken from the
//! environment, and errors that name the file, line, column and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use self_healing::classify::ErrorRuleConfig;
use self_healing::config::{HealingConfig, RetryPolicyConfig, did_you_mean};
use self_healing::duration::option::deserialize as opt_duration;
use self_healing::pipeline::{RestartBackoff, RestartFrom};
use self_healing_checks::CheckConfig;

use crate::env::{Env, Substituting};
use crate::secrets::Secrets;

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineFile {
    /// The project the runs are recorded under (the command line may override it).
    pub project: String,
    /// The stages, run in this order.
    pub stages: Vec<StageFile>,
    /// The `healing` section; healing is on with no strategies when it is missing.
    #[serde(default)]
    pub healing: HealingFile,
    /// The file's own error rules: what its commands print, as codes strategies match, tried
    /// before the built-in ones (docs/HEALING.md, "Healing real commands").
    #[serde(default)]
    pub errors: Vec<ErrorRuleConfig>,
    /// Variables whose values are secrets though their names do not look it (names with
    /// `TOKEN`, `PASSWORD`, `KEY`… are secrets already): taken from the environment or a
    /// stage's `env:`, and masked wherever anything is shown or stored.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// One stage. `command` is an argv run without a shell; `{item}` in any argument is replaced by
/// the item, as one argument.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageFile {
    /// The stage's name, unique in the file.
    pub name: String,
    /// The argv the stage runs (once, or once per item).
    pub command: Vec<String>,
    /// The items to run `command` on, one by one; `None` runs it once for the whole stage.
    pub items: Option<Items>,
    /// How many items run at once (default 1); only for stages with `items`.
    pub concurrency: Option<usize>,
    /// Cuts each attempt after this long; `None` lets attempts run as long as they take.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<self_healing::duration::Written>")]
    pub timeout: Option<Duration>,
    /// The stage's own retry policy: unset keys take the global `healing.retryPolicy`'s. It
    /// retries its `retryableErrors` by itself, and `retry` strategies without a policy of
    /// their own use it.
    pub retry_policy: Option<RetryPolicyConfig>,
    /// The argv that compensates the stage when the run is rolled back: per item if it names
    /// `{item}`, else once for the whole stage.
    pub rollback: Option<Vec<String>>,
    /// The alternate argv the `failover` action switches the stage to.
    pub failover: Option<Vec<String>>,
    /// The argv run before the stage starts over after a restart, to clear what it left behind.
    pub reset: Option<Vec<String>>,
    /// Variables added to the environment of every command of the stage.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The directory the stage's commands run in, relative to the pipeline file's folder
    /// (default: that folder).
    pub workdir: Option<PathBuf>,
    /// How often a run may restart this stage (default 3); past that a restart fails it.
    pub max_restarts: Option<u32>,
    /// Health checks (of `healing.healthMonitor.checks`) the stage depends on: while one is
    /// unhealthy the stage starts no new attempt; it resumes as soon as none is.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Waits before each restart of the stage, doubling in a crash loop; `None` restarts at
    /// once.
    pub restart_backoff: Option<RestartBackoff>,
    /// Where a restart starts the stage over: `start` (the default) or `unfinished` (the
    /// items an earlier pass of the run finished are kept).
    #[serde(default)]
    pub restart_from: RestartFrom,
    /// The shared circuit breaker (of `healing.breakers`) the stage uses instead of its own,
    /// so stages calling one dependency trip together.
    pub breaker: Option<String>,
}

/// Where a stage's items come from: a list, `{ file: items.txt }` (one item per line) or
/// `{ glob: "legacy/**/*.cbl" }` (paths relative to the pipeline file's folder).
#[derive(Debug, Clone, PartialEq)]
pub enum Items {
    /// The items themselves, numbers written as text.
    List(Vec<String>),
    /// A file with one item per line, relative to the pipeline file's folder.
    File(PathBuf),
    /// A glob pattern relative to the pipeline file's folder; each matching path is an item.
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

/// What [`Items`]' `Deserialize` reads.
impl JsonSchema for Items {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Items".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Where a stage's items come from: a list, `{ file: items.txt }` (one item per line) or `{ glob: \"legacy/**/*.cbl\" }`, paths relative to the pipeline file's folder.",
            "anyOf": [
                {
                    "description": "The items themselves; numbers reach commands as text.",
                    "type": "array",
                    "items": { "type": ["string", "number"] }
                },
                {
                    "description": "A file with one item per line.",
                    "type": "object",
                    "properties": { "file": { "type": "string" } },
                    "required": ["file"],
                    "additionalProperties": false
                },
                {
                    "description": "A glob pattern; each matching path is an item.",
                    "type": "object",
                    "properties": { "glob": { "type": "string" } },
                    "required": ["glob"],
                    "additionalProperties": false
                }
            ]
        })
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

/// The seed's `SelfHealingConfig`, with the checks `self-healing-checks` provides.
pub type HealingFile = HealingConfig<CheckConfig>;

/// A problem in a file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The pipeline file.
    pub file: PathBuf,
    /// The line of the problem, from 1; `None` when it cannot be located.
    pub line: Option<u64>,
    /// The column on that line, from 1; `None` when it cannot be located.
    pub column: Option<u64>,
    /// The key path, `healing.strategies[0].config.maxAttempts`.
    pub path: Option<String>,
    /// What is wrong.
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

/// A pipeline file as read: parsed with `${NAME}` substituted into its values, its text (for
/// locating later errors), and the values of the secret-looking variables it used.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed file, variables substituted.
    pub file: PipelineFile,
    /// The file's text as written (no substitution), for locating errors found later.
    pub text: String,
    /// Values to mask wherever something is shown or stored.
    pub secrets: Secrets,
    /// `healing.alerts` as written, `${NAME}`s unsubstituted: what the store keeps so `serve`
    /// can deliver alerts a run left owed, and raise `run-lost`, with its own environment's
    /// secrets.
    pub alert_settings: Option<serde_json::Value>,
}

/// Reads and parses a pipeline file, taking `${NAME}` from the process's environment.
pub fn load(path: &Path) -> Result<Loaded, FileError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// [`load`] with the variables `lookup` gives.
pub fn load_with(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, FileError> {
    let at = |message: String| FileError {
        file: path.to_owned(),
        line: None,
        column: None,
        path: None,
        message,
    };
    let format = Format::of(path)
        .ok_or_else(|| at("a pipeline file ends in .yaml, .yml or .toml".to_owned()))?;
    let text = read_bounded(path).map_err(at)?;
    parse(path, text, format, lookup)
}

/// The largest pipeline file read: a file is configuration, not data (items go in an items
/// file, read as a stage pulls them).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The text of a regular file of at most [`MAX_FILE_BYTES`]; a FIFO or a device is refused
/// (it might never end).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    // Looked at before it is opened: opening a FIFO waits for a writer.
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_file() {
        return Err("cannot read: not a regular file (a FIFO or device is refused)".to_owned());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "cannot read: larger than {} MiB, the most a pipeline file may be",
            MAX_FILE_BYTES / 1024 / 1024
        ));
    }
    Ok(text)
}

/// How a pipeline file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.toml`.
    Toml,
}

impl Format {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Some(Format::Yaml),
            Some("toml") => Some(Format::Toml),
            _ => None,
        }
    }
}

/// Parses the text of a pipeline file; `path` names it in errors.
pub fn parse(
    path: &Path,
    text: String,
    format: Format,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, FileError> {
    let env = Env::new(lookup);
    let parsed = match format {
        Format::Yaml => parse_yaml(&text, &env),
        Format::Toml => parse_toml(&text, &env),
    };
    let file = match parsed {
        Ok(file) => file,
        Err(l) => {
            // A value out of place is quoted in the message: a secret among them is not.
            let mut secrets = env.into_secrets();
            secrets.add_environment();
            return Err(FileError {
                file: path.to_owned(),
                line: l.line,
                column: l.column,
                path: l.path,
                message: secrets.mask(&l.message).into_owned(),
            });
        }
    };
    let raw: Option<serde_json::Value> = match format {
        Format::Yaml => serde_saphyr::from_str(&text).ok(),
        Format::Toml => toml::from_str(&text).ok(),
    };
    let alert_settings = raw.and_then(|raw| raw.pointer("/healing/alerts").cloned());
    let secrets = secrets_of(&file, env.into_secrets(), lookup);
    Ok(Loaded {
        file,
        text,
        secrets,
        alert_settings,
    })
}

/// Every secret a run of `file` knows of: those `${NAME}` brought (`substituted`), every
/// secret-looking variable its stages inherit from this process or get from their `env:`, and
/// the variables the file's `secrets:` names.
fn secrets_of(
    file: &PipelineFile,
    substituted: Secrets,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Secrets {
    let mut secrets = substituted;
    secrets.add_environment();
    for stage in &file.stages {
        secrets.add_variables(stage.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    for name in &file.secrets {
        if let Some(value) = lookup(name) {
            secrets.add(&value);
        }
        for stage in &file.stages {
            if let Some(value) = stage.env.get(name) {
                secrets.add(value);
            }
        }
    }
    secrets
}

/// A parse error before it knows its file.
struct Located {
    line: Option<u64>,
    column: Option<u64>,
    path: Option<String>,
    message: String,
}

fn parse_yaml(text: &str, env: &Env<'_>) -> Result<PipelineFile, Located> {
    let mut path = None;
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(Substituting::new(de, env)).map_err(|e| {
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

fn parse_toml(text: &str, env: &Env<'_>) -> Result<PipelineFile, Located> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
    serde_path_to_error::deserialize(Substituting::new(de, env)).map_err(|e| {
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
            if let Some(at) = flow_entry(text, offset, index) {
                offset = at;
                continue;
            }
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

/// Where entry `index` of a flow sequence (`key: [a, b]`) whose key is at `offset` starts,
/// if the key's value is one.
fn flow_entry(text: &str, offset: usize, index: usize) -> Option<usize> {
    let line_end = text[offset..].find('\n').map_or(text.len(), |e| offset + e);
    let colon = offset + text[offset..line_end].find(':')?;
    let value = text[colon + 1..line_end].trim_start();
    if !value.starts_with('[') || value.starts_with("[[") {
        return None;
    }
    let start = line_end - value.len() + 1;
    let skip = |at: usize| at + (text[at..].len() - text[at..].trim_start().len());
    if index == 0 {
        return Some(skip(start));
    }
    let (mut depth, mut seen) = (0usize, 0usize);
    for (i, c) in text[start..].char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' if depth == 0 => return None,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                seen += 1;
                if seen == index {
                    return Some(skip(start + i + 1));
                }
            }
            _ => {}
        }
    }
    None
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
    fn key_paths_are_located_in_the_text() {
        let text = "project: p\nstages:\n  - name: a\n    command: [x]\n  - name: b\n    command: [y]\n    timeout: 0\n";
        assert_eq!(locate(text, "stages[1].timeout"), Some((7, 5)));
        assert_eq!(locate(text, "stages[0].name"), Some((3, 5)));
        assert_eq!(locate(text, "project"), Some((1, 1)));
        let flow = "stages:\n  - name: a\n    dependsOn: [api, db, { x: 1 }]\n";
        assert_eq!(locate(flow, "stages[0].dependsOn[0]"), Some((3, 17)));
        assert_eq!(locate(flow, "stages[0].dependsOn[1]"), Some((3, 22)));
        assert_eq!(locate(flow, "stages[0].dependsOn[2]"), Some((3, 26)));
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
