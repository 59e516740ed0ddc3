//! The lookup seam: one trait every backend implements (embedded table now, CQL next).
//!
//! A lookup either answers at once (`Pending::Ready`, the embedded table without delay:
//! no future, no allocation, no timer) or later (`Pending::Later`, any real I/O). Errors
//! say whether retrying can help, so the retry policy stays backend-agnostic.

pub mod cache;
pub mod cql;
pub mod delay;
pub mod factory;
pub mod http;
pub mod memory;

use std::future::Future;
use std::pin::Pin;

/// A looked-up row: the JSON text of an object (column name → value), shared so a cached
/// or coalesced row is merged into many records without copying.
pub type Row = std::sync::Arc<str>;

/// A `Send` boxed future, the shape every asynchronous lookup takes.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What an attempt yields: a row, no row, or an error.
pub type LookupResult = Result<Option<Row>, LookupError>;

/// Why a lookup attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// Transient (timeouts, overload, unavailable, broken connection): worth retrying.
    #[error("retryable lookup error: {0}")]
    Retryable(String),
    /// Transient, and the backend named the least wait before the next attempt (an HTTP
    /// `Retry-After`): the retry waits at least that long.
    #[error("retryable lookup error: {0}")]
    RetryAfter(String, std::time::Duration),
    /// Permanent (bad query, bad bind, unauthorized): retrying gives the same answer.
    #[error("lookup error: {0}")]
    Fatal(String),
    /// The attempt ran out of time (the backend bounds attempts itself); handled like the
    /// engine's own per-attempt timeout (`retry.on = ["timeout"]`).
    #[error("lookup attempt timed out: {0}")]
    Timeout(String),
}

impl LookupError {
    /// Whether the retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LookupError::Retryable(_) | LookupError::RetryAfter(..)
        )
    }

    /// The least wait the backend asked for before the next attempt.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            LookupError::RetryAfter(_, wait) => Some(*wait),
            _ => None,
        }
    }
}

/// One attempt's input: the canonical key, the whole record (for binds and simulation
/// fields) and which attempt this is (1-based).
pub struct LookupRequest<'a> {
    pub key: &'a str,
    /// The record's JSON text.
    pub record: &'a str,
    pub attempt: u32,
}

/// An attempt that finished synchronously or will finish later.
pub enum Pending {
    Ready(LookupResult),
    Later(BoxFuture<LookupResult>),
}

/// A lookup backend. Implementations must be cheap to call from many partition actors at
/// once (`Send + Sync`, shared by `Arc`) and must not block the calling thread.
pub trait Lookup: Send + Sync + 'static {
    /// Start one attempt.
    fn start(&self, req: &LookupRequest<'_>) -> Pending;

    /// Start several attempts; backends that can batch (e.g. one round trip) override this.
    fn start_batch(&self, reqs: &[LookupRequest<'_>]) -> Vec<Pending> {
        reqs.iter().map(|r| self.start(r)).collect()
    }

    /// Whether a record's values can be used by this backend at all (e.g. CQL binds):
    /// `Err((pointer, message))` makes ingest refuse the record with 422.
    fn check(&self, _record: &str) -> Result<(), (String, String)> {
        Ok(())
    }

    /// Whether the backend can serve lookups now (feeds `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Lookups so far that shared another record's in-flight request.
    fn coalesced(&self) -> u64 {
        0
    }

    /// Result-cache hits and misses so far.
    fn cache_stats(&self) -> (u64, u64) {
        (0, 0)
    }

    /// A short description for logs and `/v1/status`.
    fn describe(&self) -> String;
}
