//! The contenders a file's healing is simulated beside, each the file with another healing
//! section: the file's own, its `retryPolicy` alone, none, and docs/HEALING.md's recommended
//! configuration fitted to its stages.

use std::time::Duration;

use self_healing::config::{ActionConfig, RetryPolicyConfig, TriggerConfig};
use self_healing::pipeline::{RestartBackoff, RestartFrom};

use crate::file::{HealingFile, PipelineFile};

/// The recommended healing section (docs/HEALING.md), as YAML.
const RECOMMENDED: &str = include_str!("recommended.yaml");

/// The recommended configuration's check and breaker, which every stage it is fitted to uses.
const DEPENDENCY: &str = "downstream";

/// Who heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// The file's own healing.
    ThisFile,
    /// docs/HEALING.md's recommended configuration, fitted to the file's stages.
    Recommended,
    /// The file's `retryPolicy` (global and per stage) and nothing else.
    RetryOnly,
    /// One attempt each, nothing else.
    NoHealing,
}

impl Contender {
    /// Every contender, the file's own first.
    pub const ALL: [Contender; 4] = [
        Contender::ThisFile,
        Contender::Recommended,
        Contender::RetryOnly,
        Contender::NoHealing,
    ];

    /// Its name in tables and `--json` rows.
    pub fn name(self) -> &'static str {
        match self {
            Contender::ThisFile => "this file",
            Contender::Recommended => "recommended",
            Contender::RetryOnly => "retry only",
            Contender::NoHealing => "no healing",
        }
    }

    /// The file as this contender runs it.
    pub fn fit(self, file: &PipelineFile) -> PipelineFile {
        let mut fitted = file.clone();
        match self {
            Contender::ThisFile => {}
            Contender::Recommended => {
                // The file's sampling is the file's: it is not healing.
                fitted.healing = HealingFile {
                    metrics_collector: file.healing.metrics_collector.clone(),
                    ..recommended()
                };
                for stage in &mut fitted.stages {
                    stage.retry_policy = None;
                    stage.depends_on = vec![DEPENDENCY.to_owned()];
                    stage.breaker = Some(DEPENDENCY.to_owned());
                    stage.restart_from = RestartFrom::Unfinished;
                    stage.restart_backoff = Some(RestartBackoff {
                        initial_delay: Duration::from_secs(1),
                        max_delay: Duration::from_secs(30),
                        reset_after: Duration::from_secs(60),
                    });
                    stage.max_restarts = Some(stage.max_restarts.unwrap_or(0).max(10));
                    stage.timeout = Some(stage.timeout.unwrap_or(Duration::from_secs(10)));
                    // As the guide's stage has one; simulated, it clears what the dependency
                    // leaked or exhausted (it never runs).
                    if stage.reset.is_none() {
                        stage.reset = Some(vec!["reset".to_owned()]);
                    }
                }
            }
            Contender::RetryOnly => {
                fitted.healing = HealingFile {
                    retry_policy: file.healing.retry_policy.clone(),
                    metrics_collector: file.healing.metrics_collector.clone(),
                    ..HealingFile::default()
                };
                unshare(&mut fitted);
            }
            Contender::NoHealing => {
                fitted.healing = HealingFile {
                    retry_policy: Some(RetryPolicyConfig {
                        max_attempts: Some(1),
                        ..RetryPolicyConfig::default()
                    }),
                    metrics_collector: file.healing.metrics_collector.clone(),
                    ..HealingFile::default()
                };
                unshare(&mut fitted);
                for stage in &mut fitted.stages {
                    stage.retry_policy = None;
                }
            }
        }
        fitted
    }
}

/// Stages without the checks and breakers a healing section without them cannot name.
fn unshare(file: &mut PipelineFile) {
    for stage in &mut file.stages {
        stage.depends_on.clear();
        stage.breaker = None;
    }
}

/// The recommended healing section.
pub fn recommended() -> HealingFile {
    serde_saphyr::from_str(RECOMMENDED).expect("recommended.yaml is a healing section")
}

/// What a simulation cannot run without running commands, taken out of `file`, and said:
/// `custom` triggers (they never match), strategies whose action is `custom` (removed), a
/// `scale` action's external scaler (not called).
pub fn without_commands(file: &mut PipelineFile) -> Vec<String> {
    let mut notes = Vec::new();
    file.healing.strategies.retain_mut(|strategy| {
        if matches!(strategy.config, Some(ActionConfig::Custom(_))) {
            notes.push(format!(
                "strategy `{}`: its custom action runs a command, which a simulation does not; \
                 left out",
                strategy.name
            ));
            return false;
        }
        if let Some(ActionConfig::Scale(scale)) = &mut strategy.config
            && scale.command.take().is_some()
        {
            notes.push(format!(
                "strategy `{}`: its external scaler is not called",
                strategy.name
            ));
        }
        let before = strategy.triggers.len();
        strategy
            .triggers
            .retain(|t| !matches!(t, TriggerConfig::Custom(_)));
        if strategy.triggers.len() < before {
            notes.push(format!(
                "strategy `{}`: its custom triggers run commands, which a simulation does not; \
                 they never match",
                strategy.name
            ));
            if strategy.triggers.is_empty() {
                notes.push(format!(
                    "strategy `{}`: no trigger left; left out",
                    strategy.name
                ));
                return false;
            }
        }
        true
    });
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recommended configuration in docs/HEALING.md is the one simulated.
    #[test]
    fn the_recommended_section_is_the_healing_guides() {
        let guide = include_str!("../../../../docs/HEALING.md");
        let start = guide
            .find("## The recommended configuration")
            .expect("the guide's section");
        let block = &guide[start..];
        let block = &block[block.find("```yaml\n").expect("a yaml block") + 8..];
        let block = &block[..block.find("```").expect("the block's end")];
        let written: serde_json::Value = serde_saphyr::from_str(block).unwrap();
        let ours: serde_json::Value = serde_saphyr::from_str(RECOMMENDED).unwrap();
        assert_eq!(written["healing"], ours);
        let healing: HealingFile = serde_json::from_value(written["healing"].clone()).unwrap();
        assert_eq!(healing, recommended());
    }
}
