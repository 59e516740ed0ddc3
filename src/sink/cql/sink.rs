//! The CQL sink. It owns a runtime and session of its own; each batch becomes one task
//! whose INSERTs run at most `concurrency` at a time. Retryable errors (timeouts included:
//! an INSERT is an upsert) are retried with capped backoff until they succeed, with the
//! sink reported unhealthy meanwhile; an error the cluster answers for good (no such table,
//! a value of the wrong type) and a value that cannot be bound to its column reject that
//! envelope, which the emitter sends to the dead letter with the reason. A batch is
//! reported once every INSERT of it finished, so "emitted" means "in the table".

use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use serde_json::Value;

use super::config::CqlSinkSettings;
use crate::cql::session::{ConnectError, DriverError, classify, connect_session, consistency};
use crate::cql::values::{BindError, BindType};
use crate::json::raw;
use crate::pointer::Pointer;
use crate::sink::board::Board;
use crate::sink::{Attach, Completion, Envelopes, Guarantee, Refusal, Sink, SinkError};

/// One column's source: a pointer into the envelope (None = the whole envelope).
struct Column {
    name: String,
    pointer: Option<Pointer>,
    ty: BindType,
}

/// Why the session or the INSERT could not be set up (the sink's setup error).
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot prepare `{query}`: {source}")]
    Prepare {
        query: String,
        #[source]
        source: PrepareError,
    },
}

/// Why an envelope is not written: the emitter sends it to the dead letter with this text.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("{0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("column `{column}`: {source}")]
    NotJson {
        column: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("column `{column}`: {source}")]
    Unbindable {
        column: String,
        #[source]
        source: BindError,
    },
    /// The cluster refused the INSERT for good (syntax, no such table, a wrong type).
    #[error("{describe}: {message}")]
    Refused { describe: String, message: String },
    /// The sink closed while the INSERT waited for its turn.
    #[error("{0}")]
    Closed(#[from] tokio::sync::AcquireError),
}

/// Bound values of one envelope, or why they cannot be bound.
type Bound = Result<Vec<Option<CqlValue>>, Rejection>;

/// What became of a batch, from the result of each of its INSERTs.
fn completions(batch: Envelopes, results: &[Result<(), Rejection>]) -> Vec<Completion> {
    if results.iter().all(|r| r.is_ok()) {
        return vec![Completion::Delivered(batch)];
    }
    let mut done = vec![Completion::Delivered(batch.select(|i| results[i].is_ok()))];
    for (i, r) in results.iter().enumerate() {
        if let Err(reason) = r {
            done.push(Completion::Rejected(
                batch.select(|j| j == i),
                reason.to_string(),
            ));
        }
    }
    done
}

/// See module docs.
pub struct CqlSink {
    runtime: Option<tokio::runtime::Runtime>,
    session: Arc<Session>,
    insert: PreparedStatement,
    columns: Vec<Column>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Envelopes taken and not yet reported, at most (beyond: `Busy`).
    max_in_flight: usize,
    board: Arc<Board>,
    describe: String,
}

fn setup(describe: &str, message: impl Into<String>) -> SinkError {
    SinkError::setup(describe, message)
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
            .map_err(|e| setup(&describe, e.to_string()))?;
        let query = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            s.table,
            s.columns.join(", "),
            vec!["?"; s.columns.len()].join(", ")
        );
        let (session, mut insert) =
            runtime
                .block_on(async {
                    let session = connect_session(&s.contact_points, &s.keyspace).await?;
                    let insert = session.prepare(query.as_str()).await.map_err(|source| {
                        OpenError::Prepare {
                            query: query.clone(),
                            source,
                        }
                    })?;
                    Ok::<_, OpenError>((session, insert))
                })
                .map_err(|e| setup(&describe, e.to_string()))?;
        insert.set_consistency(
            consistency(&s.consistency).map_err(|e| setup(&describe, e.to_string()))?,
        );
        insert.set_is_idempotent(true);
        let specs = insert.get_variable_col_specs();
        let mut columns = Vec::new();
        for (v, spec) in s.values.iter().zip(specs.iter()) {
            let ty = BindType::from_column(spec.typ()).ok_or_else(|| {
                setup(
                    &describe,
                    format!("column `{}` has a type the sink cannot write", spec.name()),
                )
            })?;
            let pointer = if v.is_empty() {
                None
            } else {
                Some(Pointer::parse(v).map_err(|e| setup(&describe, e.to_string()))?)
            };
            columns.push(Column {
                name: spec.name().to_string(),
                pointer,
                ty,
            });
        }
        let concurrency = s.concurrency.clamp(1, 4096) as usize;
        Ok(CqlSink {
            runtime: Some(runtime),
            session: Arc::new(session),
            insert,
            columns,
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            max_in_flight: (concurrency * 4).max(256),
            board: Arc::new(Board::default()),
            describe,
        })
    }

    /// The envelope's values, one per column. An absent member binds NULL; a member whose
    /// value does not fit its column is an error, never a silent NULL.
    fn values(&self, envelope: &[u8]) -> Bound {
        let envelope = std::str::from_utf8(envelope)?;
        let mut out = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let text = match &c.pointer {
                None => envelope,
                Some(p) => match raw::get(envelope, p.tokens()) {
                    Some(t) => t,
                    None => {
                        out.push(None);
                        continue;
                    }
                },
            };
            let v: Value = serde_json::from_str(text).map_err(|source| Rejection::NotJson {
                column: c.name.clone(),
                source,
            })?;
            out.push(match (&v, c.ty) {
                (Value::Null, _) => None,
                // A number into a text column keeps every digit, as written (ids).
                (Value::Number(_), BindType::Text) => Some(CqlValue::Text(text.trim().to_string())),
                // Objects and arrays go into text columns as JSON.
                (Value::Object(_) | Value::Array(_), BindType::Text) => {
                    Some(CqlValue::Text(text.trim().to_string()))
                }
                _ => Some(c.ty.bind(&v).map_err(|source| Rejection::Unbindable {
                    column: c.name.clone(),
                    source,
                })?),
            });
        }
        Ok(out)
    }
}

/// One INSERT, retried until it succeeds or the cluster refuses it for good.
async fn insert(
    session: &Session,
    statement: &PreparedStatement,
    values: Vec<Option<CqlValue>>,
    board: &Board,
    describe: &str,
) -> Result<(), Rejection> {
    let mut backoff = Duration::from_millis(10);
    loop {
        match session.execute_unpaged(statement, &values).await {
            Ok(_) => {
                if board.works() {
                    tracing::info!(sink = %describe, "inserts succeed again");
                }
                return Ok(());
            }
            Err(e) => match classify(e.to_string()) {
                DriverError::Fatal(message) => {
                    return Err(Rejection::Refused {
                        describe: describe.to_string(),
                        message,
                    });
                }
                _ => {
                    if board.failing(format!("{describe}: INSERT failed, retrying: {e}")) {
                        // Once per failing spell; each retry is a debug line.
                        tracing::warn!(sink = %describe, error = %e, "inserts fail; retrying until they succeed");
                    } else {
                        tracing::debug!(sink = %describe, error = %e, "insert failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}

impl Sink for CqlSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::AtLeastOnce
    }

    fn submit(&mut self, batch: Envelopes) -> Result<(), Refusal> {
        let in_flight = self.board.in_flight();
        if in_flight > 0 && in_flight + batch.len() > self.max_in_flight {
            return Err(Refusal::Busy(batch));
        }
        let Some(runtime) = &self.runtime else {
            let e = setup(&self.describe, "the sink is closed");
            return Err(Refusal::Failed(batch, e));
        };
        let bound: Vec<Bound> = (0..batch.len())
            .map(|i| self.values(batch.line(i)))
            .collect();
        self.board.took(batch.len());
        let (session, statement, permits, board, describe) = (
            self.session.clone(),
            self.insert.clone(),
            self.permits.clone(),
            self.board.clone(),
            self.describe.clone(),
        );
        runtime.spawn(async move {
            let inserts = bound.into_iter().map(|values| {
                let (session, statement, permits, board, describe) =
                    (&session, &statement, &permits, &board, &describe);
                async move {
                    let values = values?;
                    let _permit = permits.acquire().await?;
                    insert(session, statement, values, board, describe).await
                }
            });
            let results = futures_util::future::join_all(inserts).await;
            let n = batch.len();
            board.report(completions(batch, &results), n);
        });
        Ok(())
    }

    fn completed(&mut self, out: &mut Vec<Completion>) {
        self.board.collect(out);
    }

    fn flush(&mut self, _durable: bool) -> Result<(), SinkError> {
        // Every reported INSERT is acknowledged by the cluster at the configured
        // consistency: nothing is buffered here.
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.board.in_flight()
    }

    fn health(&self) -> Option<String> {
        self.board.health()
    }

    fn attach(&mut self, attach: Attach) {
        self.board.attach(attach);
    }
}

impl Drop for CqlSink {
    /// The last user may be an actor thread inside a runtime, where dropping a runtime
    /// blocks and panics: shut the driver's runtime down in the background instead.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
