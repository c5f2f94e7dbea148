//! `serve`: the HTTP API, event stream, `/metrics` and dashboard over the store, until
//! stopped.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use migrationpilot::error::CliError;
use migrationpilot::serve;
use migrationpilot::session::{self, open_store};
use migrationpilot::store::Access;

use super::Outcome;
use super::args::{TokenArgs, parse_duration};

#[derive(Args)]
pub(super) struct ServeArgs {
    /// The address to listen on; one other than loopback needs a token.
    #[arg(long, value_name = "ADDR", default_value = serve::DEFAULT_LISTEN)]
    listen: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// How long each connection may keep the server waiting, and how many it holds: the same
/// flags for `serve` and `run --listen`, since both serve the same API (docs/API.md, "Server
/// limits").
#[derive(Args)]
pub(super) struct LimitArgs {
    /// How long a client may take to send a request's head (from its first byte).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    header_timeout: Duration,
    /// How long a client may take to send a request's body.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    body_timeout: Duration,
    /// How long a connection may wait for its next request, or a client take none of its
    /// answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,
    /// Connections held at once, event streams included; at the cap a new one evicts the
    /// longest-waiting idle one, or is refused with 503 when all are busy.
    #[arg(long, value_name = "N", default_value_t = serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
}

impl LimitArgs {
    pub(super) fn read(&self) -> Result<serve::Limits, CliError> {
        serve::Limits::new(
            self.header_timeout,
            self.body_timeout,
            self.idle_timeout,
            self.max_connections,
        )
    }
}

pub(super) async fn exec(store_url: Option<String>, args: ServeArgs) -> Outcome {
    let token = args.token.read()?;
    let steering = if token.is_some() {
        "steering needs the token"
    } else {
        "steering off (no token)"
    };
    let bound = serve::bind(&args.listen, token, args.limits.read()?).await?;
    let store = open_store(store_url, Access::Existing).await?;
    let addr = bound
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    say!("serving on http://{addr}: dashboard /, API /api/v1, metrics /metrics; {steering}");
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if session::terminated().await {
            on_signal.cancel();
        }
    });
    bound
        .serve(store, serve::Figures::Journal, shutdown)
        .await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn the_flags_defaults_are_the_servers() {
        let flags = Flags::try_parse_from(["serve"]).unwrap();
        assert_eq!(flags.limits.read().unwrap(), serve::Limits::default());
    }

    #[test]
    fn limits_read_as_durations_and_zero_is_refused_by_name() {
        let flags = Flags::try_parse_from([
            "serve",
            "--header-timeout",
            "1m30s",
            "--body-timeout",
            "250ms",
            "--idle-timeout",
            "2000",
            "--max-connections",
            "64",
        ])
        .unwrap();
        let limits = flags.limits.read().unwrap();
        assert_eq!(limits.header_timeout, Duration::from_secs(90));
        assert_eq!(limits.body_timeout, Duration::from_millis(250));
        assert_eq!(limits.idle_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_connections, 64);
        let zero = Flags::try_parse_from(["serve", "--idle-timeout", "0s"]).unwrap();
        let error = zero.limits.read().unwrap_err().to_string();
        assert!(error.contains("--idle-timeout"), "{error}");
        assert!(Flags::try_parse_from(["serve", "--header-timeout", "soon"]).is_err());
    }
}
