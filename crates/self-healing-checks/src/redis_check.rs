//! Redis checks.

use self_healing::BoxFuture;
use self_healing::InvalidConfig;
use self_healing::health::{Check, CheckError, redact_secrets, redact_url};

/// Healthy when a fresh connection answers `PING` with `PONG`. Credentials in the URL
/// (`redis://user:password@host:6379/0`) are used to AUTH.
#[derive(Debug, Clone)]
pub struct RedisCheck {
    url: String,
    client: redis::Client,
}

impl RedisCheck {
    /// A check of the Redis server `url` names (`redis://user:password@host:6379/0`). Fails
    /// when the URL cannot be parsed; the error never shows its credentials.
    pub fn new(url: impl Into<String>) -> Result<Self, InvalidConfig> {
        let url = url.into();
        let client = redis::Client::open(url.as_str()).map_err(|e| {
            InvalidConfig::new("url", redact_secrets(&format!("`{url}`: {e}"), &url))
        })?;
        Ok(RedisCheck { url, client })
    }

    fn fail(&self, what: impl std::fmt::Display) -> CheckError {
        CheckError::new(redact_secrets(
            &format!("{}: {what}", self.target()),
            &self.url,
        ))
    }
}

impl Check for RedisCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            let mut connection = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| self.fail(e))?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .map_err(|e| self.fail(e))?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(self.fail(format!("answered `{pong}` to PING")))
            }
        })
    }

    fn target(&self) -> String {
        redact_url(&self.url)
    }
}
