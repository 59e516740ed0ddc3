//! `sluice serve`: bind the listener, print where it listens, and run the node
//! ([`crate::node::run`]) until SIGTERM/SIGINT.

use std::io::Write;

use super::CliError;
use crate::node::{self, NodeError};
use crate::settings::{Settings, SinkKind};

impl From<NodeError> for CliError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Usage(m) => CliError::Usage(m),
            NodeError::Runtime(m) => CliError::Runtime(m),
        }
    }
}

/// Run the service until a termination signal.
pub fn run(settings: Settings) -> Result<(), CliError> {
    let listener = std::net::TcpListener::bind(&settings.server.bind).map_err(|e| {
        CliError::Runtime(format!("cannot listen on {}: {e}", settings.server.bind))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(format!("listener: {e}")))?;
    // Tests and scripts read this line to learn the bound port. With a stdout sink, stdout
    // carries envelopes only, so the line goes to stderr.
    let banner = format!("sluice listening on http://{addr}");
    if [&settings.output, &settings.dead_letter]
        .iter()
        .any(|s| s.kind == SinkKind::Stdout)
    {
        eprintln!("{banner}");
    } else {
        println!("{banner}");
        let _ = std::io::stdout().flush();
    }
    actix_rt::System::new().block_on(async move {
        node::run(settings, listener, async {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "signal received");
        })
        .await
        .map_err(CliError::from)
    })
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "ctrl-c"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
