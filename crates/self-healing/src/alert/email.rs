//! Email over SMTP (feature `email`, on lettre): one plain-text message per group of alerts.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `email`: the seed's `recipients`, and the `smtp` server to send through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    /// The channel's name in records (default `email`).
    pub name: Option<String>,
    /// The addresses to send to.
    pub recipients: Vec<String>,
    /// The server; without it (the seed writes only `recipients`), the one
    /// `MIGRATIONPILOT_SMTP_URL` names, else the machine's own mail server (see
    /// [`SmtpConfig::default_server`]).
    pub smtp: Option<SmtpConfig>,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

/// `smtp`: where and how to send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name.
    pub host: String,
    /// Its port; default 25 without TLS, 587 with STARTTLS, 465 with TLS.
    pub port: Option<u16>,
    /// The sender's address (`MigrationPilot <alerts@example.com>` or `alerts@example.com`).
    pub from: String,
    /// The user to log in as, with `password` (keep it in `${…}`).
    pub username: Option<String>,
    /// The password for `username`.
    pub password: Option<String>,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: Option<SmtpTls>,
}

/// The variable that names the SMTP server of email channels that name none.
pub const SMTP_URL_VARIABLE: &str = "MIGRATIONPILOT_SMTP_URL";

impl SmtpConfig {
    /// The server of an email channel that names none: `MIGRATIONPILOT_SMTP_URL` when set
    /// (`smtp://[user:password@]host[:port][?tls=none|starttls|tls&from=ADDRESS]`, or
    /// `smtps://` for TLS from the first byte), else the machine's own mail server: port 25 on
    /// `localhost`, plain text, from `migrationpilot@` the host's name.
    pub fn default_server() -> Result<SmtpConfig, InvalidConfig> {
        match std::env::var(SMTP_URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => SmtpConfig::from_url(&url),
            _ => Ok(SmtpConfig {
                host: "localhost".into(),
                port: Some(25),
                from: format!("migrationpilot@{}", host_name()),
                username: None,
                password: None,
                tls: Some(SmtpTls::None),
            }),
        }
    }

    /// The server a URL names: `smtp://[user:password@]host[:port][?tls=…&from=…]` or
    /// `smtps://…`. Errors never show the password.
    ///
    /// ```
    /// use self_healing::alert::{SmtpConfig, SmtpTls};
    ///
    /// let smtp = SmtpConfig::from_url("smtp://alerts:p%40ss@mail.example:2525?tls=none&from=ops@example.com")?;
    /// assert_eq!((smtp.host.as_str(), smtp.port, smtp.tls), ("mail.example", Some(2525), Some(SmtpTls::None)));
    /// assert_eq!((smtp.username.as_deref(), smtp.password.as_deref()), (Some("alerts"), Some("p@ss")));
    /// assert_eq!(smtp.from, "ops@example.com");
    /// # Ok::<(), self_healing::InvalidConfig>(())
    /// ```
    pub fn from_url(url: &str) -> Result<SmtpConfig, InvalidConfig> {
        let wrong = |why: &str| {
            InvalidConfig::new(
                SMTP_URL_VARIABLE,
                format!("`{}` {why}", crate::health::redact_url(url)),
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| wrong("is not an smtp:// or smtps:// URL"))?;
        let mut tls = match scheme {
            "smtp" => SmtpTls::Starttls,
            "smtps" => SmtpTls::Tls,
            _ => return Err(wrong("is not an smtp:// or smtps:// URL")),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| wrong("has no valid port"))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err(wrong("names no host"));
        }
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                Some(percent_decoded(user)),
                Some(percent_decoded(password)).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        let mut from = format!("migrationpilot@{}", host_name());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", "none")) => tls = SmtpTls::None,
                Some(("tls", "starttls")) => tls = SmtpTls::Starttls,
                Some(("tls", "tls")) => tls = SmtpTls::Tls,
                Some(("from", address)) => from = percent_decoded(address),
                _ => {
                    return Err(wrong(&format!(
                        "has an unknown parameter `{pair}` (it takes tls and from)"
                    )));
                }
            }
        }
        Ok(SmtpConfig {
            host: host.to_owned(),
            port,
            from,
            username,
            password,
            tls: Some(tls),
        })
    }
}

/// `%XX` sequences decoded (a password with `@` or `:` is written `%40`, `%3A`).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This machine's name, for the sender's address of the default server.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback or a trusted network only).
    None,
    /// Upgraded with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl EmailConfig {
    /// The runnable channel; fails on an address that does not parse, no recipient, or a
    /// username without a password.
    #[cfg(feature = "email")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        use lettre::message::Mailbox;
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, Tokio1Executor};

        if self.recipients.is_empty() {
            return Err(InvalidConfig::new("recipients", "is empty"));
        }
        let recipients = self
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.parse::<Mailbox>().map_err(|e| {
                    InvalidConfig::new(
                        format!("recipients[{i}]"),
                        format!("`{r}` is not an email address: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let smtp = match &self.smtp {
            Some(smtp) => smtp.clone(),
            None => SmtpConfig::default_server()?,
        };
        let smtp = &smtp;
        let from = smtp.from.parse::<Mailbox>().map_err(|e| {
            InvalidConfig::new(
                "smtp.from",
                format!("`{}` is not an email address: {e}", smtp.from),
            )
        })?;
        if smtp.host.trim().is_empty() {
            return Err(InvalidConfig::new("smtp.host", "is empty"));
        }
        let tls = smtp.tls.unwrap_or(SmtpTls::Starttls);
        let builder = match tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
            }
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                .map_err(|e| {
                InvalidConfig::new("smtp.host", format!("cannot set up STARTTLS: {e}"))
            })?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| InvalidConfig::new("smtp.host", format!("cannot set up TLS: {e}")))?,
        };
        let port = smtp.port.unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        });
        let mut builder = builder
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(10)));
        match (&smtp.username, &smtp.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(InvalidConfig::new(
                    "smtp.password",
                    "`username` needs a password",
                ));
            }
            (None, Some(_)) => {
                return Err(InvalidConfig::new(
                    "smtp.username",
                    "`password` needs a username",
                ));
            }
        }
        Ok(Arc::new(Email {
            name: self.name.clone().unwrap_or_else(|| "email".into()),
            transport: builder.build(),
            from,
            recipients,
            min_severity: self.min_severity.unwrap_or(Severity::Warning),
        }))
    }

    /// Always fails: email channels need the `email` feature.
    #[cfg(not(feature = "email"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(InvalidConfig::new(
            "type",
            "`email` channels need the `email` feature, which this build does not have",
        ))
    }
}

/// The subject: severity (or RESOLVED), project and alert, and how many more the message holds.
#[cfg(any(feature = "email", test))]
pub(super) fn subject(alerts: &[super::Alert]) -> String {
    let Some(first) = alerts.first() else {
        return String::new();
    };
    let state = match first.status {
        super::AlertStatus::Firing => first.severity.as_str().to_uppercase(),
        super::AlertStatus::Resolved => "RESOLVED".to_owned(),
    };
    let more = match alerts.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    format!("[{state}] {}: {}{more}", first.project, first.title)
}

/// The plain-text body: every alert with its fields, one block each.
#[cfg(any(feature = "email", test))]
pub(super) fn text(alerts: &[super::Alert]) -> String {
    let mut text = String::new();
    for alert in alerts {
        text.push_str(&super::summary(alert));
        text.push_str("\n\n");
        text.push_str(&format!("  alert:    {}\n", alert.name));
        text.push_str(&format!("  status:   {}\n", alert.status.as_str()));
        text.push_str(&format!("  severity: {}\n", alert.severity));
        text.push_str(&format!("  project:  {}\n", alert.project));
        if let Some(stage) = &alert.stage {
            text.push_str(&format!("  stage:    {stage}\n"));
        }
        if let Some(subject) = &alert.subject {
            text.push_str(&format!("  about:    {subject}\n"));
        }
        if let Some(value) = alert.value {
            text.push_str(&format!("  value:    {value}\n"));
        }
        if let Some(strategy) = &alert.strategy {
            text.push_str(&format!("  strategy: {strategy}\n"));
        }
        text.push_str(&format!(
            "  since:    {}\n",
            crate::clock::rfc3339(alert.starts_at)
        ));
        if let Some(ends_at) = alert.ends_at {
            text.push_str(&format!("  ended:    {}\n", crate::clock::rfc3339(ends_at)));
        }
        if let Some(runbook) = &alert.runbook {
            text.push_str(&format!("  runbook:  {runbook}\n"));
        }
        text.push_str(&format!("\n{}\n\n", alert.message));
    }
    text
}

#[cfg(feature = "email")]
struct Email {
    name: String,
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    recipients: Vec<lettre::message::Mailbox>,
    min_severity: Severity,
}

#[cfg(feature = "email")]
impl Notifier for Email {
    fn notify<'a>(
        &'a self,
        alerts: &'a [super::Alert],
    ) -> crate::BoxFuture<'a, Result<(), super::NotifyError>> {
        use lettre::AsyncTransport;
        use lettre::message::header::ContentType;

        Box::pin(async move {
            let failed = |reason: String| super::NotifyError {
                channel: self.name.clone(),
                reason,
            };
            let mut message = lettre::Message::builder()
                .from(self.from.clone())
                .subject(subject(alerts))
                .header(ContentType::TEXT_PLAIN);
            for recipient in &self.recipients {
                message = message.to(recipient.clone());
            }
            let message = message
                .body(text(alerts))
                .map_err(|e| failed(format!("cannot build the message: {e}")))?;
            self.transport
                .send(message)
                .await
                .map_err(|e| failed(crate::error_chain(&e)))?;
            Ok(())
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }
}
