//! Email over SMTP (feature `email`, on lettre): one plain-text message per group of alerts.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `email`: the seed's `recipients`, and the `smtp` server to send through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    /// The channel's name in records (default `email`).
    pub name: Option<String>,
    /// The addresses to send to.
    pub recipients: Vec<String>,
    /// The server.
    pub smtp: SmtpConfig,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

/// `smtp`: where and how to send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
        let smtp = &self.smtp;
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
