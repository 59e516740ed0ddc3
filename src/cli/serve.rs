//! `sluice serve`: the engine plus the REST API until SIGTERM/SIGINT, then a graceful stop
//! (stop accepting, drain in-flight records up to `server.shutdown_grace_ms`, flush sinks).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{CliError, build_lookup};
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::sink;

/// Run the service until a termination signal.
pub fn run(settings: Settings) -> Result<(), CliError> {
    let lookup = build_lookup(&settings)?;
    let runtime = |e: String| CliError::Runtime(e);
    let output = sink::open(&settings.output).map_err(|e| runtime(e.to_string()))?;
    let dead = sink::open(&settings.dead_letter).map_err(|e| runtime(e.to_string()))?;
    let node = if settings.server.node.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".into())
    } else {
        settings.server.node.clone()
    };
    let settings = Arc::new(settings);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let engine = Arc::new(
            Engine::start(&settings, lookup, output, dead).map_err(|e| runtime(e.to_string()))?,
        );
        let (server, addr) = http::bind(AppState {
            engine: engine.clone(),
            settings: settings.clone(),
            node,
        })
        .map_err(|e| {
            CliError::Runtime(format!("cannot listen on {}: {e}", settings.server.bind))
        })?;
        // Tests and scripts read this line to learn the bound port.
        println!("sluice listening on http://{addr}");
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, mode = settings.pipeline.mode.as_str(),
            partitions = settings.pipeline.partitions, "serving");
        let handle = server.handle();
        let server_task = actix_rt::spawn(server);

        let signal = wait_for_signal().await;
        // Keep serving while draining: POSTs and /readyz answer 503, so Kubernetes takes
        // the pod out of the Service and clients get a clear answer, not a refused connection.
        tracing::info!(
            signal,
            "shutting down: no longer accepting records, draining"
        );
        engine.shared().draining.store(true, Ordering::Release);
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
        if !engine.drain(grace).await {
            tracing::warn!(
                pending = engine.shared().pending(),
                "grace period over with records still pending"
            );
        }
        engine
            .flush()
            .await
            .map_err(|e| runtime(format!("final flush failed: {e}")))?;
        handle.stop(true).await;
        let _ = server_task.await;
        tracing::info!("stopped");
        Ok(())
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
