//! HTTP checks.

use self_healing::BoxFuture;
use self_healing::health::{Check, CheckError, redact_secrets, redact_url};
use self_healing::{InvalidConfig, error_chain};

/// Healthy when `method endpoint` answers `expected_status` (and, if set, its body contains
/// `body_contains`). Redirects are followed; the body is read only when it is inspected, and at
/// most 1 MiB of it.
///
/// HTTPS uses rustls with the *ring* provider. If the process has no default rustls provider,
/// the first `HttpCheck` installs ring as the default.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    client: reqwest::Client,
    method: reqwest::Method,
    endpoint: String,
    expected_status: u16,
    body_contains: Option<String>,
}

const BODY_LIMIT: usize = 1 << 20;

impl HttpCheck {
    /// A `GET` of `endpoint` expecting 200. Fails when `endpoint` is not an http:// or
    /// https:// URL, or no HTTP client can be made.
    pub fn new(endpoint: impl Into<String>) -> Result<Self, InvalidConfig> {
        let endpoint = endpoint.into();
        let url = reqwest::Url::parse(&endpoint).map_err(|e| {
            InvalidConfig::new("endpoint", format!("`{}`: {e}", redact_url(&endpoint)))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidConfig::new(
                "endpoint",
                format!(
                    "`{}` is not an http:// or https:// URL",
                    redact_url(&endpoint)
                ),
            ));
        }
        let client = self_healing::http::client("health", None).map_err(|e| {
            InvalidConfig::new("endpoint", format!("cannot make an HTTP client: {e}"))
        })?;
        Ok(HttpCheck {
            client,
            method: reqwest::Method::GET,
            endpoint,
            expected_status: 200,
            body_contains: None,
        })
    }

    /// The HTTP method to use, in any case (default `GET`). Fails when it is not a valid
    /// method name.
    pub fn method(mut self, method: &str) -> Result<Self, InvalidConfig> {
        self.method = method.to_ascii_uppercase().parse().map_err(|_| {
            InvalidConfig::new("method", format!("`{method}` is not an HTTP method"))
        })?;
        Ok(self)
    }

    /// The status the answer must have (default 200). Fails outside 100 to 599.
    pub fn expected_status(mut self, status: u16) -> Result<Self, InvalidConfig> {
        if !(100..=599).contains(&status) {
            return Err(InvalidConfig::new(
                "expectedStatus",
                format!("{status} is not an HTTP status"),
            ));
        }
        self.expected_status = status;
        Ok(self)
    }

    /// Also requires the answer's body (its first 1 MiB) to contain `text`.
    pub fn body_contains(mut self, text: impl Into<String>) -> Self {
        self.body_contains = Some(text.into());
        self
    }

    fn fail(&self, what: impl std::fmt::Display) -> CheckError {
        CheckError::new(redact_secrets(
            &format!("{}: {what}", self.target()),
            &self.endpoint,
        ))
    }
}

impl Check for HttpCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            let mut response = self
                .client
                .request(self.method.clone(), &self.endpoint)
                .send()
                .await
                .map_err(|e| self.fail(error_chain(&e)))?;
            let status = response.status().as_u16();
            if status != self.expected_status {
                return Err(self.fail(format!(
                    "answered {status}, expected {}",
                    self.expected_status
                )));
            }
            let Some(needle) = &self.body_contains else {
                return Ok(());
            };
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.fail(error_chain(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() >= BODY_LIMIT {
                    break;
                }
            }
            if String::from_utf8_lossy(&body).contains(needle.as_str()) {
                Ok(())
            } else {
                Err(self.fail(format!("body does not contain `{needle}`")))
            }
        })
    }

    fn target(&self) -> String {
        format!("{} {}", self.method, redact_url(&self.endpoint))
    }
}
