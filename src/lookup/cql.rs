//! `lookup.backend = "cql"`: lookups against ScyllaDB / Apache Cassandra with the real
//! `scylla` driver — one session ([`CqlSession`], shared by a pipeline's cql steps), each
//! statement prepared once, many requests in flight, token awareness left on.
//!
//! Binds are JSON pointers mapped to the prepared statement's column types; a record whose
//! values cannot bind is refused at ingest (422) by [`CqlLookup::check`]. The first result
//! row becomes a JSON object (column name → value); no row is a miss. Records whose bind
//! values are already in flight wait on the same request (coalescing).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Shared;
use parking_lot::Mutex;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};
use serde_json::{Map, Value};

use super::{BoxFuture, Lookup, LookupError, LookupRequest, LookupResult, Pending, Row};
use crate::cql::session::{ConnectError, DriverError, classify, connect_session_as, consistency};
use crate::cql::values::{BindType, to_json};
use crate::json::raw;
use crate::pointer::Pointer;
use crate::settings::CqlLookup as CqlSettings;

/// Why the backend could not start. `section` names where the statement is configured:
/// `lookup.cql`, or `lookup.steps.NAME` for a pipeline's step.
#[derive(Debug, thiserror::Error)]
pub enum CqlError {
    #[error("lookup.cql: {0}")]
    Connect(#[from] ConnectError),
    #[error("{section}.query: cannot prepare `{query}`: {message}")]
    Prepare {
        section: String,
        query: String,
        message: String,
    },
    #[error("{section}.binds: {message}")]
    Binds { section: String, message: String },
    #[error("lookup.cql: {0}")]
    Config(String),
}

type Flight = Shared<BoxFuture<LookupResult>>;

/// The driver's runtime (two threads of its own), so CQL I/O never competes with the
/// partition threads' event loops. The last holder may be an actor thread inside a
/// runtime, where dropping a runtime blocks and panics: it is shut down in the background.
struct DriverRuntime(Option<tokio::runtime::Runtime>);

impl DriverRuntime {
    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, CqlError> {
        match &self.0 {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err(CqlError::Config("the driver runtime is gone".into())),
        }
    }
}

impl Drop for DriverRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One connection to the cluster of `[lookup.cql]`, shared by every statement prepared on
/// it (the cql steps of a pipeline: one session, a prepared statement per step).
#[derive(Clone)]
pub struct CqlSession {
    // Declared first: the last holder shuts the runtime down before the session goes.
    runtime: Arc<DriverRuntime>,
    session: Arc<Session>,
    contact_points: Vec<String>,
    consistency: scylla::statement::Consistency,
}

impl CqlSession {
    /// Connect to `s.contact_points` (keyspace, credentials, consistency of `s`; its
    /// `query` and `binds` are not used) on a runtime of its own.
    pub fn connect_blocking(s: &CqlSettings) -> Result<CqlSession, CqlError> {
        let consistency =
            consistency(&s.consistency).map_err(|e| CqlError::Config(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-cql")
            .enable_all()
            .build()
            .map_err(|e| CqlError::Config(format!("cannot start the driver runtime: {e}")))?;
        let runtime = Arc::new(DriverRuntime(Some(runtime)));
        let session = runtime.block_on(connect_session_as(
            &s.contact_points,
            &s.keyspace,
            &s.username,
            &s.password,
        ))??;
        Ok(CqlSession {
            runtime,
            session: Arc::new(session),
            contact_points: s.contact_points.clone(),
            consistency,
        })
    }

    /// Whether `a` and `b` are one session (the same connections).
    pub fn same(a: &CqlSession, b: &CqlSession) -> bool {
        Arc::ptr_eq(&a.session, &b.session)
    }
}

/// The CQL lookup backend: one prepared statement on a (possibly shared) session.
pub struct CqlLookup {
    shared: CqlSession,
    prepared: PreparedStatement,
    binds: Vec<(Pointer, BindType)>,
    in_flight: Arc<Mutex<HashMap<Vec<u8>, Flight>>>,
    coalesced: AtomicU64,
    attempt_timeout: Duration,
    cache: Option<Arc<Mutex<super::cache::ResultCache>>>,
    cache_hits: AtomicU64,
    cache_misses: Arc<AtomicU64>,
    describe: String,
}

impl CqlLookup {
    /// Keep up to `max_entries` results: rows for `ttl`, misses for `miss_ttl` (0 entries =
    /// no cache).
    pub fn with_cache(mut self, max_entries: u64, ttl: Duration, miss_ttl: Duration) -> Self {
        if max_entries > 0 {
            self.cache = Some(Arc::new(Mutex::new(super::cache::ResultCache::new(
                max_entries as usize,
                ttl,
                miss_ttl,
            ))));
        }
        self
    }

    /// The single-lookup form: connect a session of its own from `s` and prepare its query.
    pub fn connect_blocking(
        s: &CqlSettings,
        attempt_timeout: Duration,
    ) -> Result<CqlLookup, CqlError> {
        let session = CqlSession::connect_blocking(s)?;
        Self::prepare(&session, "lookup.cql", &s.query, &s.binds, attempt_timeout)
    }

    /// Prepare `query` on `session` and map each bind pointer to its column type; errors
    /// name `section` (where the statement is configured).
    pub fn prepare(
        session: &CqlSession,
        section: &str,
        query: &str,
        binds: &[String],
        attempt_timeout: Duration,
    ) -> Result<CqlLookup, CqlError> {
        let shared = session.clone();
        let mut prepared = shared
            .runtime
            .block_on(shared.session.prepare(query))?
            .map_err(|e| CqlError::Prepare {
                section: section.to_string(),
                query: query.to_string(),
                message: e.to_string(),
            })?;
        prepared.set_consistency(shared.consistency);
        // The engine bounds each attempt itself (`attempt_timeout_ms`); the driver's own
        // timeout is a backstop behind it, so a slow attempt reads as a timeout.
        prepared.set_request_timeout(Some(attempt_timeout * 2));
        prepared.set_is_idempotent(true);
        let bad = |message: String| CqlError::Binds {
            section: section.to_string(),
            message,
        };
        let specs = prepared.get_variable_col_specs();
        if specs.len() != binds.len() {
            return Err(bad(format!(
                "the query has {} bind marker(s) but {} pointer(s) are configured",
                specs.len(),
                binds.len()
            )));
        }
        let mut typed = Vec::new();
        for (p, spec) in binds.iter().zip(specs.iter()) {
            let pointer = Pointer::parse(p).map_err(|e| bad(e.to_string()))?;
            let ty = BindType::from_column(spec.typ()).ok_or_else(|| {
                bad(format!(
                    "column `{}` has a type sluice cannot bind",
                    spec.name()
                ))
            })?;
            typed.push((pointer, ty));
        }
        let describe = format!("cql {:?} `{query}`", shared.contact_points);
        Ok(CqlLookup {
            shared,
            prepared,
            binds: typed,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            coalesced: AtomicU64::new(0),
            attempt_timeout,
            cache: None,
            cache_hits: AtomicU64::new(0),
            cache_misses: Arc::new(AtomicU64::new(0)),
            describe,
        })
    }

    /// The session this statement runs on.
    pub fn session(&self) -> &CqlSession {
        &self.shared
    }

    fn values(&self, record: &str) -> Result<Vec<CqlValue>, (String, String)> {
        self.binds
            .iter()
            .map(|(p, ty)| {
                let text = raw::get(record, p.tokens()).ok_or_else(|| {
                    (
                        p.as_str().to_string(),
                        format!("missing; the query binds it as CQL {}", ty.name()),
                    )
                })?;
                let v: Value = serde_json::from_str(text)
                    .map_err(|e| (p.as_str().to_string(), e.to_string()))?;
                ty.bind(&v)
                    .map_err(|e| (p.as_str().to_string(), e.to_string()))
            })
            .collect()
    }
}

fn row_to_json(names: &[String], row: CqlRow) -> Row {
    let mut m = Map::new();
    for (name, cell) in names.iter().zip(row.columns) {
        m.insert(name.clone(), cell.as_ref().map_or(Value::Null, to_json));
    }
    Row::from(Value::Object(m).to_string())
}

impl Lookup for CqlLookup {
    fn start(&self, req: &LookupRequest<'_>) -> Pending {
        let values = match self.values(req.record) {
            Ok(v) => v,
            Err((p, m)) => return Pending::Ready(Err(LookupError::Fatal(format!("{p}: {m}")))),
        };
        let key = crate::cql::values::key_bytes(values.iter().map(Some));
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.lock().get(&key, std::time::Instant::now()) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Pending::Ready(Ok(hit));
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let mut flights = self.in_flight.lock();
        if let Some(f) = flights.get(&key) {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            return Pending::Later(Box::pin(f.clone()));
        }
        let (session, prepared) = (self.shared.session.clone(), self.prepared.clone());
        let limit = self.attempt_timeout;
        let in_flight = self.in_flight.clone();
        let cache = self.cache.clone();
        let k = key.clone();
        let fut: BoxFuture<LookupResult> = Box::pin(async move {
            // Bounded here too, so a flight that outlives its waiters' attempt timeout
            // ends and leaves the map instead of being joined by later attempts.
            let result =
                tokio::time::timeout(limit, session.execute_unpaged(&prepared, values)).await;
            in_flight.lock().remove(&k);
            let Ok(result) = result else {
                return Err(LookupError::Timeout(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )));
            };
            let result = result.map_err(|e| lookup_error(classify(e.to_string())))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| LookupError::Fatal(format!("the query returns no rows: {e}")))?;
            let names: Vec<String> = rows
                .column_specs()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let mut iter = rows
                .rows::<CqlRow>()
                .map_err(|e| LookupError::Fatal(format!("cannot read the row: {e}")))?;
            let found = match iter.next() {
                None => None,
                Some(Ok(row)) => Some(row_to_json(&names, row)),
                Some(Err(e)) => {
                    return Err(LookupError::Fatal(format!("cannot read the row: {e}")));
                }
            };
            if let Some(c) = cache {
                c.lock().put(k, found.clone(), std::time::Instant::now());
            }
            Ok(found)
        });
        let shared = fut.shared();
        flights.insert(key, shared.clone());
        Pending::Later(Box::pin(shared))
    }

    fn check(&self, record: &str) -> Result<(), (String, String)> {
        self.values(record).map(|_| ())
    }

    fn is_ready(&self) -> bool {
        // Any node with an open connection pool, as the driver sees it right now.
        self.shared
            .session
            .get_cluster_state()
            .get_nodes_info()
            .iter()
            .any(|n| n.is_connected())
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

/// A driver error as the retry policy sees it.
fn lookup_error(e: DriverError) -> LookupError {
    match e {
        DriverError::Retryable(m) => LookupError::Retryable(m),
        DriverError::Fatal(m) => LookupError::Fatal(m),
        DriverError::Timeout(m) => LookupError::Timeout(m),
    }
}
