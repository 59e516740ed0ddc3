//! `sluice serve`: the engine plus the REST API until SIGTERM/SIGINT.
//!
//! Start-up: engine and HTTP first (so `/healthz` answers and POSTs get 503 while
//! restoring), then restore from `checkpoint.dir` on a blocking thread, cut the file sinks
//! back to their committed lengths, start the journal, re-issue pending records, and only
//! then turn ready. Shutdown: stop accepting (503), drain in-flight records up to
//! `server.shutdown_grace_ms`, commit the sinks, take a final checkpoint, exit 0.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CliError, build_lookup};
use crate::durability::{files, journal};
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
    let dir = PathBuf::from(&settings.checkpoint.dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        runtime(format!(
            "checkpoint.dir: cannot create `{}`: {e}",
            dir.display()
        ))
    })?;
    let settings = Arc::new(settings);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let (journal, inbox) = journal::channel();
        let engine = Arc::new(
            Engine::start(&settings, lookup, output, dead, Some(journal.clone()))
                .map_err(|e| runtime(e.to_string()))?,
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
        let handle = server.handle();
        let server_task = actix_rt::spawn(server);

        restore(&engine, &settings, dir, &journal, inbox).await?;
        engine.set_ready();
        tracing::info!(%addr, mode = settings.pipeline.mode.as_str(),
            partitions = settings.pipeline.partitions, "serving");

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
                "grace period over with records still pending (they are in the checkpoint)"
            );
        }
        match engine.checkpoint().await {
            Ok(Some(info)) => tracing::info!(
                records = info.records,
                bytes = info.bytes,
                "final checkpoint"
            ),
            Ok(None) => {}
            Err(e) => return Err(runtime(format!("final checkpoint failed: {e}"))),
        }
        handle.stop(true).await;
        let _ = server_task.await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn restore(
    engine: &Engine,
    settings: &Settings,
    dir: PathBuf,
    journal: &journal::JournalHandle,
    inbox: journal::JournalInbox,
) -> Result<(), CliError> {
    let started = Instant::now();
    let read_dir = dir.clone();
    let (state, next_segment, report) =
        actix_rt::task::spawn_blocking(move || files::restore(&read_dir))
            .await
            .map_err(|e| CliError::Runtime(format!("restore failed: {e}")))?
            .map_err(|e| {
                CliError::Runtime(format!(
                    "cannot read checkpoint.dir `{}`: {e}",
                    dir.display()
                ))
            })?;
    if let Some((p, _)) = state
        .pending
        .keys()
        .find(|(p, _)| u64::from(*p) >= settings.pipeline.partitions)
    {
        return Err(CliError::Usage(vec![format!(
            "pipeline.partitions: the checkpoint in `{}` holds records of partition {p}, but \
             only {} partitions are configured; partitions cannot change while records are pending",
            dir.display(),
            settings.pipeline.partitions
        )]));
    }
    if state.has_offsets {
        engine
            .truncate_sinks(state.output_offset, state.dead_letter_offset)
            .await
            .map_err(|e| CliError::Runtime(format!("cannot restore the sinks: {e}")))?;
    }
    let pending = state.pending.len();
    let has_offsets = state.has_offsets;
    let skipped: u64 = report.segments.iter().map(|s| s.skipped_bytes).sum();
    journal::spawn(
        inbox,
        dir,
        state.clone(),
        next_segment,
        Duration::from_millis(settings.checkpoint.interval_ms),
        engine.shared().clone(),
    )
    .map_err(|e| CliError::Runtime(format!("cannot start the journal: {e}")))?;
    if !has_offsets {
        // A fresh directory: commit the sinks' current lengths before anything is emitted,
        // so a crash before the first regular commit truncates back to exactly here.
        engine
            .flush()
            .await
            .map_err(|e| CliError::Runtime(format!("cannot commit the sinks: {e}")))?;
        journal
            .write_durable(Vec::new())
            .await
            .map_err(|_| CliError::Runtime("the journal stopped".into()))?
            .map_err(CliError::Runtime)?;
    }
    let reissued = engine
        .restore(state)
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    tracing::info!(
        snapshot = report.snapshot.as_deref().unwrap_or("none"),
        segments = report.segments.len(),
        skipped_snapshots = report.skipped_snapshots.len(),
        skipped_bytes = skipped,
        pending,
        reissued,
        ms = started.elapsed().as_millis() as u64,
        "restore finished"
    );
    Ok(())
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
