//! Typed configuration (README "Configuration") and its loading: built-in defaults, then a file,
//! then `SLUICE__SECTION__KEY` environment variables.
//!
//! The structs mirror `config/sluice.toml` one to one; that file is embedded and is the
//! single source of defaults, so a key is "known" exactly when it appears there.

mod layers;
mod paths;
mod validate;

use serde::{Deserialize, Serialize};

pub use crate::sink::config::{CqlSinkSettings, SinkKind, SinkSettings, WebhookSettings};
pub use layers::{DEFAULT_TOML, LoadError, load, load_from, parse, parse_from};
pub use validate::validate;

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: Server,
    pub pipeline: Pipeline,
    pub retry: Retry,
    pub lookup: Lookup,
    pub output: SinkSettings,
    pub dead_letter: SinkSettings,
    pub checkpoint: Checkpoint,
    pub cluster: Cluster,
}

/// `[cluster]`: several nodes sharing the partitions, coordinated through etcd v3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Join the cluster; false runs a standalone node owning every partition.
    pub enabled: bool,
    /// Node id; empty = `server.node`, else `$HOSTNAME` (the pod name in a StatefulSet).
    pub node: String,
    /// Base URL other nodes reach this node at; empty = `http://` + the bound address.
    pub advertise: String,
    /// etcd client endpoints.
    pub etcd: Vec<String>,
    /// Key prefix: one cluster per prefix.
    pub prefix: String,
    /// A crashed node's partitions move after this long (etcd lease TTL, whole seconds).
    pub lease_ttl_ms: u64,
    /// An owner that a majority of the other members has not reached over HTTP for this
    /// long loses its partitions (0 = `lease_ttl_ms`).
    pub peer_timeout_ms: u64,
    /// Records this node holds durably for owners it cannot reach (staged), then 503.
    pub max_staged_records: u64,
}

impl Cluster {
    /// `peer_timeout_ms`, with 0 meaning the lease TTL.
    pub fn peer_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(if self.peer_timeout_ms == 0 {
            self.lease_ttl_ms
        } else {
            self.peer_timeout_ms
        })
    }
}

/// `[server]`: the REST edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub bind: String,
    pub max_body_bytes: u64,
    pub max_records_per_request: u64,
    pub auth_tokens: Vec<String>,
    pub workers: u64,
    pub node: String,
    pub shutdown_grace_ms: u64,
}

/// Emission order within a partition (README "Ordering").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Strictly by `seq` (Flink `orderedWait`).
    Ordered,
    /// As completed (Flink `unorderedWait`).
    Unordered,
    /// Equal keys in acceptance order, different keys independent.
    KeyOrdered,
}

impl Mode {
    /// The names accepted in the config (`pipeline.mode`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["ordered", "unordered", "key_ordered"];

    /// The name used in config and `/v1/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ordered => "ordered",
            Mode::Unordered => "unordered",
            Mode::KeyOrdered => "key_ordered",
        }
    }
}

/// What happens to a record whose deadline passed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    DeadLetter,
    PassThrough,
}

impl OnTimeout {
    /// The names accepted in the config (`pipeline.on_timeout`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["dead_letter", "pass_through"];
}

/// `[pipeline]`: partitions, ordering, capacity and the per-record deadline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub partitions: u64,
    pub mode: Mode,
    pub capacity: u64,
    pub backlog: u64,
    pub key: String,
    pub id: String,
    pub timeout_ms: u64,
    pub on_timeout: OnTimeout,
    pub threads: u64,
}

/// Which attempt results are retried.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    Error,
    Timeout,
    Miss,
}

impl RetryOn {
    /// The names accepted in the config (items of `retry.on`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["error", "timeout", "miss"];
}

/// `[retry]`: the jittered exponential backoff schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_attempts: u64,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    pub jitter: f64,
    pub on: Vec<RetryOn>,
}

/// Lookup backend selector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Memory,
    Cql,
}

impl Backend {
    /// The names accepted in the config (`lookup.backend`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["memory", "cql"];
}

/// What happens to a record whose lookup found nothing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMiss {
    Emit,
    DeadLetter,
}

impl OnMiss {
    /// The names accepted in the config (`lookup.on_miss`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["emit", "dead_letter"];
}

/// `[lookup]`: which backend, where the result goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    pub backend: Backend,
    pub into: String,
    pub on_miss: OnMiss,
    pub attempt_timeout_ms: u64,
    pub memory: MemoryLookup,
    pub cache: LookupCache,
    pub cql: CqlLookup,
}

/// `[lookup.cache]`: optional result cache of the CQL backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LookupCache {
    /// 0 = no cache.
    pub max_entries: u64,
    pub ttl_ms: u64,
}

/// `[lookup.memory]`: the embedded table, also the simulated async function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryLookup {
    pub table: String,
    pub key_column: String,
    pub delay_ms: Vec<u64>,
    pub fail_ratio: f64,
    pub delay_field: String,
    pub fail_field: String,
}

/// `[lookup.cql]`: the CQL lookup (ScyllaDB / Cassandra).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CqlLookup {
    pub contact_points: Vec<String>,
    pub keyspace: String,
    pub query: String,
    pub binds: Vec<String>,
    pub consistency: String,
    /// Empty = no authentication.
    pub username: String,
    pub password: String,
}

/// Acknowledgement level of `POST /v1/records`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    Durable,
    Received,
}

impl Ack {
    /// The names accepted in the config (`checkpoint.ack`), as serde spells them.
    pub const NAMES: &'static [&'static str] = &["durable", "received"];
}

/// What to do when the checkpoint directory is missing a piece of its chain.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnDamage {
    /// Refuse to start (exit 2), naming what is missing.
    Refuse,
    /// Start from what is left (the missing records are lost); seqs jump so none is reused.
    AcceptLoss,
}

impl OnDamage {
    /// The names accepted in the config (`checkpoint.on_damage`).
    pub const NAMES: &'static [&'static str] = &["refuse", "accept_loss"];
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub dir: String,
    pub interval_ms: u64,
    pub ack: Ack,
    pub on_damage: OnDamage,
}

impl Settings {
    /// The built-in defaults alone (the embedded `config/sluice.toml`), not validated
    /// (the sample table path is relative to the working directory).
    pub fn defaults() -> Settings {
        toml::from_str(DEFAULT_TOML).expect("the embedded default config matches Settings")
    }

    /// Render as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The node's id: `cluster.node`, else `server.node`, else `$HOSTNAME` (the pod name in
    /// a StatefulSet), else "sluice".
    pub fn node_id(&self) -> String {
        [&self.cluster.node, &self.server.node]
            .into_iter()
            .find(|n| !n.is_empty())
            .cloned()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "sluice".into())
    }

    /// Threads for partition actors: the configured number, or one per core.
    pub fn partition_threads(&self) -> usize {
        resolve_threads(self.pipeline.threads)
    }

    /// HTTP worker threads: the configured number, or one per core.
    pub fn http_workers(&self) -> usize {
        resolve_threads(self.server.workers)
    }
}

fn resolve_threads(configured: u64) -> usize {
    if configured > 0 {
        configured as usize
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}
