//! A CQL test node: speaks native protocol v4 well enough for the `scylla` driver — the
//! handshake, `system.local`/`system.peers` (one node owning the whole ring), `USE`,
//! PREPARE/EXECUTE/QUERY/BATCH of single-table `SELECT … WHERE key = ?` and
//! `INSERT … VALUES (?, …)` — over in-memory tables loaded from JSONL, with fault injection
//! (latency, errors by kind, dropped connections, stop and restart on the same port).
//!
//! It is test infrastructure, not a database: anything else is answered with a syntax
//! error naming the statement.

pub mod table;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::Rng;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use table::{Statement, Table};
use wire::{Body, ColSpec, ColType, ErrorKind, opcode};

/// Faults applied to requests on user tables (system tables always answer).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Uniform extra latency per request, [min, max] ms.
    pub latency_ms: (u64, u64),
    /// Probability that a request gets an error of `error_kind`.
    pub error_ratio: f64,
    pub error_kind: Option<ErrorKind>,
    /// Probability that a request's connection is dropped instead of answered.
    pub drop_ratio: f64,
}

/// Counters tests and benchmarks read.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted (a driver session opens a control connection and a pool).
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// SELECTs of the tables served (the driver's queries of `system.*` not counted).
    pub selects: AtomicU64,
    pub inserts: AtomicU64,
    pub errors_injected: AtomicU64,
    pub dropped: AtomicU64,
}

/// Serialized cells of one row or one statement's bound values (`None` = null).
type Cells = Vec<Option<Vec<u8>>>;

struct Prepared {
    statement: Statement,
}

struct State {
    tables: RwLock<HashMap<String, Table>>,
    prepared: RwLock<HashMap<Vec<u8>, Prepared>>,
    faults: RwLock<Faults>,
    stats: Stats,
}

/// A running node (in-process); dropping it stops it.
pub struct Node {
    state: Arc<State>,
    addr: SocketAddr,
    /// The listener and every connection: `stop` aborts them all.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn system_tables() -> Vec<Table> {
    let mut local = Table::from_schema(
        "system.local(key text PRIMARY KEY, host_id uuid, rpc_address inet, data_center text, \
         rack text, tokens set<text>, cluster_name text, schema_version uuid, \
         release_version text, partitioner text)",
    )
    .expect("static schema");
    local
        .load_jsonl(
            &json!({
                "key": "local", "host_id": "5fc5a6f0-96f1-4a6e-9a4c-3f1f3f0b0c01",
                "rpc_address": "127.0.0.1", "data_center": "datacenter1", "rack": "rack1",
                "tokens": ["0"], "cluster_name": "sluice-test-node",
                "schema_version": "0b6d1a8e-3c1a-4a8e-8d31-6f7b1b8f0e02",
                "release_version": "4.0.0", "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner"
            })
            .to_string(),
        )
        .expect("static row");
    let peers = Table::from_schema(
        "system.peers(peer inet PRIMARY KEY, host_id uuid, rpc_address inet, data_center text, \
         rack text, tokens set<text>)",
    )
    .expect("static schema");
    vec![local, peers]
}

impl Node {
    /// Start on `addr` (port 0 = any) with `tables`.
    pub async fn start(
        addr: SocketAddr,
        tables: Vec<Table>,
        faults: Faults,
    ) -> std::io::Result<Node> {
        let mut map = HashMap::new();
        for t in system_tables().into_iter().chain(tables) {
            map.insert(format!("{}.{}", t.keyspace, t.name), t);
        }
        let state = Arc::new(State {
            tables: RwLock::new(map),
            prepared: RwLock::new(HashMap::new()),
            faults: RwLock::new(faults),
            stats: Stats::default(),
        });
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let node = Node {
            state,
            addr,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        node.serve(listener);
        Ok(node)
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let tasks = self.tasks.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                state.stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = sock.set_nodelay(true);
                let conn = tokio::spawn(connection(sock, state.clone()));
                let mut t = tasks.lock();
                t.retain(|c| !c.is_finished());
                t.push(conn);
            }
        });
        self.tasks.lock().push(task);
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the faults (takes effect for the next request).
    pub fn set_faults(&self, f: Faults) {
        *self.state.faults.write() = f;
    }

    /// Request counters.
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// A copy of a table's rows as JSON-ish cells (for assertions on INSERTs).
    pub fn row_count(&self, table: &str) -> usize {
        self.state
            .tables
            .read()
            .get(table)
            .map_or(0, |t| t.rows.len())
    }

    /// Raw cells of the row with serialized key `key` in `table`.
    pub fn row(&self, table: &str, key: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
        self.state.tables.read().get(table)?.rows.get(key).cloned()
    }

    /// Stop listening and drop every connection (the port is released).
    pub fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    /// Listen again on the same port, keeping tables and prepared statements.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Aborts a connection's helper tasks when the connection task ends or is aborted, so a
/// stopped node really closes its sockets.
struct Helpers(Vec<tokio::task::AbortHandle>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn connection(sock: TcpStream, state: Arc<State>) {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let writer = tokio::spawn(async move {
        while let Some(Some(frame)) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut helpers = Helpers(vec![writer.abort_handle()]);
    loop {
        let mut head = [0u8; 9];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let header = match wire::parse_header(&head) {
            Ok(h) => h,
            Err(e) => {
                let _ = tx.send(Some(wire::frame(
                    i16::from_be_bytes([head[2], head[3]]),
                    opcode::ERROR,
                    &wire::error(ErrorKind::Invalid, &e, &[]),
                )));
                break;
            }
        };
        let mut body = vec![0u8; header.length];
        if rd.read_exact(&mut body).await.is_err() {
            break;
        }
        let _ = header.flags;
        let (state, tx) = (state.clone(), tx.clone());
        let handler = tokio::spawn(async move {
            match respond(&state, header.opcode, &body).await {
                Reply::Frame(op, b) => {
                    let _ = tx.send(Some(wire::frame(header.stream, op, &b)));
                }
                Reply::Drop => {
                    let _ = tx.send(None);
                }
            }
        });
        helpers.0.retain(|h| !h.is_finished());
        helpers.0.push(handler.abort_handle());
    }
}

enum Reply {
    Frame(u8, Vec<u8>),
    Drop,
}

fn err(kind: ErrorKind, msg: &str) -> Reply {
    Reply::Frame(opcode::ERROR, wire::error(kind, msg, &[]))
}

fn qualify(table: &str, keyspace: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("{keyspace}.{table}")
    }
}

async fn respond(state: &State, op: u8, body: &[u8]) -> Reply {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let mut b = Body { buf: body };
    match op {
        opcode::OPTIONS => Reply::Frame(opcode::SUPPORTED, wire::supported()),
        opcode::STARTUP | opcode::REGISTER => Reply::Frame(opcode::READY, Vec::new()),
        opcode::PREPARE => match b.long_string() {
            Ok(q) => match table::parse(&q) {
                Ok(st) => prepare(state, &q, st),
                Err(e) => err(ErrorKind::Syntax, &e),
            },
            Err(e) => err(ErrorKind::Invalid, &e),
        },
        opcode::QUERY => match b.long_string().and_then(|q| Ok((q, b.query_params()?))) {
            Ok((q, values)) => match table::parse(&q) {
                Ok(st) => run(state, &st, values).await,
                Err(e) => err(ErrorKind::Syntax, &e),
            },
            Err(e) => err(ErrorKind::Invalid, &e),
        },
        opcode::EXECUTE => match b.short_bytes().and_then(|id| Ok((id, b.query_params()?))) {
            Ok((id, values)) => {
                let st = state.prepared.read().get(&id).map(|p| p.statement.clone());
                match st {
                    Some(st) => run(state, &st, values).await,
                    None => Reply::Frame(
                        opcode::ERROR,
                        wire::error(ErrorKind::Unprepared, "unknown prepared statement", &id),
                    ),
                }
            }
            Err(e) => err(ErrorKind::Invalid, &e),
        },
        opcode::BATCH => batch(state, &mut b).await,
        other => err(
            ErrorKind::Invalid,
            &format!("unsupported opcode {other:#x}"),
        ),
    }
}

fn prepared_id(q: &str) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in q.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut id = h.to_be_bytes().to_vec();
    id.extend_from_slice(&(q.len() as u64).to_be_bytes());
    id
}

fn prepare(state: &State, q: &str, st: Statement) -> Reply {
    let tables = state.tables.read();
    let id = prepared_id(q);
    let reply = match &st {
        Statement::Use(_) => wire::result_prepared(&id, &[], &[], &[]),
        Statement::Select {
            table,
            columns,
            by_bind,
        } => {
            let Some(t) = tables.get(&qualify(table, "sluice_demo")) else {
                return err(ErrorKind::Invalid, &format!("unconfigured table {table}"));
            };
            let results = match result_columns(t, columns) {
                Ok(c) => c,
                Err(e) => return err(ErrorKind::Invalid, &e),
            };
            let key = &t.columns[t.key];
            let binds: Vec<ColSpec<'_>> = if *by_bind {
                vec![spec(t, &key.0, key.1)]
            } else {
                Vec::new()
            };
            let pk: Vec<u16> = if *by_bind { vec![0] } else { Vec::new() };
            let results: Vec<ColSpec<'_>> = results
                .iter()
                .map(|i| spec(t, &t.columns[*i].0, t.columns[*i].1))
                .collect();
            wire::result_prepared(&id, &binds, &pk, &results)
        }
        Statement::Insert { table, columns } => {
            let Some(t) = tables.get(&qualify(table, "sluice_demo")) else {
                return err(ErrorKind::Invalid, &format!("unconfigured table {table}"));
            };
            let mut binds = Vec::new();
            let mut pk = Vec::new();
            for (i, c) in columns.iter().enumerate() {
                let Some(ci) = t.column(c) else {
                    return err(ErrorKind::Invalid, &format!("undefined column {c}"));
                };
                if ci == t.key {
                    pk.push(i as u16);
                }
                binds.push(spec(t, &t.columns[ci].0, t.columns[ci].1));
            }
            wire::result_prepared(&id, &binds, &pk, &[])
        }
    };
    drop(tables);
    state
        .prepared
        .write()
        .insert(id, Prepared { statement: st });
    Reply::Frame(opcode::RESULT, reply)
}

fn spec<'a>(t: &'a Table, name: &'a str, ty: ColType) -> ColSpec<'a> {
    ColSpec {
        keyspace: &t.keyspace,
        table: &t.name,
        name,
        ty,
    }
}

fn result_columns(t: &Table, columns: &[String]) -> Result<Vec<usize>, String> {
    if columns.len() == 1 && columns[0] == "*" {
        return Ok((0..t.columns.len()).collect());
    }
    columns
        .iter()
        .map(|c| t.column(c).ok_or(format!("undefined column name {c}")))
        .collect()
}

async fn injected(state: &State) -> Option<Reply> {
    let f = state.faults.read().clone();
    let (lo, hi) = f.latency_ms;
    let (delay, fail, drop) = {
        let mut rng = rand::rng();
        let delay = if hi > 0 {
            rng.random_range(lo..=hi.max(lo))
        } else {
            0
        };
        (
            delay,
            rng.random_bool(f.error_ratio.clamp(0.0, 1.0)),
            rng.random_bool(f.drop_ratio.clamp(0.0, 1.0)),
        )
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if drop {
        state.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return Some(Reply::Drop);
    }
    if fail {
        state.stats.errors_injected.fetch_add(1, Ordering::Relaxed);
        let kind = f.error_kind.unwrap_or(ErrorKind::ReadTimeout);
        return Some(err(kind, "injected by the CQL test node"));
    }
    None
}

async fn run(state: &State, st: &Statement, values: Vec<Option<Vec<u8>>>) -> Reply {
    match st {
        Statement::Use(ks) => Reply::Frame(opcode::RESULT, wire::result_set_keyspace(ks)),
        Statement::Select {
            table,
            columns,
            by_bind,
        } => {
            let name = qualify(table, "sluice_demo");
            if !name.starts_with("system.") {
                if let Some(r) = injected(state).await {
                    return r;
                }
                // The driver's own queries of system tables are not lookups.
                state.stats.selects.fetch_add(1, Ordering::Relaxed);
            }
            let tables = state.tables.read();
            let Some(t) = tables.get(&name) else {
                return err(ErrorKind::Invalid, &format!("unconfigured table {table}"));
            };
            let cols = match result_columns(t, columns) {
                Ok(c) => c,
                Err(e) => return err(ErrorKind::Invalid, &e),
            };
            let rows: Vec<Vec<Option<Vec<u8>>>> = if *by_bind {
                match values.first() {
                    Some(Some(k)) => t.rows.get(k).into_iter().cloned().collect(),
                    _ => Vec::new(),
                }
            } else {
                t.rows.values().cloned().collect()
            };
            let rows: Vec<Vec<Option<Vec<u8>>>> = rows
                .into_iter()
                .map(|r| cols.iter().map(|i| r[*i].clone()).collect())
                .collect();
            let specs: Vec<ColSpec<'_>> = cols
                .iter()
                .map(|i| spec(t, &t.columns[*i].0, t.columns[*i].1))
                .collect();
            Reply::Frame(opcode::RESULT, wire::result_rows(&specs, &rows))
        }
        Statement::Insert { table, columns } => {
            if let Some(r) = injected(state).await {
                return r;
            }
            state.stats.inserts.fetch_add(1, Ordering::Relaxed);
            let mut tables = state.tables.write();
            let Some(t) = tables.get_mut(&qualify(table, "sluice_demo")) else {
                return err(ErrorKind::Invalid, &format!("unconfigured table {table}"));
            };
            let mut row = vec![None; t.columns.len()];
            for (c, v) in columns.iter().zip(values) {
                if let Some(i) = t.column(c) {
                    row[i] = v;
                }
            }
            let Some(k) = row[t.key].clone() else {
                return err(ErrorKind::Invalid, "the key must not be null");
            };
            t.rows.insert(k, row);
            Reply::Frame(opcode::RESULT, wire::result_void())
        }
    }
}

async fn batch(state: &State, b: &mut Body<'_>) -> Reply {
    let parse = |b: &mut Body<'_>| -> Result<Vec<(Statement, Cells)>, String> {
        let _kind = b.byte()?;
        let n = b.short()?;
        let mut out = Vec::new();
        for _ in 0..n {
            let st = match b.byte()? {
                0 => table::parse(&b.long_string()?)?,
                _ => {
                    let id = b.short_bytes()?;
                    state
                        .prepared
                        .read()
                        .get(&id)
                        .map(|p| p.statement.clone())
                        .ok_or("unknown prepared statement in batch")?
                }
            };
            let k = b.short()?;
            let mut values = Vec::new();
            for _ in 0..k {
                values.push(b.bytes()?);
            }
            out.push((st, values));
        }
        Ok(out)
    };
    let items = match parse(b) {
        Ok(i) => i,
        Err(e) => return err(ErrorKind::Invalid, &e),
    };
    for (st, values) in items {
        if let Reply::Frame(opcode::ERROR, body) = Box::pin(run(state, &st, values)).await {
            return Reply::Frame(opcode::ERROR, body);
        }
    }
    Reply::Frame(opcode::RESULT, wire::result_void())
}
