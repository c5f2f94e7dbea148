//! `serve`: the HTTP API, event stream, `/metrics` and dashboard over the store, until
//! stopped.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use migrationpilot::error::CliError;
use migrationpilot::serve;
use migrationpilot::session::{self, open_store};
use migrationpilot::store::Access;

use super::Outcome;
use super::args::TokenArgs;

#[derive(Args)]
pub(super) struct ServeArgs {
    /// The address to listen on; one other than loopback needs a token.
    #[arg(long, value_name = "ADDR", default_value = serve::DEFAULT_LISTEN)]
    listen: String,
    #[command(flatten)]
    token: TokenArgs,
}

pub(super) async fn exec(store_url: Option<String>, args: ServeArgs) -> Outcome {
    let token = args.token.read()?;
    let steering = if token.is_some() {
        "steering needs the token"
    } else {
        "steering off (no token)"
    };
    let bound = serve::bind(&args.listen, token).await?;
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
