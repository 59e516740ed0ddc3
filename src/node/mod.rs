//! A whole sluice node as a library function: engine, REST API, recovery, graceful stop.
//!
//! [`run`] takes a bound listener and a shutdown future (the shape of tokio's mini-redis
//! `server::run`), so the binary passes its socket and the signals, and tests run several
//! nodes in one process as easily as the real binary.
//!
//! Start-up: engine and HTTP first (so `/healthz` answers and POSTs get 503 while
//! restoring), then recovery (`recovery.rs`), re-issue of pending records, ready. Shutdown
//! (README "Operating"), the HTTP server answering throughout: `/readyz` 503 at once; a
//! cluster member hands its partitions over while it still routes records (forwarded, or
//! 503 while a partition has no owner), then refuses them and ships what it staged; a
//! standalone node refuses records (503) at once. Then the in-flight records drain up to
//! `server.shutdown_grace_ms`, the sinks commit, a final checkpoint, and the HTTP server
//! stops last (the binary keeps the port open until the process exits: `cli/serve.rs`).

pub mod recovery;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cluster::controller::{Controller, JoinError};
use crate::durability::{backlog, journal, lock};
use crate::engine::Engine;
use crate::engine::ownership::Ownership;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::sink;

/// How long the HTTP workers get to start on the connections already accepted, between
/// pausing the accept loop and stopping the server.
const WORKER_HANDOFF: Duration = Duration::from_millis(50);

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration (the CLI exits 2): one message per problem.
    #[error("{}", .0.join("\n"))]
    Usage(Vec<String>),
    /// A runtime failure (the CLI exits 1).
    #[error("{0}")]
    Runtime(String),
}

impl From<crate::lookup::factory::BuildError> for NodeError {
    fn from(e: crate::lookup::factory::BuildError) -> Self {
        match e {
            crate::lookup::factory::BuildError::Config(m) => NodeError::Usage(vec![m]),
            crate::lookup::factory::BuildError::Connect(m) => NodeError::Runtime(m),
        }
    }
}

/// The base URL other nodes reach this one at: `cluster.advertise`, else the bound
/// address (which must then be a concrete one).
fn advertise(settings: &Settings, addr: std::net::SocketAddr) -> Result<String, NodeError> {
    if !settings.cluster.advertise.is_empty() {
        return Ok(settings.cluster.advertise.trim_end_matches('/').to_string());
    }
    if settings.cluster.enabled && addr.ip().is_unspecified() {
        return Err(NodeError::Usage(vec![format!(
            "cluster.advertise: required when server.bind listens on every interface ({addr}); \
             set the URL other nodes reach this one at, e.g. http://sluice-0.sluice:8080"
        )]));
    }
    Ok(format!("http://{addr}"))
}

/// Run a node on `listener` until `shutdown` completes, then stop gracefully. Must be
/// called inside an actix `System` (`actix_rt::System::new().block_on(run(..))`). The
/// port answers until `run` returns; a caller that must not refuse connections until its
/// process exits keeps another handle on the socket and answers on it from then on (as
/// `sluice serve` does, `http/stopped.rs`).
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let runtime = |e: String| NodeError::Runtime(e);
    let node = settings.node_id();
    let dir = PathBuf::from(&settings.checkpoint.dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        runtime(format!(
            "checkpoint.dir: cannot create `{}`: {e}",
            dir.display()
        ))
    })?;
    // Before any sink file is opened: a second instance on this directory stops here.
    let _lock = lock::lock_dir(&dir, &node).map_err(|e| match e {
        lock::LockError::Held { .. } => NodeError::Usage(vec![e.to_string()]),
        lock::LockError::Io { .. } => runtime(e.to_string()),
    })?;
    // CQL backends and sinks build their own driver runtime, which cannot start inside
    // this one: build them on a blocking thread.
    let (lookup, output, dead) = {
        let s = settings.clone();
        actix_rt::task::spawn_blocking(move || -> Result<_, NodeError> {
            let lookups = crate::lookup::factory::build_pipeline(&s)?;
            let lookup = crate::engine::pipeline::Pipeline::new(&s, lookups)
                .map(Arc::new)
                .map_err(|e| NodeError::Usage(vec![e.to_string()]))?;
            let sink_error = |e: sink::SinkError| match e {
                sink::SinkError::InUse { .. } => NodeError::Usage(vec![e.to_string()]),
                e => runtime(e.to_string()),
            };
            let output = sink::open(&s.output, sink::Role::Output).map_err(sink_error)?;
            let dead = sink::open(&s.dead_letter, sink::Role::DeadLetter).map_err(sink_error)?;
            Ok((lookup, output, dead))
        })
        .await
        .map_err(|e| runtime(format!("building backends: {e}")))??
    };
    let addr = listener
        .local_addr()
        .map_err(|e| runtime(format!("listener: {e}")))?;
    let advertise = advertise(&settings, addr)?;
    let settings = Arc::new(settings);
    let (journal, inbox) = journal::channel(journal_limits(&settings));
    let partitions = settings.pipeline.partitions as u32;
    // Before anything is written to the directory: a fresh one is a new incarnation.
    let incarnation = if settings.cluster.enabled {
        crate::durability::incarnation::establish(&dir).map_err(|e| runtime(e.to_string()))?
    } else {
        String::new()
    };
    let ownership = Arc::new(if settings.cluster.enabled {
        Ownership::clustered(&node, &incarnation, partitions)
    } else {
        Ownership::standalone(&node, partitions)
    });
    let engine = Arc::new(
        Engine::start_with(
            &settings,
            lookup,
            output,
            dead,
            Some(journal.clone()),
            ownership,
        )
        .map_err(|e| runtime(e.to_string()))?,
    );
    // Set once the shutdown grace is over: requests still waiting for records answer 503.
    let (grace_over_tx, grace_over) = tokio::sync::watch::channel(false);
    // SIGHUP is ours from here on (reopen the file sinks), never the default (exit).
    reopen_on_sighup(Arc::downgrade(&engine));
    // Answers on the port once the HTTP server stops taking connections (`http/stopped.rs`).
    let answer_on = listener
        .try_clone()
        .map_err(|e| tracing::warn!(error = %e, "listener: no second handle"))
        .ok();
    let server = http::serve(
        AppState {
            engine: engine.clone(),
            settings: settings.clone(),
            node: node.clone(),
            grace_over,
        },
        listener,
    )
    .map_err(|e| runtime(format!("cannot serve on {addr}: {e}")))?;
    let handle = server.handle();
    let server_task = actix_rt::spawn(server);

    let recovered = recovery::recover(&engine, &settings, dir, &journal, inbox).await?;
    let reissued = engine
        .restore(recovered.state)
        .await
        .map_err(|e| runtime(e.to_string()))?;
    let controller = if settings.cluster.enabled {
        let c = Controller::join(&settings, engine.clone(), advertise.clone())
            .await
            .map_err(|e| match e {
                JoinError::Mismatch(m) => NodeError::Usage(m.lines().map(String::from).collect()),
                JoinError::Store(e) => runtime(e.to_string()),
            })?;
        c.spawn();
        tracing::info!(node = %node, %incarnation, %advertise, prefix = %settings.cluster.prefix, "cluster member");
        Some(c)
    } else {
        None
    };
    engine.set_ready();
    tracing::info!(%addr, mode = settings.pipeline.mode.as_str(),
        partitions = settings.pipeline.partitions, reissued,
        restore_ms = recovered.millis, "serving");

    // The signal, or (cluster) the news that this node's id belongs to another
    // incarnation: then it has handed over what it held and exits 2.
    let retired = async {
        match &controller {
            Some(c) => Some(c.retired().await),
            None => std::future::pending().await,
        }
    };
    let retired = tokio::select! {
        () = shutdown => None,
        why = retired => why,
    };
    if let Some(why) = retired {
        // Draining alone no longer refuses a cluster member's records: closed does.
        engine.shared().draining.store(true, Ordering::Release);
        engine.shared().closed.store(true, Ordering::Release);
        let _ = grace_over_tx.send(true);
        if let Err(e) = engine.checkpoint().await {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        stop_http(handle, server_task, answer_on).await;
        return Err(NodeError::Usage(vec![why]));
    }
    // Keep serving while stopping: /readyz answers 503 at once, so Kubernetes takes the
    // pod out of its Services; until it has, clients get answers, not refused connections.
    engine.shared().draining.store(true, Ordering::Release);
    if let Some(c) = &controller {
        tracing::info!("shutting down: handing the partitions over, still routing records");
        // Hand every partition over (each drains first) while records of partitions owned
        // elsewhere are still forwarded; then refuse records and ship what was staged.
        c.leave().await;
    } else {
        tracing::info!("shutting down: no longer accepting records, draining");
    }
    engine.shared().closed.store(true, Ordering::Release);
    let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
    if !engine.drain(grace).await {
        tracing::warn!(
            pending = engine.shared().pending(),
            "grace period over with records still pending (they are in the checkpoint)"
        );
    }
    // `/v1/enrich` requests still waiting answer 503 now, so the HTTP stop below (which
    // gives open connections `http::STOP_TIMEOUT_SECS`) finds them answered.
    let _ = grace_over_tx.send(true);
    let result = match engine.checkpoint().await {
        Ok(Some(info)) => {
            tracing::info!(
                records = info.records,
                bytes = info.bytes,
                "final checkpoint"
            );
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(runtime(format!("final checkpoint failed: {e}"))),
    };
    stop_http(handle, server_task, answer_on).await;
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.stop();
    }
    tracing::info!("stopped");
    result
}

/// Stop the HTTP server, last: first stop taking connections and give the workers a
/// moment to start on those they were handed (a graceful stop drops connections still
/// queued for a worker, and their clients would see a reset), then let it finish those it
/// has (up to `http::STOP_TIMEOUT_SECS`). New connections are answered 503 on `answer_on`
/// from the pause until this returns.
async fn stop_http(
    handle: actix_web::dev::ServerHandle,
    server: actix_rt::task::JoinHandle<std::io::Result<()>>,
    answer_on: Option<TcpListener>,
) {
    handle.pause().await;
    let answerer = answer_on.and_then(http::stopped::Answerer::start);
    tokio::time::sleep(WORKER_HANDOFF).await;
    handle.stop(true).await;
    let _ = server.await;
    if let Some(a) = answerer {
        a.stop();
    }
}

/// SIGHUP reopens the file sinks (log rotation) instead of ending the process. Holds the
/// engine weakly: the graceful stop must remain its last owner.
fn reopen_on_sighup(engine: std::sync::Weak<Engine>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                actix_rt::spawn(async move {
                    while hup.recv().await.is_some() {
                        let Some(engine) = engine.upgrade() else {
                            break;
                        };
                        tracing::info!("SIGHUP: reopening the file sinks");
                        engine.reopen_sinks();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
}

/// How far the journal may fall behind on request data before the ingress refuses requests
/// (429 + `Retry-After`, like a full partition): see `durability/backlog.rs`.
fn journal_limits(s: &Settings) -> backlog::Limits {
    backlog::Limits::for_node(
        s.server.max_body_bytes,
        s.server.max_records_per_request,
        s.pipeline.partitions,
        s.pipeline.capacity,
        s.pipeline.backlog,
    )
}
