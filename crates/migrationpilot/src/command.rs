//! Commands that stages run: argv without a shell, `{item}` as one argument, the run's
//! variables in their environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use self_healing::StageError;

use crate::env::Secrets;

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
    /// Values masked in the command's error text (its standard error can echo them).
    pub secrets: Secrets,
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

    /// Runs the command to its end (see [`self_healing::process::run`]: no shell, errors from
    /// the exit status and the last line of standard error, its process group killed if the
    /// future is dropped), with the run's variables in its environment.
    pub async fn run(&self, ctx: &Context<'_>) -> Result<(), StageError> {
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
        self_healing::process::run(&self.argv_for(ctx.item), &env, Some(&self.workdir))
            .await
            .map_err(|error| self.mask(error))
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
            assert_eq!(check.run(&ctx(Some(item))).await, Ok(()), "{item}");
        }
    }
}
