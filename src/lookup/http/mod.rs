//! `backend = "http"` pipeline steps: lookups against an HTTP service (README "Pipelines").
//!
//! `GET` fills the URL's `{N}` placeholders with the binds; `POST` sends `{"keys": [b0, ...]}`;
//! with `batch_max_keys > 0` many keys share one `POST` ([`batch`]). What an answer means is
//! decided in [`answer`]. Requests run on a small runtime of the backend's own, so a lookup
//! started on a partition thread is a future that only waits. Equal bind values share one
//! request in flight and, with a cache, one result for its TTL.

mod answer;
mod batch;
mod bind;
mod client;
mod ready;
mod url;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::Shared;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::cache::ResultCache;
use super::{BoxFuture, Lookup, LookupError, LookupRequest, LookupResult, Pending};
use crate::pointer::Pointer;
use crate::settings::{HttpMethod, Step};
use answer::Answer;
use batch::Batcher;
use bind::Bound;
use client::Transport;
use ready::Readiness;
use url::{Template, TemplateError};

/// Why an `http` step cannot be built; each names the step's key.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("lookup.steps.{step}.url: {reason}")]
    Url { step: String, reason: String },
    #[error("lookup.steps.{step}.url: {source}")]
    Template {
        step: String,
        #[source]
        source: TemplateError,
    },
    #[error(
        "lookup.steps.{step}.url: `{url}` has placeholders, but a batched step (batch_max_keys > 0) sends its keys in the POST body"
    )]
    BatchedPlaceholder { step: String, url: String },
    #[error("lookup.steps.{step}.ca_file: {reason}")]
    CaFile { step: String, reason: String },
    #[error("lookup.steps.{step}.headers: `{name}`: {reason}")]
    Header {
        step: String,
        name: String,
        reason: String,
    },
    #[error("lookup.steps.{step}.{key}: {reason}")]
    Pointer {
        step: String,
        key: &'static str,
        reason: String,
    },
    #[error("lookup.steps.{step}: {reason}")]
    Client { step: String, reason: String },
}

type Flight = Shared<BoxFuture<LookupResult>>;

/// How requests are made.
enum Mode {
    Get(Template),
    Post(Template),
    Batched(Batcher),
}

/// What a request's task needs.
struct Inner {
    transport: Arc<Transport>,
    mode: Mode,
    result: Pointer,
    attempt_timeout: Duration,
}

impl Inner {
    /// One lookup, bounded by the attempt timeout.
    async fn lookup(&self, bound: Bound) -> LookupResult {
        let limit = self.attempt_timeout;
        match tokio::time::timeout(limit, self.attempt(bound)).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Timeout(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    async fn attempt(&self, bound: Bound) -> LookupResult {
        let req = match &self.mode {
            Mode::Batched(b) => return b.lookup(bound.json_array()).await,
            Mode::Get(t) => self
                .transport
                .request(reqwest::Method::GET, parse_url(&t.render(&bound))?),
            Mode::Post(t) => self
                .transport
                .request(reqwest::Method::POST, parse_url(&t.render(&bound))?)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(format!("{{\"keys\":{}}}", bound.json_array())),
        };
        let permit = self.transport.permit().await?;
        let r = self.transport.exchange(req, permit).await?;
        answer::single(
            &Answer {
                status: r.status,
                retry_after: r.retry_after.as_deref(),
                body: &r.body,
            },
            &self.result,
            SystemTime::now(),
        )
    }
}

/// A rendered URL (a placeholder's value may still make it unparsable, e.g. as the port).
fn parse_url(text: &str) -> Result<reqwest::Url, LookupError> {
    reqwest::Url::parse(text).map_err(|e| LookupError::Fatal(format!("bad URL `{text}`: {e}")))
}

/// The HTTP lookup backend of one step.
pub struct HttpLookup {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    binds: Vec<Pointer>,
    in_flight: Arc<Mutex<HashMap<Vec<u8>, Flight>>>,
    cache: Option<Arc<Mutex<ResultCache>>>,
    coalesced: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    readiness: Arc<Readiness>,
    describe: String,
}

impl HttpLookup {
    /// Build step `step_name`'s client and start its runtime; nothing is sent yet.
    pub fn new(step_name: &str, step: &Step) -> Result<HttpLookup, HttpError> {
        let name = || step_name.to_string();
        let binds = step
            .binds
            .iter()
            .map(|p| Pointer::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HttpError::Pointer {
                step: name(),
                key: "binds",
                reason: e.to_string(),
            })?;
        let result = Pointer::parse(&step.result).map_err(|e| HttpError::Pointer {
            step: name(),
            key: "result",
            reason: e.to_string(),
        })?;
        let template =
            Template::parse(&step.url, binds.len()).map_err(|source| HttpError::Template {
                step: name(),
                source,
            })?;
        let sample = reqwest::Url::parse(&template.sample()).map_err(|e| HttpError::Url {
            step: name(),
            reason: format!("`{}` is not a URL: {e}", step.url),
        })?;
        let (Some(host), Some(port), "http" | "https") = (
            sample.host_str(),
            sample.port_or_known_default(),
            sample.scheme(),
        ) else {
            return Err(HttpError::Url {
                step: name(),
                reason: format!(
                    "`{}` must be an http:// or https:// URL with a host",
                    step.url
                ),
            });
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let headers = headers(step_name, step)?;
        let roots = roots(step_name, &step.ca_file)?;
        let attempt_timeout = Duration::from_millis(step.attempt_timeout_ms.max(1));
        let readiness = Arc::new(Readiness::new(step_name));
        let transport = Transport::new(
            roots,
            headers,
            step.concurrency.clamp(1, 65_536) as usize,
            attempt_timeout,
            readiness.clone(),
        )
        .map_err(|e| HttpError::Client {
            step: name(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        let transport = Arc::new(transport);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-http")
            .enable_all()
            .build()
            .map_err(|e| HttpError::Client {
                step: name(),
                reason: format!("cannot start the HTTP runtime: {e}"),
            })?;
        let batched = step.batch_max_keys > 0;
        let (mode, method) = if batched {
            if template.has_placeholders() {
                return Err(HttpError::BatchedPlaceholder {
                    step: name(),
                    url: step.url.clone(),
                });
            }
            let spec = batch::Spec {
                url: sample,
                max_keys: step.batch_max_keys.min(1 << 20) as usize,
                max_wait: Duration::from_millis(step.batch_max_ms),
                attempt_timeout,
                result: result.clone(),
            };
            let b = Batcher::start(&runtime, transport.clone(), spec);
            (Mode::Batched(b), "POST")
        } else {
            match step.method {
                HttpMethod::Get => (Mode::Get(template), "GET"),
                HttpMethod::Post => (Mode::Post(template), "POST"),
            }
        };
        runtime.spawn(ready::probe(readiness.clone(), host, port));
        let cache = (step.cache.max_entries > 0).then(|| {
            Arc::new(Mutex::new(ResultCache::new(
                step.cache.max_entries.min(usize::MAX as u64) as usize,
                Duration::from_millis(step.cache.ttl_ms),
                Duration::from_millis(step.cache.miss_ttl_ms),
            )))
        });
        let describe = if batched {
            format!(
                "http {method} {} (batches of up to {} keys)",
                step.url, step.batch_max_keys
            )
        } else {
            format!("http {method} {}", step.url)
        };
        Ok(HttpLookup {
            runtime: Some(runtime),
            inner: Arc::new(Inner {
                transport,
                mode,
                result,
                attempt_timeout,
            }),
            binds,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            cache,
            coalesced: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            readiness,
            describe,
        })
    }
}

/// The step's `headers` as a header map.
fn headers(step: &str, s: &Step) -> Result<HeaderMap, HttpError> {
    let mut map = HeaderMap::new();
    for (name, value) in &s.headers {
        let fail = |reason: String| HttpError::Header {
            step: step.to_string(),
            name: name.clone(),
            reason,
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let v = HeaderValue::from_str(value).map_err(|e| fail(e.to_string()))?;
        map.insert(n, v);
    }
    Ok(map)
}

/// The extra root certificates of `ca_file` (none when it is empty).
fn roots(step: &str, ca_file: &str) -> Result<Vec<reqwest::Certificate>, HttpError> {
    if ca_file.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |reason: String| HttpError::CaFile {
        step: step.to_string(),
        reason,
    };
    let pem = std::fs::read(ca_file).map_err(|e| fail(format!("cannot read `{ca_file}`: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("`{ca_file}` is not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail(format!("`{ca_file}` holds no certificate")));
    }
    Ok(certs)
}

impl Lookup for HttpLookup {
    fn start(&self, req: &LookupRequest<'_>) -> Pending {
        let bound = match Bound::read(&self.binds, req.record) {
            Ok(b) => b,
            Err(e) => return Pending::Ready(Err(LookupError::Fatal(e.to_string()))),
        };
        let key = bound.key();
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.lock().get(&key, Instant::now()) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Pending::Ready(Ok(hit));
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let Some(runtime) = &self.runtime else {
            return Pending::Ready(Err(LookupError::Retryable(
                "the http lookup is shutting down".to_string(),
            )));
        };
        let mut flights = self.in_flight.lock();
        if let Some(f) = flights.get(&key) {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return Pending::Later(Box::pin(f.clone()));
        }
        let (inner, in_flight, cache) = (
            self.inner.clone(),
            self.in_flight.clone(),
            self.cache.clone(),
        );
        let k = key.clone();
        // The request runs as a task of its own: it ends (and leaves the map) even when
        // every waiter has gone, and a result is cached before the flight leaves the map.
        let task = runtime.spawn(async move {
            let result = inner.lookup(bound).await;
            if let (Some(c), Ok(found)) = (&cache, &result) {
                c.lock().put(k.clone(), found.clone(), Instant::now());
            }
            in_flight.lock().remove(&k);
            result
        });
        let fut: BoxFuture<LookupResult> = Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(LookupError::Retryable(format!(
                    "the http lookup task ended: {e}"
                )))
            })
        });
        let shared = fut.shared();
        flights.insert(key, shared.clone());
        Pending::Later(Box::pin(shared))
    }

    fn check(&self, record: &str) -> Result<(), (String, String)> {
        Bound::read(&self.binds, record)
            .map(|_| ())
            .map_err(|e| (e.pointer, e.message))
    }

    fn is_ready(&self) -> bool {
        self.readiness.is_up()
    }

    fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    fn cache_stats(&self) -> (u64, u64) {
        (
            self.cache_hits.load(Ordering::Relaxed),
            self.cache_misses.load(Ordering::Relaxed),
        )
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

impl Drop for HttpLookup {
    /// The last user may be an actor thread inside a runtime, where dropping a runtime
    /// blocks and panics: shut this one down in the background instead.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
