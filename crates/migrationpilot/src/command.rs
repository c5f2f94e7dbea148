//! Commands that stages run: argv without a shell, `{item}` as one argument, the run's
//! variables in their environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use self_healing::StageError;

/// One command of a stage (its handler, or its rollback, failover or reset).
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
}

/// The variables a command gets besides the stage's `env`.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub project: &'a str,
    pub run: &'a str,
    pub stage: &'a str,
    pub attempt: u32,
    pub item: Option<&'a str>,
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
        self_healing::process::run(&self.argv_for(ctx.item), &env, Some(&self.workdir)).await
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
