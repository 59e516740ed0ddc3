//! The REST API (README "REST API") on actix-web. Handlers only translate HTTP to engine calls;
//! every failure leaves through [`problem::ApiError`].
//!
//! Slow and odd clients are bounded here: the request head must arrive within
//! [`HEAD_TIMEOUT`], the body within [`BODY_TIMEOUT`] with no pause over [`BODY_IDLE_TIMEOUT`]
//! (408), at most [`MAX_CONNECTIONS`] connections are open (fewer when the process may open
//! fewer files), and a client that closes its connection has its handler dropped at once.

pub mod api;
pub mod body;
pub mod cluster;
pub mod openapi;
pub mod problem;
pub mod responses;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{App, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use self::body::{format_of, parse_records};
use self::problem::ApiError;
use crate::engine::{Engine, SubmitError};
use crate::settings::Settings;

/// How long a client may take to send a request's head (request line and headers); actix
/// answers a bare 408 and closes the connection after that.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A request body must arrive completely within this long from the end of its head (408).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body may pause at most this long between two pieces (408).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// At most this many client connections are open at once (more wait in the listen queue).
pub const MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept free of connections for the journal, sinks and backends.
pub const FD_RESERVE: usize = 256;
/// After the shutdown grace, open connections get this long to finish (then dropped).
pub const STOP_TIMEOUT_SECS: u64 = 1;

/// What every handler shares.
pub struct AppState {
    /// The running engine.
    pub engine: Arc<Engine>,
    /// The effective configuration.
    pub settings: Arc<Settings>,
    /// Node name for `/v1/status`.
    pub node: String,
    /// Turns `true` when the shutdown grace is over: requests still waiting for records
    /// (`/v1/enrich`) answer 503 at once instead of holding the stop up.
    pub grace_over: watch::Receiver<bool>,
}

type Data = web::Data<AppState>;

/// The connection limits [`serve`] applies (logged once at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections per worker (actix counts them per worker).
    pub per_worker: usize,
    /// `per_worker` × workers: the most connections open at once.
    pub total: usize,
}

impl Limits {
    /// At most [`MAX_CONNECTIONS`], and never more than the open-file limit minus
    /// [`FD_RESERVE`] (`nofile`: the soft `RLIMIT_NOFILE`, when known).
    pub fn new(workers: usize, nofile: Option<usize>) -> Limits {
        let workers = workers.max(1);
        let cap = nofile.map_or(MAX_CONNECTIONS, |n| {
            MAX_CONNECTIONS.min(n.saturating_sub(FD_RESERVE))
        });
        let per_worker = (cap / workers).max(1);
        Limits {
            per_worker,
            total: per_worker * workers,
        }
    }
}

/// The soft limit on open files from `/proc/self/limits` (Linux; `None` elsewhere or when
/// unlimited).
fn open_file_limit() -> Option<usize> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_file_limit(limits: &str) -> Option<usize> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// A resource answering `GET` and `HEAD` with `handler` (405 with `Allow` otherwise).
fn readable<F, Args>(path: &'static str, handler: F) -> Resource
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|req: HttpRequest| async move {
            method_not_allowed(&req, "GET, HEAD")
        }))
}

/// A resource answering `POST` with `handler` (405 with `Allow` otherwise).
fn postable<F, Args>(path: &'static str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|req: HttpRequest| async move {
            method_not_allowed(&req, "POST")
        }))
}

fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        detail: format!(
            "{} does not accept {}; it accepts {allow}",
            req.path(),
            req.method()
        ),
        allow,
    })
}

/// Serve the API on an already bound listener (the caller chose the port and printed it).
pub fn serve(state: AppState, listener: std::net::TcpListener) -> std::io::Result<Server> {
    let workers = state.settings.http_workers();
    let limits = Limits::new(workers, open_file_limit());
    tracing::info!(
        max_connections = limits.total,
        per_worker = limits.per_worker,
        workers,
        head_timeout_ms = HEAD_TIMEOUT.as_millis() as u64,
        body_timeout_ms = BODY_TIMEOUT.as_millis() as u64,
        body_idle_timeout_ms = BODY_IDLE_TIMEOUT.as_millis() as u64,
        keep_alive_ms = KEEP_ALIVE.as_millis() as u64,
        max_body_bytes = state.settings.server.max_body_bytes,
        "HTTP limits: at most {} connections open ({} per worker; more wait in the listen \
         queue); request head within {} s, body within {} s with no pause over {} s (else \
         408); idle keep-alive connections closed after {} s",
        limits.total,
        limits.per_worker,
        HEAD_TIMEOUT.as_secs(),
        BODY_TIMEOUT.as_secs(),
        BODY_IDLE_TIMEOUT.as_secs(),
        KEEP_ALIVE.as_secs(),
    );
    let data = web::Data::new(state);
    let max_body = data.settings.server.max_body_bytes;
    let addr = listener.local_addr()?;
    let app_data = data.clone();
    let app = move || {
        let data = app_data.clone();
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
            .service(postable("/v1/records", post_records))
            .service(postable("/v1/enrich", post_enrich))
            .service(readable("/v1/status", get_status))
            .service(postable("/v1/checkpoint", post_checkpoint))
            .service(readable("/v1/cluster", cluster::get_cluster))
            .service(postable("/internal/v1/import", cluster::post_import))
            .service(readable("/metrics", get_metrics))
            .service(readable("/healthz", healthz))
            .service(readable("/readyz", readyz))
            .service(readable("/openapi.json", openapi::get_openapi))
            .default_service(web::to(not_found))
    };
    // Assembled as actix-web's `HttpServer` does, plus an expect step of our own.
    let server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(limits.per_worker)
        .disable_signals()
        .shutdown_timeout(STOP_TIMEOUT_SECS)
        .listen("sluice-http", listener, move || {
            use actix_service::{ServiceFactoryExt, map_config};
            let factory = actix_service::IntoServiceFactory::into_factory(app())
                .map_err(|e: actix_web::Error| e.error_response().map_into_boxed_body());
            actix_http::HttpService::build()
                .client_request_timeout(HEAD_TIMEOUT)
                .keep_alive(KEEP_ALIVE)
                // A client that closes its connection is gone: drop its handler (and what
                // it waits for) at once instead of when the answer cannot be written.
                .h1_allow_half_closed(false)
                .local_addr(addr)
                .expect(actix_service::fn_service(
                    move |req: actix_http::Request| {
                        std::future::ready(expect_continue(req, max_body))
                    },
                ))
                .finish(map_config(factory, |_| {
                    actix_web::dev::AppConfig::default()
                }))
                .tcp()
        })?;
    Ok(server.run())
}

/// The `Expect: 100-continue` step: a body announced larger than `server.max_body_bytes`
/// gets its 413 before `100 Continue` (the client then never sends it).
fn expect_continue(
    req: actix_http::Request,
    max_body: u64,
) -> Result<actix_http::Request, actix_http::Response<actix_web::body::BoxBody>> {
    use actix_http::HttpMessage as _;
    use actix_web::ResponseError as _;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > max_body => {
            let problem = ApiError::PayloadTooLarge(format!(
                "the body announces {n} bytes; server.max_body_bytes is {max_body}"
            ));
            let mut res = problem.error_response().map_into_boxed_body();
            res.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Err(res.into())
        }
        _ => Ok(req),
    }
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

/// Refuse any `Content-Encoding` but `identity`: the body would be parsed as it came.
fn check_encoding(req: &HttpRequest) -> Result<(), ApiError> {
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            ApiError::UnsupportedEncoding(
                "the Content-Encoding header is not readable; send the body uncompressed".into(),
            )
        })?;
        for coding in text.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Err(ApiError::UnsupportedEncoding(format!(
                    "Content-Encoding `{coding}` is not supported: send the body uncompressed \
                     (identity)"
                )));
            }
        }
    }
    Ok(())
}

/// Read the body up to `server.max_body_bytes`, refusing early on Content-Length and on a
/// content coding, within [`BODY_TIMEOUT`] and without pauses over [`BODY_IDLE_TIMEOUT`].
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    check_encoding(req)?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = length
        && len > limit
    {
        return Err(too_large(len.to_string(), limit));
    }
    collect_body(payload, length, limit, BODY_IDLE_TIMEOUT, BODY_TIMEOUT).await
}

fn too_large(size: String, limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body is {size} bytes; the limit is {limit} (server.max_body_bytes)"
    ))
}

/// Gather a body stream of `length` bytes (when declared) up to `limit`; a stream that
/// pauses longer than `idle`, or is not complete after `total`, is a 408.
async fn collect_body<S>(
    mut stream: S,
    length: Option<u64>,
    limit: u64,
    idle: Duration,
    total: Duration,
) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let started = tokio::time::Instant::now();
    let deadline = started + total;
    let mut buf = Vec::new();
    loop {
        let now = tokio::time::Instant::now();
        let wait = idle.min(deadline.saturating_duration_since(now));
        let Ok(next) = tokio::time::timeout(wait, stream.next()).await else {
            let got = match length {
                Some(n) => format!("{} of {n} bytes", buf.len()),
                None => format!("{} bytes", buf.len()),
            };
            return Err(ApiError::RequestTimeout(
                if tokio::time::Instant::now() >= deadline {
                    format!(
                        "the body was not complete {} s after the headers ({got} received); \
                         send it faster or in smaller requests",
                        total.as_secs_f64()
                    )
                } else {
                    format!(
                        "no part of the body arrived for {} s ({got} received)",
                        idle.as_secs_f64()
                    )
                },
            ));
        };
        let Some(chunk) = next else {
            return Ok(buf);
        };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(format!("more than {limit}"), limit));
        }
        buf.extend_from_slice(&chunk);
    }
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
            "the records could not be made durable ({e}); nothing of this request was \
             processed, retry it"
        )),
    }
}

/// Send records to be enriched and emitted to the sinks.
#[utoipa::path(
    post,
    path = "/v1/records",
    tag = "records",
    description = "All records are accepted (202, their ids in request order) or none. With \
                   `pipeline.ack = \"durable\"` the 202 comes once they are in the journal.",
    request_body(
        description = "A JSON array of records, or NDJSON: one record per line, blank lines \
                       skipped (its schema describes the lines as the items of an array).",
        content(
            (Vec<api::Record> = "application/json"),
            (Vec<api::Record> = "application/x-ndjson", example = "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n"),
        ),
    ),
    responses(
        (status = 202, description = "Every record was accepted.", body = api::RecordsAccepted),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 408, response = responses::RequestTimeout),
        (status = 413, response = responses::PayloadTooLarge),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 422, response = responses::InvalidRecords),
        (status = 429, response = responses::Overloaded),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_records(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let ids = state.engine.submit(records).await.map_err(submit_error)?;
    let answer = api::RecordsAccepted {
        accepted: ids.len(),
        ids,
    };
    Ok(HttpResponse::Accepted()
        .content_type("application/json")
        .body(answer.into_body()))
}

/// Enrich records and answer with their envelopes (not written to the sinks).
#[utoipa::path(
    post,
    path = "/v1/enrich",
    tag = "records",
    description = "Waits for every record's outcome and answers with the envelopes in request \
                   order. Nothing is journaled or written to the sinks.",
    request_body(
        description = "A JSON array of records, or NDJSON: one record per line (its schema \
                       describes the lines as the items of an array).",
        content(
            (Vec<api::Record> = "application/json"),
            (Vec<api::Record> = "application/x-ndjson", example = "{\"user_id\":\"u1\"}\n"),
        ),
    ),
    responses(
        (status = 200, description = "One envelope per record, in request order.", body = api::EnrichResults),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 408, response = responses::RequestTimeout),
        (status = 413, response = responses::PayloadTooLarge),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 422, response = responses::InvalidRecords),
        (status = 429, response = responses::Overloaded),
        (status = 500, response = responses::Internal),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_enrich(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let n = records.len();
    // Dropped with the handler when the client goes away: say so (the records themselves
    // end at their outcome or deadline; their envelopes then go nowhere).
    let mut waiting = WaitGuard {
        records: n,
        done: false,
    };
    let enrich = async {
        if state.engine.shared().ownership.is_clustered() {
            cluster::enrich_across(&req, &state, records).await
        } else {
            state.engine.enrich(records).await.map_err(submit_error)
        }
    };
    let mut grace_over = state.grace_over.clone();
    let answer = tokio::select! {
        r = enrich => r,
        _ = grace_over.wait_for(|over| *over) => Err(ApiError::Unavailable(format!(
            "the node is shutting down and its grace period (server.shutdown_grace_ms) is \
             over: {n} record(s) were not enriched; retry on another node"
        ))),
    };
    waiting.done = true;
    let answer = api::EnrichResults { results: answer? };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(answer.into_body()))
}

/// Logs a `/v1/enrich` request whose client went away before its answer.
struct WaitGuard {
    records: usize,
    done: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(
                records = self.records,
                "/v1/enrich: the client went away before its answer"
            );
        }
    }
}

/// The node's counters per partition, pending records and last checkpoint.
#[utoipa::path(
    method(get, head),
    path = "/v1/status",
    tag = "operations",
    responses((status = 200, description = "This node's state.", body = api::Status)),
)]
pub async fn get_status(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    let partitions = shared
        .partitions
        .iter()
        .enumerate()
        .map(|(id, p)| api::PartitionStatus {
            id,
            in_flight: p.in_flight.load(Ordering::Acquire) as u64,
            backlog: p.backlog.load(Ordering::Acquire) as u64,
            accepted: p.accepted.load(Ordering::Acquire),
            emitted: p.emitted.load(Ordering::Acquire),
        })
        .collect();
    let pending = shared.pending();
    shared.metrics.pending.set(pending as i64);
    HttpResponse::Ok().json(api::Status {
        node: state.node.clone(),
        ready: shared.accepting(),
        mode: state.settings.pipeline.mode.into(),
        partitions,
        pending,
        staged: shared.staged(),
        last_checkpoint: shared
            .last_checkpoint
            .lock()
            .as_ref()
            .map(api::Checkpoint::from),
        sink_problems: shared.sink_problems.lock().clone(),
    })
}

/// Take a snapshot of the pending records now.
#[utoipa::path(
    post,
    path = "/v1/checkpoint",
    tag = "operations",
    responses(
        (status = 200, description = "The snapshot is durable.", body = api::Checkpoint),
        (status = 401, response = responses::Unauthorized),
        (status = 501, response = responses::NotImplemented),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_checkpoint(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state.settings)?;
    ensure_ready(&state)?;
    let own = &state.engine.shared().ownership;
    if own.is_clustered() && !own.lease_live() {
        return Err(ApiError::Unavailable(
            "no live etcd lease: this node commits nothing while fenced; retry shortly".into(),
        ));
    }
    match state.engine.checkpoint().await {
        Ok(Some(info)) => Ok(HttpResponse::Ok().json(api::Checkpoint::from(&info))),
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

/// Prometheus metrics (`sluice_*`).
#[utoipa::path(
    method(get, head),
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String)),
)]
pub async fn get_metrics(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    shared.metrics.pending.set(shared.pending() as i64);
    let m = &shared.metrics;
    m.catch_up(&m.lookup_coalesced, state.engine.lookup().coalesced());
    let (hits, misses) = state.engine.lookup().cache_stats();
    for (label, now) in [("hit", hits), ("miss", misses)] {
        m.catch_up(&m.lookup_cache.with_label_values(&[label]), now);
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

/// Liveness: the process answers.
#[utoipa::path(
    method(get, head),
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = api::Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health { status: "ok" })
}

/// Readiness: whether the node takes records now, and if not, why.
#[utoipa::path(
    method(get, head),
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The node takes records.", body = api::Ready),
        (status = 503, response = responses::Unavailable),
    ),
)]
pub async fn readyz(state: Data) -> Result<HttpResponse, ApiError> {
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
    if let Some(why) = state.engine.shared().journal_health.lock().clone() {
        return Err(ApiError::Unavailable(format!(
            "the journal cannot write ({why}): new records are refused until it can"
        )));
    }
    let sinks = state.engine.shared().sink_problems.lock().clone();
    if !sinks.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "a sink is unhealthy; its records stay pending and are retried: {}",
            sinks.join("; ")
        )));
    }
    Ok(HttpResponse::Ok().json(api::Ready { ready: true }))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no resource at {}", req.path())))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use futures_util::stream;

    use super::*;

    fn chunk(b: &'static [u8]) -> Result<Bytes, PayloadError> {
        Ok(Bytes::from_static(b))
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_whole_body_is_gathered() {
        let s = stream::iter(vec![chunk(b"[1,"), chunk(b"2]")]);
        let body = collect_body(s, Some(5), 100, 50 * MS, 500 * MS).await;
        assert_eq!(body.unwrap(), b"[1,2]");
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_naming_what_arrived() {
        let s = stream::iter(vec![chunk(b"[1,")]).chain(stream::pending());
        let started = std::time::Instant::now();
        let e = collect_body(s, Some(10), 100, 50 * MS, 5000 * MS)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, ApiError::RequestTimeout(_)), "{e:?}");
        assert!(e.to_string().contains("3 of 10 bytes"), "{e}");
        assert!(e.to_string().contains("no part of the body arrived"), "{e}");
    }

    #[tokio::test]
    async fn a_trickling_body_is_a_408_at_the_total_limit() {
        // A byte every 10 ms never pauses long enough for the idle limit.
        let s = Box::pin(stream::unfold((), |_| async {
            tokio::time::sleep(10 * MS).await;
            Some((chunk(b"x"), ()))
        }));
        let started = std::time::Instant::now();
        let e = collect_body(s, None, 1 << 20, 100 * MS, 200 * MS)
            .await
            .unwrap_err();
        assert!(started.elapsed() >= 200 * MS);
        assert!(matches!(e, ApiError::RequestTimeout(_)), "{e:?}");
        assert!(e.to_string().contains("not complete"), "{e}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413() {
        let s = stream::iter(vec![chunk(b"12345"), chunk(b"678")]);
        let e = collect_body(s, None, 6, 50 * MS, 500 * MS)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge(_)), "{e:?}");
    }

    #[test]
    fn only_the_identity_coding_is_taken() {
        let with = |v: &str| {
            check_encoding(
                &TestRequest::default()
                    .insert_header((header::CONTENT_ENCODING, v))
                    .to_http_request(),
            )
        };
        assert!(check_encoding(&TestRequest::default().to_http_request()).is_ok());
        assert!(with("identity").is_ok());
        assert!(with("Identity, identity").is_ok());
        for coding in ["gzip", "br", "identity, deflate"] {
            let e = with(coding).unwrap_err();
            assert!(matches!(e, ApiError::UnsupportedEncoding(_)), "{coding}");
        }
        assert!(
            with("identity, zstd")
                .unwrap_err()
                .to_string()
                .contains("`zstd`")
        );
    }

    #[test]
    fn connections_are_capped_by_the_constant_and_the_open_file_limit() {
        assert_eq!(
            Limits::new(4, None),
            Limits {
                per_worker: MAX_CONNECTIONS / 4,
                total: MAX_CONNECTIONS
            }
        );
        assert_eq!(Limits::new(4, Some(1 << 20)).total, MAX_CONNECTIONS);
        // 1024 files: 256 kept for the node, 768 over 3 workers.
        assert_eq!(
            Limits::new(3, Some(1024)),
            Limits {
                per_worker: 256,
                total: 768
            }
        );
        // Never zero, never more than a worker's share rounded down.
        assert_eq!(Limits::new(2, Some(100)).per_worker, 1);
        assert_eq!(Limits::new(0, None).total, MAX_CONNECTIONS);
        assert_eq!(Limits::new(3, None).total, MAX_CONNECTIONS / 3 * 3);
    }

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(20000));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited  unlimited  files\n"),
            None
        );
        assert_eq!(parse_open_file_limit(""), None);
    }
}
