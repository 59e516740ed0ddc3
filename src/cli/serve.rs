//! `sluice serve`: bind the listener, print where it listens, and run the node
//! ([`crate::node::run`]) until SIGTERM/SIGINT; the port answers until the process exits
//! (`http/stopped.rs`).

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
    let listener = listen(&settings.server.bind).map_err(|e| {
        CliError::Runtime(format!("cannot listen on {}: {e}", settings.server.bind))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(format!("listener: {e}")))?;
    // Another handle on the listening socket, open until the process exits: `node::run`
    // closes its own as it returns, and the port must not refuse connections while the
    // process lives (README "Operating").
    let kept = listener
        .try_clone()
        .map_err(|e| CliError::Runtime(format!("listener: {e}")))?;
    actix_rt::System::new().block_on(async move {
        // Signals are taken over before anyone learns the port: a SIGTERM right after the
        // listening line stops the node gracefully (once it is up) instead of killing it.
        let stop = shutdown_signal();
        // Tests and scripts read this line to learn the bound port. With a stdout sink,
        // stdout carries envelopes only, so the line goes to stderr.
        // A stream that cannot take it (a full disk) is logged, never fatal and never a
        // panic: the node serves all the same.
        let banner = format!("sluice listening on http://{addr}\n");
        let written = if [&settings.output, &settings.dead_letter]
            .iter()
            .any(|s| s.kind == SinkKind::Stdout)
        {
            // After the log lines queued so far, as before: they are on stderr too.
            crate::logging::flush(std::time::Duration::from_secs(1));
            let mut err = std::io::stderr().lock();
            err.write_all(banner.as_bytes()).and_then(|_| err.flush())
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(banner.as_bytes()).and_then(|_| out.flush())
        };
        if let Err(e) = written {
            tracing::warn!(%addr, error = %e, "cannot print the listening line; serving anyway");
        }
        let ran = node::run(settings, listener, async move {
            let signal = stop.await;
            tracing::info!(signal, "signal received");
        })
        .await;
        crate::http::stopped::answer_until_exit(kept);
        ran.map_err(CliError::from)
    })
}

/// Connections waiting to be accepted at most (beyond the per-worker connection cap they
/// wait here instead of being refused).
const LISTEN_BACKLOG: i32 = 1024;

/// Bind `bind` (address or host:port) with a listen queue of [`LISTEN_BACKLOG`].
fn listen(bind: &str) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in bind.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        match socket
            .bind(&addr.into())
            .and_then(|_| socket.listen(LISTEN_BACKLOG))
        {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to listen on")))
}

/// SIGTERM / SIGINT (Ctrl-C elsewhere), registered when called; the future says which came.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
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
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}
