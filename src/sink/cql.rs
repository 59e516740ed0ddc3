//! `output.kind = "cql"` (and `dead_letter.kind`): each envelope becomes one prepared
//! INSERT. INSERT is an upsert keyed by the table's primary key, so an envelope emitted
//! again after a crash overwrites itself: with the default mapping (keyed by `id`) the table
//! holds each record once.
//!
//! The sink owns a runtime and session of its own; at most `concurrency` INSERTs are in
//! flight and `write` blocks the emitter beyond that — records then stay counted against
//! their partition, so a slow or failing cluster turns into 429s, not memory growth.
//! Retryable errors are retried with capped backoff until they succeed; `write` returns
//! once every INSERT of its batch succeeded, so "emitted" means "in the table" and a
//! commit never covers an unwritten envelope.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde_json::Value;

use super::{Sink, SinkError};
use crate::cql::session::{classify, connect_session, consistency};
use crate::cql::values::BindType;
use crate::json::raw;
use crate::lookup::LookupError;
use crate::pointer::Pointer;
use crate::settings::CqlSinkSettings;

/// One column's source: a pointer into the envelope (None = the whole envelope).
struct Column {
    pointer: Option<Pointer>,
    ty: BindType,
}

/// Counts INSERTs in flight; the emitter's thread blocks on it (it runs inside an actix
/// arbiter, where blocking on a tokio runtime is not allowed).
#[derive(Default)]
struct Gate {
    in_flight: std::sync::Mutex<u32>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, u32> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, limit: u32) {
        let mut n = self.lock();
        while *n >= limit {
            n = self.changed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
    }

    fn leave(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        self.changed.notify_all();
    }

    fn wait_idle(&self) {
        let mut n = self.lock();
        while *n > 0 {
            n = self.changed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// See module docs.
pub struct CqlSink {
    runtime: Option<Arc<tokio::runtime::Runtime>>,
    session: Arc<Session>,
    insert: PreparedStatement,
    columns: Vec<Column>,
    gate: Arc<Gate>,
    concurrency: u32,
    dropped: Arc<AtomicU64>,
    reported: u64,
    describe: String,
}

fn err(describe: &str, message: String) -> SinkError {
    SinkError::Io {
        sink: describe.to_string(),
        source: std::io::Error::other(message),
    }
}

impl CqlSink {
    /// Connect, prepare the INSERT and map each column to its pointer and type.
    pub fn open(s: &CqlSinkSettings) -> Result<CqlSink, SinkError> {
        let describe = format!("cql sink {}.{}", s.keyspace, s.table);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-cql-sink")
            .enable_all()
            .build()
            .map_err(|e| err(&describe, e.to_string()))?;
        let query = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            s.table,
            s.columns.join(", "),
            vec!["?"; s.columns.len()].join(", ")
        );
        let (session, mut insert) = runtime
            .block_on(async {
                let session = connect_session(&s.contact_points, &s.keyspace).await?;
                let insert = session
                    .prepare(query.as_str())
                    .await
                    .map_err(|e| format!("cannot prepare `{query}`: {e}"))?;
                Ok::<_, String>((session, insert))
            })
            .map_err(|e| err(&describe, e))?;
        insert.set_consistency(consistency(&s.consistency).map_err(|e| err(&describe, e))?);
        insert.set_is_idempotent(true);
        let specs = insert.get_variable_col_specs();
        let mut columns = Vec::new();
        for (v, spec) in s.values.iter().zip(specs.iter()) {
            let ty = BindType::from_column(spec.typ()).ok_or_else(|| {
                err(
                    &describe,
                    format!("column `{}` has a type the sink cannot write", spec.name()),
                )
            })?;
            let pointer = if v.is_empty() {
                None
            } else {
                Some(Pointer::parse(v).map_err(|e| err(&describe, e.to_string()))?)
            };
            columns.push(Column { pointer, ty });
        }
        let concurrency = s.concurrency.clamp(1, 4096) as u32;
        Ok(CqlSink {
            runtime: Some(Arc::new(runtime)),
            session: Arc::new(session),
            insert,
            columns,
            gate: Arc::new(Gate::default()),
            concurrency,
            dropped: Arc::new(AtomicU64::new(0)),
            reported: 0,
            describe,
        })
    }

    fn values(&self, envelope: &str) -> Vec<Option<CqlValue>> {
        self.columns
            .iter()
            .map(|c| {
                let text = match &c.pointer {
                    None => envelope,
                    Some(p) => raw::get(envelope, p.tokens())?,
                };
                let v: Value = serde_json::from_str(text).ok()?;
                match (&v, c.ty) {
                    // Objects and arrays go into text columns as JSON.
                    (Value::Object(_) | Value::Array(_), BindType::Text) => {
                        Some(CqlValue::Text(text.trim().to_string()))
                    }
                    _ => c.ty.bind(&v).ok(),
                }
            })
            .collect()
    }
}

impl Sink for CqlSink {
    fn write(&mut self, lines: &[u8]) -> Result<(), SinkError> {
        let text = std::str::from_utf8(lines).map_err(|e| err(&self.describe, e.to_string()))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let values = self.values(line);
            self.gate.enter(self.concurrency);
            let (session, insert, dropped, gate) = (
                self.session.clone(),
                self.insert.clone(),
                self.dropped.clone(),
                self.gate.clone(),
            );
            let describe = self.describe.clone();
            let Some(runtime) = &self.runtime else {
                return Err(err(&self.describe, "the sink is closed".into()));
            };
            runtime.spawn(async move {
                let mut backoff = Duration::from_millis(10);
                loop {
                    match session.execute_unpaged(&insert, &values).await {
                        Ok(_) => break,
                        Err(e) => match classify(e.to_string()) {
                            LookupError::Fatal(m) => {
                                tracing::error!(sink = %describe, error = %m, "envelope rejected by the cluster");
                                dropped.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            _ => {
                                tracing::warn!(sink = %describe, error = %e, "insert failed; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(1));
                            }
                        },
                    }
                }
                gate.leave();
            });
        }
        // A batch counts as emitted once every INSERT of it succeeded.
        self.gate.wait_idle();
        self.take_dropped()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.gate.wait_idle();
        self.take_dropped()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

impl CqlSink {
    /// Envelopes the cluster rejected for good (a mapping that does not fit the table) are
    /// logged, not retried forever: a failing batch would otherwise block every later one.
    fn take_dropped(&mut self) -> Result<(), SinkError> {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported {
            tracing::error!(
                sink = %self.describe,
                rejected = dropped - self.reported,
                total = dropped,
                "envelopes rejected by the cluster; check output.cql.columns/values"
            );
            self.reported = dropped;
        }
        Ok(())
    }
}

impl Drop for CqlSink {
    /// The last user may be an actor thread inside a runtime, where dropping a runtime
    /// blocks and panics: shut the driver's runtime down in the background instead.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take().and_then(|rt| Arc::try_unwrap(rt).ok()) {
            rt.shutdown_background();
        }
    }
}
