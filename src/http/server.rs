//! The HTTP server: the routes mounted on their handlers, the metrics middleware, and the
//! server assembled from actix-server/actix-http with the connection cap, the head timeout
//! and an `Expect: 100-continue` step that answers 413 for a body announced over the limit.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service, ServiceResponse};
use actix_web::http::header;
use actix_web::{App, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, web};

use super::body::{BODY_IDLE_TIMEOUT, BODY_TIMEOUT};
use super::problem::ApiError;
use super::state::{AppState, Data};
use super::{cluster, openapi, ops, records};

/// How long a client may take to send a request's head (request line and headers); actix
/// answers a bare 408 and closes the connection after that.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// At most this many client connections are open at once (more wait in the listen queue).
pub const MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept free of connections for the journal, sinks and backends.
pub const FD_RESERVE: usize = 256;
/// After the shutdown grace, open connections get this long to finish (then dropped).
pub const STOP_TIMEOUT_SECS: u64 = 1;

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
                    let mut res: ServiceResponse = fut.await?;
                    if let Some(d) = data {
                        let shared = d.engine.shared();
                        let m = &shared.metrics;
                        m.http_requests
                            .with_label_values(&[&route, res.status().as_str()])
                            .inc();
                        m.http_duration
                            .with_label_values(&[&route])
                            .observe(started.elapsed().as_secs_f64());
                        // Stopping: each connection ends with its answer, so clients
                        // reconnect (through a Service, to another node) and none stays
                        // idle for the final stop to wait on.
                        if shared.draining.load(Ordering::Acquire) {
                            res.response_mut()
                                .head_mut()
                                .set_connection_type(actix_http::ConnectionType::Close);
                        }
                    }
                    Ok(res)
                }
            })
            .service(postable("/v1/records", records::post_records))
            .service(postable("/v1/enrich", records::post_enrich))
            .service(readable("/v1/status", ops::get_status))
            .service(postable("/v1/checkpoint", ops::post_checkpoint))
            .service(readable("/v1/cluster", cluster::get_cluster))
            .service(postable("/internal/v1/import", cluster::post_import))
            .service(readable("/metrics", ops::get_metrics))
            .service(readable("/healthz", ops::healthz))
            .service(readable("/readyz", ops::readyz))
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

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no resource at {}", req.path())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
