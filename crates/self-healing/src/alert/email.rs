//! Email over SMTP.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `email`: the seed's `recipients`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    pub recipients: Vec<String>,
    pub min_severity: Option<Severity>,
}

impl EmailConfig {
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(InvalidConfig::new(
            "type",
            "email channels are not available in this version: use slack, pagerduty or webhook",
        ))
    }
}
