//! Email over SMTP.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `email`: the seed's `recipients`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    /// The addresses to send to.
    pub recipients: Vec<String>,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl EmailConfig {
    /// Always fails: email channels cannot be built in this version.
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(InvalidConfig::new(
            "type",
            "email channels are not available in this version: use slack, pagerduty or webhook",
        ))
    }
}
