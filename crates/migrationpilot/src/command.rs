//! Commands that stages run: argv without a shell, `{item}` as one argument, the run's
//! variables in their environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use self_healing::classify::Classifier;
use self_healing::event::AttemptOutput;
use self_healing::{StageContext, StageError};

use crate::secrets::Secrets;

/// One command of a stage (its handler, or its rollback, failover or reset).
#[derive(Debug, Clone)]
pub struct Command {
    /// The program and its arguments, run without a shell; `{item}` in any argument is replaced
    /// by the item.
    pub argv: Vec<String>,
    /// The stage's `env`: variables added to the command's environment.
    pub env: BTreeMap<String, String>,
    /// The directory the command runs in.
    pub workdir: PathBuf,
    /// Values masked in the command's error text and its log (its output can echo them).
    pub secrets: Secrets,
    /// What its failures mean: the file's `errors:` rules, then the built-in ones.
    pub classifier: Arc<Classifier>,
    /// The metric names a `{"metric": NAME, "value": X}` line of standard output may record:
    /// the built-ins and the declared ones. Other names are ignored, so a command cannot make
    /// the collector (and the exporter) grow without bound.
    pub metrics: Arc<[String]>,
}

/// A standard-output line that records a metric.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricLine {
    metric: String,
    value: f64,
}

/// The metric a line records, if it is a `{"metric": NAME, "value": X}` object with a finite
/// value.
pub fn metric_line(line: &str) -> Option<(String, f64)> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let parsed: MetricLine = serde_json::from_str(line).ok()?;
    parsed
        .value
        .is_finite()
        .then_some((parsed.metric, parsed.value))
}

/// The variables a command gets besides the stage's `env`.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// The project name, as `MIGRATIONPILOT_PROJECT`.
    pub project: &'a str,
    /// The run id, as `MIGRATIONPILOT_RUN_ID`.
    pub run: &'a str,
    /// The stage name, as `MIGRATIONPILOT_STAGE`.
    pub stage: &'a str,
    /// Which attempt this is, from 1, as `MIGRATIONPILOT_ATTEMPT`.
    pub attempt: u32,
    /// The item being processed, as `MIGRATIONPILOT_ITEM` and in place of `{item}`; `None` for
    /// a stage without items.
    pub item: Option<&'a str>,
    /// The item's key, stable across attempts and resumed runs, as
    /// `MIGRATIONPILOT_IDEMPOTENCY_KEY`; `None` for a stage without items.
    pub idempotency_key: Option<&'a str>,
}

impl Command {
    /// The argv with `{item}` replaced: each argument stays one argument, whatever the item holds.
    pub fn argv_for(&self, item: Option<&str>) -> Vec<String> {
        self.argv
            .iter()
            .map(|arg| match item {
                Some(item) => arg.replace("{item}", item),
                None => arg.clone(),
            })
            .collect()
    }

    /// Runs the command to its end (see [`Command::execute`]): each metric line records into
    /// the stage's scope of the collector, and the log is attached to the attempt.
    pub async fn run(&self, stage: &StageContext<()>, ctx: &Context<'_>) -> Result<(), StageError> {
        let (result, output) = self
            .execute(ctx, &mut |metric, value| stage.record(metric, value))
            .await;
        stage.attach_output(output);
        result
    }

    /// Runs the command to its end (see [`self_healing::process::run_logged`]: no shell,
    /// errors from the exit status and the last line of standard error, its process group
    /// killed if the future is dropped), with the run's variables in its environment. Each
    /// `{"metric": NAME, "value": X}` line of its standard output (for a known name) goes to
    /// `on_metric`; the tails of both streams come back, secrets masked, as its log.
    pub async fn execute(
        &self,
        ctx: &Context<'_>,
        on_metric: &mut (dyn FnMut(&str, f64) + Send),
    ) -> (Result<(), StageError>, AttemptOutput) {
        let attempt = ctx.attempt.to_string();
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend([
            ("MIGRATIONPILOT_PROJECT", ctx.project),
            ("MIGRATIONPILOT_RUN_ID", ctx.run),
            ("MIGRATIONPILOT_STAGE", ctx.stage),
            ("MIGRATIONPILOT_ATTEMPT", attempt.as_str()),
        ]);
        if let Some(item) = ctx.item {
            env.push(("MIGRATIONPILOT_ITEM", item));
        }
        if let Some(key) = ctx.idempotency_key {
            env.push(("MIGRATIONPILOT_IDEMPOTENCY_KEY", key));
        }
        let mut on_line = |line: &str| {
            if let Some((metric, value)) = metric_line(line)
                && self.metrics.contains(&metric)
            {
                on_metric(&metric, value);
            }
        };
        let (result, stdout, stderr) = self_healing::process::run_logged(
            &self.argv_for(ctx.item),
            &env,
            Some(&self.workdir),
            &self.classifier,
            &mut on_line,
        )
        .await;
        let output = AttemptOutput {
            stdout: self.secrets.mask(&stdout.text).into_owned(),
            stderr: self.secrets.mask(&stderr.text).into_owned(),
            stdout_cut: stdout.cut,
            stderr_cut: stderr.cut,
        };
        (result.map_err(|error| self.mask(error)), output)
    }

    /// `error` with the secrets masked in its message.
    fn mask(&self, error: StageError) -> StageError {
        match self.secrets.mask(error.message()) {
            std::borrow::Cow::Borrowed(_) => error,
            std::borrow::Cow::Owned(message) => error.with_message(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            argv: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                "{item}".into(),
            ],
            env: BTreeMap::new(),
            workdir: std::env::temp_dir(),
            secrets: Secrets::default(),
            classifier: Arc::new(Classifier::builtin().clone()),
            metrics: vec!["queueDepth".to_owned()].into(),
        }
    }

    fn ctx(item: Option<&str>) -> Context<'_> {
        Context {
            project: "p",
            run: "r",
            stage: "s",
            attempt: 1,
            item,
            idempotency_key: None,
        }
    }

    #[tokio::test]
    async fn items_reach_the_command_as_one_argument_unchanged() {
        for item in [
            "two words",
            "quote\"s and 'single'",
            "semi;colon",
            "$(touch /tmp/pwned)",
            "`id`",
            "-rf",
        ] {
            let check = sh("test \"$#\" = 1 && test \"$1\" = \"$MIGRATIONPILOT_ITEM\"");
            let stage = StageContext::standalone("s", Some(item), 1);
            assert_eq!(check.run(&stage, &ctx(Some(item))).await, Ok(()), "{item}");
        }
    }

    #[tokio::test]
    async fn metric_lines_are_recorded_and_both_streams_kept_masked() {
        let mut command = sh(
            "echo '{\"metric\": \"queueDepth\", \"value\": 20000}'; echo '{\"metric\": \"made-up\", \"value\": 1}'; echo 'using tok-abc123'; echo 'tok-abc123 went wrong' >&2; exit 3",
        );
        let mut secrets = Secrets::default();
        secrets.add("tok-abc123");
        command.secrets = secrets;
        let stage = StageContext::standalone("s", None, 1);
        let error = command.run(&stage, &ctx(None)).await.unwrap_err();
        assert_eq!(
            error.message(),
            "*** went wrong (`sh` exited with status 3)"
        );
        let queue = stage
            .metrics()
            .find(self_healing::metrics::Scope::Stage("s"), "queueDepth");
        assert_eq!(queue.and_then(|s| s.last()), Some(20000.0));
        assert!(
            stage
                .metrics()
                .find(self_healing::metrics::Scope::Stage("s"), "made-up")
                .is_none(),
            "undeclared names are ignored"
        );
        let output = stage.attached_output().unwrap();
        assert!(output.stdout.contains("using ***"), "{output:?}");
        assert_eq!(output.stderr, "*** went wrong\n");
        assert_eq!((output.stdout_cut, output.stderr_cut), (0, 0));
    }

    #[test]
    fn only_exact_metric_objects_count() {
        assert_eq!(
            metric_line(r#" {"metric": "queueDepth", "value": 3.5} "#),
            Some(("queueDepth".to_owned(), 3.5))
        );
        for line in [
            "queueDepth 3",
            r#"{"metric": "q"}"#,
            r#"{"metric": "q", "value": "3"}"#,
            r#"{"metric": "q", "value": 3, "unit": "s"}"#,
        ] {
            assert_eq!(metric_line(line), None, "{line}");
        }
    }
}
