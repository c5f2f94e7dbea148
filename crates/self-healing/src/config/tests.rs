//! The seed's examples, written in YAML, load unchanged; mistakes are named precisely.

use std::time::Duration;

use super::strategy::STRATEGY_KEYS;
use super::*;
use crate::de::Tagged;
use crate::error::StageError;
use crate::event::ActionKind;
use crate::healing::{
    CircuitBreakAction, CustomAction, HealingStrategy, RetryAction, ScaleAction, ScaleDirection,
};
use crate::pipeline::Remedy;
use crate::resilience::{Backoff, RetryPolicy};

/// The seed's "Strategy Configuration" list, key for key. The custom strategy's closures become
/// commands, as in a file they must.
const SEED_STRATEGIES: &str = r#"
- name: retry-transient
  priority: 10
  triggers:
    - { type: error, pattern: "ECONNRESET|ETIMEDOUT|ECONNREFUSED" }
  action: retry
  config:
    maxAttempts: 5
    backoff: exponential
    initialDelay: 1000
    maxDelay: 30000
    jitter: true
  cooldown: 0

- name: circuit-breaker
  priority: 20
  triggers:
    - { type: metrics, metric: errorRate, operator: gt, value: 0.5 }
  action: circuit-break
  config:
    breakDuration: 60000   # 1 minute
    halfOpenRequests: 3
  cooldown: 120000

- name: scale-on-latency
  priority: 30
  triggers:
    - { type: metrics, metric: latencyP95, operator: gt, value: 5000 }
  action: scale
  config:
    direction: up
    amount: 2
    maxInstances: 10
  cooldown: 300000

- name: rollback-critical
  priority: 100
  triggers:
    - { type: error, severity: critical }
    - { type: health-check, status: unhealthy, duration: 60000 }
  action: rollback
  config:
    strategy: immediate
  cooldown: 600000

- name: custom-fix
  priority: 50
  triggers:
    - { type: custom, command: ["./queue-depth-over.sh", "10000"] }
  action: custom
  config:
    command: ["./clear-dead-letter-queue.sh"]
  cooldown: 300000
"#;

/// The AutoHealer example at the top of the seed.
const SEED_AUTO_HEALER: &str = r#"
- name: retry-transient-errors
  triggers: [{ type: error, pattern: "ECONNRESET|ETIMEDOUT" }]
  action: retry
  config: { maxAttempts: 3, backoff: exponential, initialDelay: 1000 }
- name: rollback-on-failure
  triggers: [{ type: metrics, metric: errorRate, threshold: 0.1 }]
  action: rollback
  cooldown: 300000
"#;

fn load(yaml: &str) -> Vec<StrategyConfig> {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn one(yaml: &str) -> Result<HealingStrategy, String> {
    let config: StrategyConfig = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    config
        .build(&MetricsCollectorConfig::default().known_metrics())
        .map_err(|e| e.to_string())
}

#[test]
fn the_seed_strategy_list_loads_and_builds() {
    let strategies: Vec<HealingStrategy> = load(SEED_STRATEGIES)
        .iter()
        .map(|s| {
            s.build(&MetricsCollectorConfig::default().known_metrics())
                .unwrap()
        })
        .collect();
    let summary: Vec<(&str, i64, ActionKind, Duration)> = strategies
        .iter()
        .map(|s| {
            (
                s.name(),
                s.settings().priority,
                s.action().kind(),
                s.settings().cooldown,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("retry-transient", 10, ActionKind::Retry, Duration::ZERO),
            (
                "circuit-breaker",
                20,
                ActionKind::CircuitBreak,
                Duration::from_secs(120)
            ),
            (
                "scale-on-latency",
                30,
                ActionKind::Scale,
                Duration::from_secs(300)
            ),
            (
                "rollback-critical",
                100,
                ActionKind::Rollback,
                Duration::from_secs(600)
            ),
            (
                "custom-fix",
                50,
                ActionKind::Custom,
                Duration::from_secs(300)
            ),
        ]
    );
    let policy = strategies[0]
        .action()
        .downcast_ref::<RetryAction>()
        .and_then(RetryAction::policy)
        .expect("retry with its own policy");
    assert_eq!(policy.max_attempts(), 5);
    assert_eq!(policy.backoff(), Backoff::Exponential);
    assert_eq!(
        (policy.initial_delay(), policy.max_delay()),
        (Duration::from_secs(1), Duration::from_secs(30))
    );
    assert!(policy.jitter());
    let c = strategies[1]
        .action()
        .downcast_ref::<CircuitBreakAction>()
        .unwrap();
    assert_eq!(
        (c.break_duration, c.half_open_requests.get()),
        (Duration::from_secs(60), 3)
    );
    let s = strategies[2]
        .action()
        .downcast_ref::<ScaleAction>()
        .unwrap();
    assert_eq!(
        (s.direction, s.amount, s.max_instances),
        (ScaleDirection::Up, 2, Some(10))
    );
    assert_eq!(strategies[3].triggers().len(), 2);
}

#[test]
fn the_seed_auto_healer_example_loads_and_builds() {
    let strategies: Vec<HealingStrategy> = load(SEED_AUTO_HEALER)
        .iter()
        .map(|s| s.build(&[]).unwrap())
        .collect();
    let retry = strategies[0].action().downcast_ref::<RetryAction>();
    assert_eq!(
        retry
            .and_then(RetryAction::policy)
            .map(|p| p.max_attempts()),
        Some(3)
    );
    assert_eq!(strategies[1].action().kind(), ActionKind::Rollback);
    assert_eq!(strategies[1].settings().cooldown, Duration::from_secs(300));
}

#[test]
fn global_settings_load_with_seed_keys() {
    let retry: RetryPolicyConfig = serde_saphyr::from_str(
        "{ maxAttempts: 4, backoff: linear, initialDelay: 500ms, maxDelay: 10s, jitter: false, retryableErrors: [ECONNRESET] }",
    )
    .unwrap();
    let policy = retry.build(&RetryPolicy::default()).unwrap();
    assert_eq!(
        (policy.max_attempts(), policy.backoff()),
        (4, Backoff::Linear)
    );
    assert!(
        policy.is_retryable(&StageError::new("x ECONNRESET"))
            && !policy.is_retryable(&StageError::new("x"))
    );

    let breaker: CircuitBreakerConfig = serde_saphyr::from_str(
        "{ enabled: true, failureThreshold: 5, successThreshold: 2, timeout: 30000 }",
    )
    .unwrap();
    let settings = breaker.build().unwrap().unwrap();
    assert_eq!(settings.break_duration, Duration::from_secs(30));
    assert_eq!(settings.success_threshold.get(), 2);
    let off: CircuitBreakerConfig = serde_saphyr::from_str("{ enabled: false }").unwrap();
    assert_eq!(off.build().unwrap(), None);

    let metrics: MetricsCollectorConfig = serde_saphyr::from_str(
        "{ sampleInterval: 5000, retentionSize: 1000, metrics: [duration, errorRate, throughput, memoryUsage, cpuUsage, queueDepth] }",
    )
    .unwrap();
    let collector = metrics.build().unwrap();
    assert_eq!(
        (collector.sample_interval(), collector.retention_size()),
        (Duration::from_secs(5), 1000)
    );
    assert!(metrics.known_metrics().contains(&"queueDepth".to_owned()));

    let budget: BudgetConfig = serde_saphyr::from_str("{ maxActions: 20, window: 10m }").unwrap();
    assert_eq!(budget.window, Duration::from_secs(600));
}

#[test]
fn every_trigger_kind_loads() {
    let yaml = r#"
name: all-triggers
action: notify
config: { severity: critical, message: "look at the pipeline" }
triggers:
  - { type: error, code: DB_CONNECTION_FAILED, exhausted: true }
  - { type: metrics, metric: memoryUsage, operator: gte, value: 1.5e9, duration: 1m }
  - { type: health-check, status: degraded, check: api-health }
  - { type: timeout, threshold: 300000 }
  - { type: anomaly, metric: duration, sensitivity: high, minSamples: 50 }
"#;
    let strategy = one(yaml).unwrap();
    let kinds: Vec<_> = strategy.triggers().iter().map(|t| t.kind()).collect();
    use crate::healing::TriggerKind::*;
    assert_eq!(kinds, [Error, Metrics, HealthCheck, Timeout, Anomaly]);
}

#[test]
fn mistakes_are_named_with_their_key() {
    let cases = [
        // (yaml, what the error must say)
        (
            "{name: a, triggers: [{type: error}], action: retyr}",
            "action`: `retyr` is not one of",
        ),
        (
            "{name: a, triggers: [{type: error}], action: retyr}",
            "did you mean `retry`?",
        ),
        (
            "{name: a, triggers: [{type: error}], action: retry, config: {breakDuration: 5}}",
            "does not apply to retry (it takes maxAttempts, backoff",
        ),
        (
            "{name: a, triggers: [{type: error}], action: retry, config: {maxAttempt: 5}}",
            "unknown field `maxAttempt`",
        ),
        (
            "{name: a, triggers: [{type: error, pattern: '(unclosed'}], action: retry}",
            "`triggers[0].pattern`",
        ),
        (
            "{name: a, triggers: [{type: metrics, metric: errorRat, value: 1}], action: rollback}",
            "did you mean `errorRate`?",
        ),
        (
            "{name: a, triggers: [{type: metrics, metric: errorRate}], action: rollback}",
            "needs `value` or `threshold`",
        ),
        (
            "{name: a, triggers: [{type: metrics, metric: errorRate, value: 1, threshold: 2}], action: rollback}",
            "not both",
        ),
        (
            "{name: a, triggers: [{type: timeout, threshold: 5 parsecs}], action: restart}",
            "not a unit",
        ),
        (
            "{name: a, triggers: [{type: health-check, status: healthy}], action: rollback}",
            "`triggers[0].status`",
        ),
        (
            "{name: a, triggers: [{type: weather}], action: rollback}",
            "unknown variant `weather`",
        ),
        (
            "{name: a, triggers: [], action: rollback}",
            "`triggers`: a strategy needs at least one trigger",
        ),
        (
            "{name: a, triggers: [{type: error}], action: scale, config: {maxInstances: 1, minInstances: 2}}",
            "`config.maxInstances`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: throttle}",
            "`config.rate`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: throttle, config: {rate: 0}}",
            "`config.rate`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: circuit-break, config: {halfOpenRequests: 0}}",
            "`config.halfOpenRequests`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: rollback, config: {strategy: eventually}}",
            "`config.strategy`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: custom}",
            "`config.command`",
        ),
        (
            "{name: a, triggers: [{type: error}], action: failover, config: {amount: 2}}",
            "it takes no config",
        ),
        (
            "{name: a, triggers: [{type: custom, command: []}], action: rollback}",
            "`triggers[0].command`",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(yaml, expected)| match one(yaml) {
            Ok(_) => Some(format!("{yaml} loaded")),
            Err(error) if !error.contains(expected) => {
                Some(format!("{yaml}\n  said: {error}\n  expected: {expected}"))
            }
            Err(_) => None,
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn command_actions_and_triggers_run_their_commands() {
    let strategy = one(
        "{name: fix, triggers: [{type: error}], action: custom, config: {command: [sh, -c, 'test \"$MIGRATIONPILOT_STAGE\" = load']}}",
    )
    .unwrap();
    let custom = strategy.action().downcast_ref::<CustomAction>().unwrap();
    let ctx = |stage: &str| crate::healing::ActionContext {
        run: None,
        stage: stage.into(),
        item: None,
        strategy: "fix".into(),
        error: None,
        metrics: MetricsCollector::default(),
        control: None,
    };
    assert_eq!(
        custom.run(ctx("load")).await,
        Ok(Remedy::Retry {
            after: Duration::ZERO
        })
    );
    let failed = custom.run(ctx("other")).await.unwrap_err();
    assert_eq!(failed.message(), "`sh` exited with status 1");
}

/// A check a test file declares: a command that must exit 0.
#[derive(Debug, serde::Deserialize)]
struct TestCheck {
    name: String,
    command: Vec<String>,
}

impl BuildCheck for TestCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn build(&self) -> Result<crate::health::CheckSpec, InvalidConfig> {
        let check = crate::health::CommandCheck::new(self.command.clone())?;
        Ok(crate::health::CheckSpec::new(self.name.as_str(), check))
    }
}

#[test]
fn a_healing_section_builds_or_names_every_setting_at_fault() {
    let healing: HealingConfig<TestCheck> = serde_saphyr::from_str(
        r#"
healthMonitor: { checks: [ { name: api, command: [] } ] }
strategies:
  - { name: retry, triggers: [ { type: error } ], action: retry, stages: [lod] }
  - { name: retry, triggers: [ { type: error } ], action: retry }
breakers: { db: { enabled: false } }
alerts: { thresholds: [ { metric: queueDepth, critical: 10 } ] }
"#,
    )
    .unwrap();
    let errors = healing.build(&["load"]).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(InvalidConfig::field).collect();
    assert_eq!(
        fields,
        [
            "breakers.db.enabled",
            "strategies[0].stages",
            "alerts.thresholds",
            "alerts.thresholds[0].metric",
            "strategies[1].name",
            "healthMonitor.checks[0].command",
        ],
        "{errors:?}"
    );
    assert!(
        errors[1].reason().contains("did you mean `load`"),
        "{errors:?}"
    );

    let healing: HealingConfig<TestCheck> = serde_saphyr::from_str(
        "healthMonitor: { checks: [ { name: api, command: [\"true\"] } ] }\nretryPolicy: { maxAttempts: 4 }",
    )
    .unwrap();
    let mut built = healing.build(&["load"]).unwrap();
    assert_eq!(built.retry_policy.max_attempts(), 4);
    assert_eq!(healing.check_names(), ["api"]);
    let pipeline = built
        .install(
            crate::SelfHealingPipeline::<()>::builder()
                .stage(crate::Stage::new("load", |_| async { Ok(()) })),
        )
        .build()
        .unwrap();
    assert!(built.monitor(&pipeline).unwrap().is_some());
    assert!(built.monitor(&pipeline).unwrap().is_none(), "taken once");
}

#[test]
fn the_strategy_schema_has_the_keys_read_and_types_config_by_action() {
    let schema = schemars::schema_for!(StrategyConfig);
    let strategy = schema.as_value();
    let mut keys: Vec<&str> = strategy["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut read = STRATEGY_KEYS.to_vec();
    read.sort_unstable();
    assert_eq!(keys, read, "the schema's keys are those Deserialize reads");
    assert_eq!(strategy["additionalProperties"], false);
    assert_eq!(
        strategy["properties"]["action"]["enum"],
        serde_json::json!(ActionKind::NAMES),
        "every action a strategy takes, and no `hold`"
    );
    let by_action: Vec<(&str, &str)> = strategy["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            (
                rule["if"]["properties"]["action"]["const"]
                    .as_str()
                    .unwrap(),
                rule["then"]["properties"]["config"]["$ref"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(by_action.len(), ActionKind::NAMES.len());
    assert!(by_action.contains(&("retry", "#/$defs/RetryPolicyConfig")));
    assert!(by_action.contains(&("circuit-break", "#/$defs/CircuitBreakConfig")));
    assert!(by_action.contains(&("failover", "#/$defs/FailoverConfig")));
}

#[test]
fn trigger_schemas_are_tagged_by_their_kind() {
    let schema = schemars::schema_for!(TriggerConfig);
    let tags: Vec<&str> = schema.as_value()["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variant| {
            assert_eq!(variant["additionalProperties"], false, "{variant}");
            assert!(
                variant["required"]
                    .as_array()
                    .unwrap()
                    .contains(&"type".into()),
                "{variant}"
            );
            variant["properties"]["type"]["const"].as_str().unwrap()
        })
        .collect();
    assert_eq!(tags, TriggerConfig::VARIANTS);
    for tag in tags {
        let kind: Result<crate::event::TriggerKind, _> = serde_json::from_value(tag.into());
        assert!(kind.is_ok(), "`{tag}` is the name of a trigger kind");
    }
}
