//! `lookup.backend = "cql"`: lookups against ScyllaDB / Apache Cassandra with the real
//! `scylla` driver — one session, the configured query prepared once, many requests in
//! flight, token awareness left on.
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
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::response::result::{ColumnType, NativeType};
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue, Row as CqlRow};
use serde_json::{Map, Value};

use super::{BoxFuture, Lookup, LookupError, LookupRequest, LookupResult, Pending, Row};
use crate::engine::raw;
use crate::pointer::Pointer;
use crate::settings::CqlLookup as CqlSettings;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum CqlError {
    #[error("lookup.cql: cannot connect to {points:?}: {message}")]
    Connect {
        points: Vec<String>,
        message: String,
    },
    #[error("lookup.cql.query: cannot prepare `{query}`: {message}")]
    Prepare { query: String, message: String },
    #[error("lookup.cql: {0}")]
    Config(String),
}

/// The CQL types a JSON value can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindType {
    Text,
    Ascii,
    Int,
    BigInt,
    SmallInt,
    TinyInt,
    Boolean,
    Uuid,
    TimeUuid,
    Double,
    Float,
    Decimal,
    Timestamp,
}

impl BindType {
    /// The bind type of a prepared statement's column, if sluice can bind it.
    pub fn from_column(t: &ColumnType<'_>) -> Option<BindType> {
        let ColumnType::Native(n) = t else {
            return None;
        };
        Some(match n {
            NativeType::Text => BindType::Text,
            NativeType::Ascii => BindType::Ascii,
            NativeType::Int => BindType::Int,
            NativeType::BigInt => BindType::BigInt,
            NativeType::SmallInt => BindType::SmallInt,
            NativeType::TinyInt => BindType::TinyInt,
            NativeType::Boolean => BindType::Boolean,
            NativeType::Uuid => BindType::Uuid,
            NativeType::Timeuuid => BindType::TimeUuid,
            NativeType::Double => BindType::Double,
            NativeType::Float => BindType::Float,
            NativeType::Decimal => BindType::Decimal,
            NativeType::Timestamp => BindType::Timestamp,
            _ => return None,
        })
    }

    /// The CQL name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BindType::Text => "text",
            BindType::Ascii => "ascii",
            BindType::Int => "int",
            BindType::BigInt => "bigint",
            BindType::SmallInt => "smallint",
            BindType::TinyInt => "tinyint",
            BindType::Boolean => "boolean",
            BindType::Uuid => "uuid",
            BindType::TimeUuid => "timeuuid",
            BindType::Double => "double",
            BindType::Float => "float",
            BindType::Decimal => "decimal",
            BindType::Timestamp => "timestamp",
        }
    }

    /// Convert a JSON value, or say why it cannot be bound.
    pub fn bind(self, v: &Value) -> Result<CqlValue, String> {
        let bad = || format!("cannot bind {} as CQL {}", short(v), self.name());
        let int = |lo: i64, hi: i64| -> Result<i64, String> {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(bad)?;
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        Ok(match self {
            BindType::Text => match v {
                Value::String(s) => CqlValue::Text(s.clone()),
                Value::Number(_) | Value::Bool(_) => CqlValue::Text(v.to_string()),
                _ => return Err(bad()),
            },
            BindType::Ascii => {
                let s = v.as_str().ok_or_else(bad)?;
                if !s.is_ascii() {
                    return Err(bad());
                }
                CqlValue::Ascii(s.to_string())
            }
            BindType::Int => CqlValue::Int(int(i32::MIN.into(), i32::MAX.into())? as i32),
            BindType::BigInt => CqlValue::BigInt(int(i64::MIN, i64::MAX)?),
            BindType::SmallInt => CqlValue::SmallInt(int(i16::MIN.into(), i16::MAX.into())? as i16),
            BindType::TinyInt => CqlValue::TinyInt(int(i8::MIN.into(), i8::MAX.into())? as i8),
            BindType::Boolean => CqlValue::Boolean(v.as_bool().ok_or_else(bad)?),
            BindType::Uuid | BindType::TimeUuid => {
                let u = v
                    .as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .ok_or_else(bad)?;
                if self == BindType::Uuid {
                    CqlValue::Uuid(u)
                } else {
                    CqlValue::Timeuuid(u.into())
                }
            }
            BindType::Double => CqlValue::Double(number(v).ok_or_else(bad)?),
            BindType::Float => CqlValue::Float(number(v).ok_or_else(bad)? as f32),
            BindType::Decimal => {
                let s = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(bad()),
                };
                decimal(&s).ok_or_else(bad)?
            }
            BindType::Timestamp => {
                CqlValue::Timestamp(CqlTimestamp(timestamp_ms(v).ok_or_else(bad)?))
            }
        })
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..40])
    } else {
        s
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn decimal(s: &str) -> Option<CqlValue> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let unscaled: i128 = format!("{}{int}{frac}", if neg { "-" } else { "" })
        .parse()
        .ok()?;
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    Some(CqlValue::Decimal(
        scylla::value::CqlDecimal::from_signed_be_bytes_slice_and_exponent(
            &bytes[start..],
            frac.len() as i32,
        ),
    ))
}

/// Epoch milliseconds from a number, or from an RFC 3339 string `YYYY-MM-DDTHH:MM:SS[.fff]Z`
/// (or with a `±HH:MM` offset).
fn timestamp_ms(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &frac[digits.len()..];
        millis = format!("{digits:0<3}")[..3].parse().ok()?;
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + millis)
}

/// A CQL value as JSON.
pub fn to_json(v: &CqlValue) -> Value {
    match v {
        CqlValue::Ascii(s) | CqlValue::Text(s) => Value::String(s.clone()),
        CqlValue::Boolean(b) => Value::Bool(*b),
        CqlValue::Int(n) => (*n).into(),
        CqlValue::BigInt(n) => (*n).into(),
        CqlValue::SmallInt(n) => (*n).into(),
        CqlValue::TinyInt(n) => (*n).into(),
        CqlValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        CqlValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        CqlValue::Timestamp(t) => t.0.into(),
        CqlValue::Uuid(u) => Value::String(u.to_string()),
        CqlValue::Timeuuid(u) => Value::String(u.to_string()),
        CqlValue::Inet(ip) => Value::String(ip.to_string()),
        CqlValue::List(items) | CqlValue::Set(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        CqlValue::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            let mut n: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in bytes {
                n = (n << 8) | i128::from(*b);
            }
            let digits = n.unsigned_abs().to_string();
            let scale = scale.max(0) as usize;
            let sign = if n < 0 { "-" } else { "" };
            Value::String(if scale == 0 {
                format!("{sign}{digits}")
            } else {
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (i, f) = padded.split_at(padded.len() - scale);
                format!("{sign}{i}.{f}")
            })
        }
        other => Value::String(format!("{other:?}")),
    }
}

/// The driver's consistency level for a config name.
pub fn consistency(s: &str) -> Result<Consistency, CqlError> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        other => {
            return Err(CqlError::Config(format!(
                "consistency: unknown level `{other}`"
            )));
        }
    })
}

/// Classify a driver error: retryable (timeouts, overload, unavailable, broken connections)
/// or not (syntax, invalid, unauthorized).
pub fn classify(message: String) -> LookupError {
    let m = message.to_ascii_lowercase();
    if m.contains("client timeout") {
        return LookupError::Timeout(message);
    }
    // Transport trouble first: its messages can mention (de)serializing the frame.
    let transient = [
        "connection",
        "broken",
        "timeout",
        "overloaded",
        "unavailable",
        "pool",
        "no known",
    ];
    if transient.iter().any(|t| m.contains(t)) {
        return LookupError::Retryable(message);
    }
    let fatal = [
        "syntax",
        "invalid",
        "unauthorized",
        "bad credentials",
        "serializ",
        "unprepared",
        "already exists",
    ];
    if fatal.iter().any(|f| m.contains(f)) {
        LookupError::Fatal(message)
    } else {
        LookupError::Retryable(message)
    }
}

type Flight = Shared<BoxFuture<LookupResult>>;

/// A session to `contact_points` (schema metadata off: sluice needs none), using
/// `keyspace` when given.
pub async fn connect_session(contact_points: &[String], keyspace: &str) -> Result<Session, String> {
    connect_session_as(contact_points, keyspace, "", "").await
}

/// Like [`connect_session`], authenticating with `username`/`password` when given.
pub async fn connect_session_as(
    contact_points: &[String],
    keyspace: &str,
    username: &str,
    password: &str,
) -> Result<Session, String> {
    let mut builder = SessionBuilder::new()
        .known_nodes(contact_points)
        .fetch_schema_metadata(false)
        .fetch_full_schema_metadata(false)
        .connection_timeout(Duration::from_secs(5));
    if !keyspace.is_empty() {
        builder = builder.use_keyspace(keyspace, false);
    }
    if !username.is_empty() {
        builder = builder.user(username, password);
    }
    builder
        .build()
        .await
        .map_err(|e| format!("cannot connect to {contact_points:?}: {e}"))
}

/// The CQL lookup backend.
pub struct CqlLookup {
    /// The driver's connections live on this runtime (two threads of their own), so CQL
    /// I/O never competes with the partition threads' event loops.
    _runtime: Option<Arc<tokio::runtime::Runtime>>,
    session: Arc<Session>,
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
    /// Keep up to `max_entries` results for `ttl` (0 entries = no cache).
    pub fn with_cache(mut self, max_entries: u64, ttl: Duration) -> Self {
        if max_entries > 0 {
            self.cache = Some(Arc::new(Mutex::new(super::cache::ResultCache::new(
                max_entries as usize,
                ttl,
            ))));
        }
        self
    }

    /// Connect on a runtime of its own, prepare `query`, map binds to column types.
    pub fn connect_blocking(
        s: &CqlSettings,
        attempt_timeout: Duration,
    ) -> Result<CqlLookup, CqlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-cql")
            .enable_all()
            .build()
            .map_err(|e| CqlError::Config(format!("cannot start the driver runtime: {e}")))?;
        let runtime = Arc::new(runtime);
        let mut lookup = runtime.block_on(Self::connect(s, attempt_timeout, runtime.clone()))?;
        lookup._runtime = Some(runtime);
        Ok(lookup)
    }

    /// Connect, prepare `query`, and map each bind pointer to its column type.
    pub async fn connect(
        s: &CqlSettings,
        attempt_timeout: Duration,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Result<CqlLookup, CqlError> {
        let session = connect_session_as(&s.contact_points, &s.keyspace, &s.username, &s.password)
            .await
            .map_err(|message| CqlError::Connect {
                points: s.contact_points.clone(),
                message,
            })?;
        let mut prepared =
            session
                .prepare(s.query.as_str())
                .await
                .map_err(|e| CqlError::Prepare {
                    query: s.query.clone(),
                    message: e.to_string(),
                })?;
        prepared.set_consistency(consistency(&s.consistency)?);
        // The engine bounds each attempt itself (`lookup.attempt_timeout_ms`); the driver's
        // own timeout is a backstop behind it, so a slow attempt reads as a timeout.
        prepared.set_request_timeout(Some(attempt_timeout * 2));
        prepared.set_is_idempotent(true);
        let specs = prepared.get_variable_col_specs();
        if specs.len() != s.binds.len() {
            return Err(CqlError::Config(format!(
                "binds: the query has {} bind marker(s) but {} pointer(s) are configured",
                specs.len(),
                s.binds.len()
            )));
        }
        let mut binds = Vec::new();
        for (p, spec) in s.binds.iter().zip(specs.iter()) {
            let pointer = Pointer::parse(p).map_err(|e| CqlError::Config(format!("binds: {e}")))?;
            let ty = BindType::from_column(spec.typ()).ok_or_else(|| {
                CqlError::Config(format!(
                    "binds: column `{}` has a type sluice cannot bind",
                    spec.name()
                ))
            })?;
            binds.push((pointer, ty));
        }
        Ok(CqlLookup {
            _runtime: Some(runtime),
            session: Arc::new(session),
            prepared,
            binds,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            coalesced: AtomicU64::new(0),
            attempt_timeout,
            cache: None,
            cache_hits: AtomicU64::new(0),
            cache_misses: Arc::new(AtomicU64::new(0)),
            describe: format!("cql {:?} `{}`", s.contact_points, s.query),
        })
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
                ty.bind(&v).map_err(|m| (p.as_str().to_string(), m))
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
        let key = format!("{values:?}").into_bytes();
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
        let (session, prepared) = (self.session.clone(), self.prepared.clone());
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
            let result = result.map_err(|e| classify(e.to_string()))?;
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
        self.session
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

impl Drop for CqlLookup {
    /// The last user may be an actor thread inside a runtime, where dropping a runtime
    /// blocks and panics: shut the driver's runtime down in the background instead.
    fn drop(&mut self) {
        if let Some(rt) = self._runtime.take().and_then(|rt| Arc::try_unwrap(rt).ok()) {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binds_convert_or_explain() {
        assert_eq!(BindType::Int.bind(&json!(7)), Ok(CqlValue::Int(7)));
        assert!(
            BindType::Int
                .bind(&json!(1u64 << 40))
                .unwrap_err()
                .contains("CQL int")
        );
        assert_eq!(
            BindType::TinyInt.bind(&json!("12")),
            Ok(CqlValue::TinyInt(12))
        );
        assert!(BindType::Boolean.bind(&json!("yes")).is_err());
        assert_eq!(
            BindType::Text.bind(&json!(5)),
            Ok(CqlValue::Text("5".into()))
        );
        assert!(BindType::Uuid.bind(&json!("nope")).is_err());
        assert!(
            BindType::Uuid
                .bind(&json!("5fc5a6f0-96f1-4a6e-9a4c-3f1f3f0b0c01"))
                .is_ok()
        );
        assert_eq!(
            BindType::Timestamp.bind(&json!("2026-11-22T10:00:00.5Z")),
            Ok(CqlValue::Timestamp(CqlTimestamp(1_795_341_600_500)))
        );
        assert_eq!(
            BindType::Timestamp.bind(&json!(42)),
            Ok(CqlValue::Timestamp(CqlTimestamp(42)))
        );
        let d = BindType::Decimal.bind(&json!("-12.50")).unwrap();
        assert_eq!(to_json(&d), json!("-12.50"));
        assert!(BindType::Decimal.bind(&json!("1e5")).is_err());
    }

    #[test]
    fn errors_are_classified() {
        assert!(
            classify("Database returned an error: Not enough nodes are alive (Unavailable)".into())
                .is_retryable()
        );
        assert!(classify("Read timeout".into()).is_retryable());
        assert!(
            classify(
                "Connection broken, reason: Failed to deserialize frame: Failed to read the frame header: early eof"
                    .into()
            )
            .is_retryable()
        );
        assert!(matches!(
            classify("Request execution exceeded a client timeout of 200ms".into()),
            LookupError::Timeout(_)
        ));
        assert!(!classify("The submitted query has a syntax error".into()).is_retryable());
        assert!(!classify("The query is syntactically correct but invalid".into()).is_retryable());
    }
}
