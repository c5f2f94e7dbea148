//! The health vocabulary: a status and a change of it.

use std::sync::Arc;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::InvalidConfig;

/// How a check, or a stage through its checks, is doing. Ordered from best to worst.
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
pub enum HealthStatus {
    /// Working normally (the default).
    #[default]
    Healthy,
    /// Working, but worse than it should.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The lowercase name used in configuration and on the wire: `healthy`, `degraded` or
    /// `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HealthStatus {
    type Err = InvalidConfig;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "healthy" => Ok(HealthStatus::Healthy),
            "degraded" => Ok(HealthStatus::Degraded),
            "unhealthy" => Ok(HealthStatus::Unhealthy),
            other => Err(InvalidConfig::new(
                "status",
                format!("`{other}` is not one of healthy, degraded, unhealthy"),
            )),
        }
    }
}

/// The seed's `health-changed {stage, oldStatus, newStatus}`, with the check that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthChange {
    /// The stage the check is attached to, if any.
    pub stage: Option<Arc<str>>,
    /// The name of the check.
    pub check: Arc<str>,
    /// The status before the change.
    pub old_status: HealthStatus,
    /// The status after the change.
    pub new_status: HealthStatus,
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(with = "crate::serde_ms::system_time")]
    pub at: SystemTime,
}
