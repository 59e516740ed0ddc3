//! The REST API (README "REST API") on actix-web. Handlers only translate HTTP to engine calls;
//! every failure leaves through [`problem::ApiError`].

pub mod body;
pub mod cluster;
pub mod problem;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::dev::{Server, Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::StreamExt;
use serde_json::json;

use self::body::{format_of, parse_records};
use self::problem::ApiError;
use crate::engine::{Engine, SubmitError};
use crate::settings::Settings;

/// What every handler shares.
pub struct AppState {
    /// The running engine.
    pub engine: Arc<Engine>,
    /// The effective configuration.
    pub settings: Arc<Settings>,
    /// Node name for `/v1/status`.
    pub node: String,
}

type Data = web::Data<AppState>;

/// Serve the API on an already bound listener (the caller chose the port and printed it).
pub fn serve(state: AppState, listener: std::net::TcpListener) -> std::io::Result<Server> {
    let workers = state.settings.http_workers();
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap_fn(|req, srv| {
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                let data = req.app_data::<Data>().cloned();
                let started = Instant::now();
                let fut = srv.call(req);
                async move {
                    let res: ServiceResponse = fut.await?;
                    if let Some(d) = data {
                        let m = &d.engine.shared().metrics;
                        m.http_requests
                            .with_label_values(&[&route, res.status().as_str()])
                            .inc();
                        m.http_duration
                            .with_label_values(&[&route])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    Ok(res)
                }
            })
            .route("/v1/records", web::post().to(post_records))
            .route("/v1/enrich", web::post().to(post_enrich))
            .route("/v1/status", web::get().to(get_status))
            .route("/v1/checkpoint", web::post().to(post_checkpoint))
            .route("/v1/cluster", web::get().to(cluster::get_cluster))
            .route("/internal/v1/import", web::post().to(cluster::post_import))
            .route("/metrics", web::get().to(get_metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?;
    Ok(server.run())
}

pub(crate) fn authorize(req: &HttpRequest, settings: &Settings) -> Result<(), ApiError> {
    let tokens = &settings.server.auth_tokens;
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(t)
            if tokens
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), t.as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ensure_ready(state: &AppState) -> Result<(), ApiError> {
    let shared = state.engine.shared();
    if shared.draining.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the node is shutting down".into()));
    }
    if !shared.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the node is not ready yet".into()));
    }
    Ok(())
}

/// Read the body up to `server.max_body_bytes`, refusing early on Content-Length.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = |size: String| {
        ApiError::PayloadTooLarge(format!(
            "the body is {size} bytes; the limit is {limit} (server.max_body_bytes)"
        ))
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(len.to_string()));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Everything `/v1/records` and `/v1/enrich` share: auth, readiness, body, validation.
async fn admitted_records(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Vec<crate::engine::admit::Admitted>, ApiError> {
    authorize(req, &state.settings)?;
    ensure_ready(state)?;
    let format = format_of(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let server = &state.settings.server;
    let bytes = read_body(req, payload, server.max_body_bytes).await?;
    state
        .engine
        .shared()
        .metrics
        .http_body_bytes
        .observe(bytes.len() as f64);
    let records = parse_records(format, &bytes, server.max_records_per_request as usize)?;
    let rules = state.engine.rules();
    let mut admitted = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        match rules.admit(i, r.get()) {
            Ok(a) => admitted.push(a),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        let bad: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
        return Err(ApiError::InvalidRecords {
            detail: format!(
                "{} of {} record(s) are invalid; nothing was accepted",
                bad.len(),
                admitted.len() + bad.len()
            ),
            errors,
        });
    }
    Ok(admitted)
}

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Overloaded { reason, .. } if !reason.can_ever_fit() => {
            ApiError::PayloadTooLarge(format!(
                "{} of the records go to partition {}, which holds at most {} \
                 (pipeline.capacity + pipeline.backlog); send smaller batches",
                reason.wanted, reason.partition, reason.limit
            ))
        }
        SubmitError::Overloaded { reason, .. } => ApiError::Overloaded {
            detail: format!("{reason}; nothing was accepted, retry later"),
            retry_after_secs: 1,
        },
        SubmitError::Stopped => ApiError::Unavailable("the engine is stopping".into()),
        SubmitError::Unavailable(why) => {
            ApiError::Unavailable(format!("{why}; nothing was accepted, retry shortly"))
        }
        SubmitError::Journal(e) => ApiError::Unavailable(format!(
            "the records were accepted but could not be made durable ({e}); retry the request"
        )),
    }
}

async fn post_records(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let ids = state.engine.submit(records).await.map_err(submit_error)?;
    Ok(HttpResponse::Accepted().json(json!({"accepted": ids.len(), "ids": ids})))
}

async fn post_enrich(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let results = if state.engine.shared().ownership.is_clustered() {
        cluster::enrich_across(&req, &state, records).await?
    } else {
        state.engine.enrich(records).await.map_err(submit_error)?
    };
    let mut body = Vec::with_capacity(results.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"results\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r);
    }
    body.extend_from_slice(b"]}");
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

async fn get_status(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    let partitions: Vec<_> = shared
        .partitions
        .iter()
        .enumerate()
        .map(|(id, p)| {
            json!({
                "id": id,
                "in_flight": p.in_flight.load(Ordering::Acquire),
                "backlog": p.backlog.load(Ordering::Acquire),
                "accepted": p.accepted.load(Ordering::Acquire),
                "emitted": p.emitted.load(Ordering::Acquire),
            })
        })
        .collect();
    let pending = shared.pending();
    shared.metrics.pending.set(pending as i64);
    HttpResponse::Ok().json(json!({
        "node": state.node,
        "ready": shared.accepting(),
        "mode": state.settings.pipeline.mode.as_str(),
        "partitions": partitions,
        "pending": pending,
        // Cluster: records held here for other nodes' partitions (outbox, parked, dormant).
        "staged": shared.staged(),
        "last_checkpoint": *shared.last_checkpoint.lock(),
        // What is wrong with the sinks (empty: healthy).
        "sink_problems": *shared.sink_problems.lock(),
    }))
}

async fn post_checkpoint(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state.settings)?;
    ensure_ready(&state)?;
    let own = &state.engine.shared().ownership;
    if own.is_clustered() && !own.lease_live() {
        return Err(ApiError::Unavailable(
            "no live etcd lease: this node commits nothing while fenced; retry shortly".into(),
        ));
    }
    match state.engine.checkpoint().await {
        Ok(Some(info)) => Ok(HttpResponse::Ok().json(info)),
        Ok(None) => Err(ApiError::NotImplemented(
            "this engine runs without a journal".into(),
        )),
        Err(e) if e.starts_with("fenced") => Err(ApiError::Unavailable(format!(
            "checkpoint not taken: {e}; retry shortly"
        ))),
        // A sink or the journal cannot be made durable now (disk full, I/O error): nothing
        // was committed; the pending records are safe in the journal.
        Err(e) => Err(ApiError::Unavailable(format!(
            "checkpoint not taken: {e}; retry once the sink or disk recovers"
        ))),
    }
}

async fn get_metrics(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    shared.metrics.pending.set(shared.pending() as i64);
    let coalesced = state.engine.lookup().coalesced();
    let seen = shared.metrics.lookup_coalesced.get();
    if coalesced > seen {
        shared.metrics.lookup_coalesced.inc_by(coalesced - seen);
    }
    let (hits, misses) = state.engine.lookup().cache_stats();
    for (label, now) in [("hit", hits), ("miss", misses)] {
        let c = shared.metrics.lookup_cache.with_label_values(&[label]);
        if now > c.get() {
            c.inc_by(now - c.get());
        }
    }
    if let Some(c) = &*shared.last_checkpoint.lock() {
        let now = crate::durability::journal::unix_ms() as f64 / 1000.0;
        shared
            .metrics
            .checkpoint_age
            .set((now - c.unix_secs).max(0.0));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(shared.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: Data) -> Result<HttpResponse, ApiError> {
    ensure_ready(&state)?;
    let own = &state.engine.shared().ownership;
    if own.is_clustered() {
        if !own.lease_live() {
            return Err(ApiError::Unavailable(
                "no live etcd lease: this node has fenced itself (503 until etcd answers)".into(),
            ));
        }
        if !own.known() {
            return Err(ApiError::Unavailable(
                "the partition owners are not known yet".into(),
            ));
        }
    }
    if !state.engine.lookup().is_ready() {
        return Err(ApiError::Unavailable(format!(
            "the lookup backend is unreachable ({})",
            state.engine.lookup().describe()
        )));
    }
    let sinks = state.engine.shared().sink_problems.lock().clone();
    if !sinks.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "a sink is unhealthy; its records stay pending and are retried: {}",
            sinks.join("; ")
        )));
    }
    Ok(HttpResponse::Ok().json(json!({"ready": true})))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let known = [
        "/v1/records",
        "/v1/enrich",
        "/v1/status",
        "/v1/checkpoint",
        "/v1/cluster",
        "/internal/v1/import",
        "/metrics",
        "/healthz",
        "/readyz",
    ];
    Err(if known.contains(&req.path()) {
        ApiError::MethodNotAllowed(format!("{} does not accept {}", req.path(), req.method()))
    } else {
        ApiError::NotFound(format!("no resource at {}", req.path()))
    })
}
