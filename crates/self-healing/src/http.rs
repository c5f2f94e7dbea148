//! The HTTP client every HTTP part of the workspace uses (alert channels here, HTTP checks in
//! `self-healing-checks`): rustls with the *ring* provider, and URLs shown without the secrets
//! they carry.

use std::sync::Once;
use std::time::Duration;

/// Makes *ring* the process's rustls provider unless the application installed one. Every
/// HTTPS client of the workspace calls this before it is built, so one provider serves all.
pub fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when a provider is installed already: keep that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with the workspace's TLS setup, a user agent naming `part`, and `timeout` for a
/// whole request.
pub fn client(part: &str, timeout: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder().user_agent(format!(
        "migrationpilot-{part}/{}",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build()
}

/// A URL as it may be shown: scheme and host only. Webhook URLs carry their secret in the path
/// (`/services/T…/B…/…`), which no general redaction can recognise.
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}/…",
            parsed.scheme(),
            parsed.host_str().unwrap_or("?")
        ),
        Err(_) => "the URL".to_owned(),
    }
}

/// `message` with `url` (however it appears in it) replaced by its [`shown`] form.
pub fn without_url(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &shown(url));
    if let Ok(parsed) = reqwest::Url::parse(url) {
        out = out.replace(parsed.as_str(), &shown(url));
        let path = parsed.path();
        if path.len() > 1 {
            out = out.replace(path, "/…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_url_path_never_show() {
        let hook = "https://hooks.slack.example/services/T0001/B0002/s3cr3tT0ken";
        assert_eq!(shown(hook), "https://hooks.slack.example/…");
        let message = format!("error sending request for url ({hook}): connection refused");
        let clean = without_url(&message, hook);
        assert!(!clean.contains("s3cr3tT0ken"), "{clean}");
    }
}
