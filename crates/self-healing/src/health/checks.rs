//! Checks that need no driver: a TCP connect, a command's exit status, a closure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Check, CheckError};
use crate::BoxFuture;
use crate::error::InvalidConfig;

/// Healthy when a TCP connection to `host:port` opens.
///
/// ```
/// use self_healing::health::{CheckSpec, TcpCheck};
/// let redis = CheckSpec::new("redis", TcpCheck::new("127.0.0.1", 6379).unwrap());
/// # let _ = redis;
/// ```
#[derive(Debug, Clone)]
pub struct TcpCheck {
    host: String,
    port: u16,
}

impl TcpCheck {
    /// A check of `host:port`; fails if the host is empty or the port is 0.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, InvalidConfig> {
        let host = host.into();
        if host.trim().is_empty() {
            return Err(InvalidConfig::new("host", "a tcp check needs a host"));
        }
        if port == 0 {
            return Err(InvalidConfig::new("port", "must be between 1 and 65535"));
        }
        Ok(TcpCheck { host, port })
    }
}

impl Check for TcpCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map(drop)
                .map_err(|e| CheckError::new(format!("tcp {}:{}: {e}", self.host, self.port)))
        })
    }

    fn target(&self) -> String {
        format!("tcp {}:{}", self.host, self.port)
    }
}

/// Healthy when a command exits with status 0. It runs as [`crate::process::run`] runs commands:
/// no shell, and the last line of its standard error is the reason it failed.
///
/// ```
/// use self_healing::health::{CheckSpec, CommandCheck};
/// let disk = CheckSpec::new("disk", CommandCheck::new(["test", "-w", "/tmp"]).unwrap());
/// # let _ = disk;
/// ```
#[derive(Debug, Clone)]
pub struct CommandCheck {
    argv: Vec<String>,
}

impl CommandCheck {
    /// A check that runs `argv` (program, then arguments); fails if there is no program.
    pub fn new<I, S>(argv: I) -> Result<Self, InvalidConfig>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        if argv.first().is_none_or(|program| program.is_empty()) {
            return Err(InvalidConfig::new(
                "command",
                "a command check needs a program to run",
            ));
        }
        Ok(CommandCheck { argv })
    }
}

impl Check for CommandCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            crate::process::run(&self.argv, &[], None)
                .await
                .map_err(|e| CheckError::new(format!("{}: {}", self.target(), e.message())))
        })
    }

    fn target(&self) -> String {
        format!("command {}", self.argv[0])
    }
}

type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Healthy when a closure answers `true` (the seed's `check: async () => …`).
#[derive(Clone)]
pub struct CustomCheck {
    description: String,
    probe: Probe,
}

impl std::fmt::Debug for CustomCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomCheck")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl CustomCheck {
    /// A check that calls `probe`; `description` says what it checks in status output and errors.
    pub fn new<F, Fut>(description: impl Into<String>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        CustomCheck {
            description: description.into(),
            probe: Arc::new(move || Box::pin(probe())),
        }
    }
}

impl Check for CustomCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        Box::pin(async move {
            if (self.probe)().await {
                Ok(())
            } else {
                Err(CheckError::new(format!(
                    "{} answered false",
                    self.description
                )))
            }
        })
    }

    fn target(&self) -> String {
        self.description.clone()
    }
}
