//! Typed configuration (README "Configuration") and its loading: built-in defaults, then a file,
//! then `SLUICE__SECTION__KEY` environment variables.
//!
//! The structs mirror `config/sluice.toml` one to one; that file is embedded and is the
//! single source of defaults, so a key is "known" exactly when it appears there.

mod layers;
mod paths;
mod pipeline;
mod validate;
mod validate_steps;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::sink::config::{CqlSinkSettings, SinkKind, SinkSettings, WebhookSettings};
pub use layers::{DEFAULT_TOML, LoadError, load, load_from, parse, parse_from};
pub use pipeline::SINGLE_STEP;
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
    /// `[lookup.steps.NAME]`: a pipeline of named steps (README "Pipelines"); empty = the
    /// single lookup above, one step named `lookup`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, Step>,
}

/// Backend of one pipeline step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepBackend {
    Memory,
    Cql,
    Http,
}

impl StepBackend {
    /// The names accepted in the config (`lookup.steps.NAME.backend`).
    pub const NAMES: &'static [&'static str] = &["memory", "cql", "http"];

    /// Every backend, in the order of [`StepBackend::NAMES`].
    pub const ALL: [StepBackend; 3] = [StepBackend::Memory, StepBackend::Cql, StepBackend::Http];

    /// The backend named `name` in the config.
    pub fn from_name(name: &str) -> Option<StepBackend> {
        Self::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StepBackend::Memory => "memory",
            StepBackend::Cql => "cql",
            StepBackend::Http => "http",
        }
    }

    /// The step keys only this backend reads (the others are [`Step::COMMON_KEYS`]).
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            StepBackend::Memory => &[
                "table",
                "key_column",
                "delay_ms",
                "fail_ratio",
                "delay_field",
                "fail_field",
            ],
            StepBackend::Cql => &["query"],
            StepBackend::Http => &[
                "url",
                "method",
                "result",
                "headers",
                "concurrency",
                "batch_max_keys",
                "batch_max_ms",
                "ca_file",
            ],
        }
    }

    /// The backend that reads step key `key`, when only one does.
    pub fn owning(key: &str) -> Option<StepBackend> {
        Self::ALL.into_iter().find(|b| b.keys().contains(&key))
    }
}

/// What a step's miss does to the record.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepOnMiss {
    /// The step's `into` is `null`; the record goes on (outcome `miss`).
    Emit,
    /// The record is dead-lettered, naming the step.
    DeadLetter,
    /// As `emit`, and the steps that depend on this one are not run (their `into` is `null`).
    SkipDependents,
}

impl StepOnMiss {
    /// The names accepted in the config (`lookup.steps.NAME.on_miss`).
    pub const NAMES: &'static [&'static str] = &["emit", "dead_letter", "skip_dependents"];
}

/// HTTP method of an `http` step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    /// The names accepted in the config (`lookup.steps.NAME.method`).
    pub const NAMES: &'static [&'static str] = &["GET", "POST"];
}

/// `[lookup.steps.NAME.cache]` (also `cache = { ... }`): a per-step result cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepCache {
    /// 0 = no cache.
    #[serde(default)]
    pub max_entries: u64,
    #[serde(default = "default_cache_ttl_ms")]
    pub ttl_ms: u64,
    /// How long a miss is kept (0 = misses are not cached).
    #[serde(default)]
    pub miss_ttl_ms: u64,
}

impl Default for StepCache {
    fn default() -> Self {
        StepCache {
            max_entries: 0,
            ttl_ms: default_cache_ttl_ms(),
            miss_ttl_ms: 0,
        }
    }
}

fn default_cache_ttl_ms() -> u64 {
    60_000
}

/// `[lookup.steps.NAME]`: one named lookup of a pipeline. Which keys matter depends on
/// `backend` (memory: `table`, `key_column`, the simulation keys; cql: `query` over the
/// shared `[lookup.cql]` session; http: `url`, `method`, `result`, `headers`, the batching
/// keys, `ca_file`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub backend: StepBackend,
    /// JSON pointers: one per `?` (cql), the key (memory), `{0}`, `{1}`.. (http). A pointer
    /// into another step's `into` makes this step run after that one.
    #[serde(default)]
    pub binds: Vec<String>,
    /// Where this step's result is merged.
    pub into: String,
    #[serde(default = "default_step_on_miss")]
    pub on_miss: StepOnMiss,
    /// Steps this one runs after, besides those its binds read.
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    #[serde(default)]
    pub cache: StepCache,
    /// cql: the statement (one `?` per bind).
    #[serde(default)]
    pub query: String,
    /// memory: the JSONL table and its key column.
    #[serde(default)]
    pub table: String,
    #[serde(default)]
    pub key_column: String,
    /// memory: simulated latency, failures (as `[lookup.memory]`).
    #[serde(default = "default_delay_ms")]
    pub delay_ms: Vec<u64>,
    #[serde(default)]
    pub fail_ratio: f64,
    #[serde(default)]
    pub delay_field: String,
    #[serde(default)]
    pub fail_field: String,
    /// http: the URL, `{N}` replaced by `binds[N]` percent-encoded.
    #[serde(default)]
    pub url: String,
    #[serde(default = "default_http_method")]
    pub method: HttpMethod,
    /// http: pointer into the answer to merge ("" = the whole answer).
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// http: requests in flight to the service from this node.
    #[serde(default = "default_http_concurrency")]
    pub concurrency: u64,
    /// http: > 0 batches up to this many keys per POST.
    #[serde(default)]
    pub batch_max_keys: u64,
    #[serde(default = "default_batch_max_ms")]
    pub batch_max_ms: u64,
    /// http: extra root certificates (PEM) for `https://`.
    #[serde(default)]
    pub ca_file: String,
}

fn default_step_on_miss() -> StepOnMiss {
    StepOnMiss::Emit
}
fn default_attempt_timeout_ms() -> u64 {
    500
}
fn default_delay_ms() -> Vec<u64> {
    vec![0, 0]
}
fn default_http_method() -> HttpMethod {
    HttpMethod::Get
}
fn default_http_concurrency() -> u64 {
    64
}
fn default_batch_max_ms() -> u64 {
    5
}

impl Step {
    /// The keys every backend reads.
    pub const COMMON_KEYS: &'static [&'static str] = &[
        "backend",
        "binds",
        "into",
        "on_miss",
        "after",
        "attempt_timeout_ms",
        "cache",
    ];

    /// The keys a step must set (every other key has a default).
    pub const REQUIRED_KEYS: &'static [&'static str] = &["backend", "into"];

    /// A step with `backend` and `into` and every other key at its default (the serde
    /// defaults above are the one source of them; the config's step schema is this value).
    pub fn new(backend: StepBackend, into: &str) -> Step {
        let mut table = toml::Table::new();
        table.insert("backend".into(), backend.as_str().into());
        table.insert("into".into(), into.into());
        table
            .try_into()
            .expect("backend and into are all a step requires")
    }

    /// The memory-backend keys as `[lookup.memory]` has them.
    pub fn memory(&self) -> MemoryLookup {
        MemoryLookup {
            table: self.table.clone(),
            key_column: self.key_column.clone(),
            delay_ms: self.delay_ms.clone(),
            fail_ratio: self.fail_ratio,
            delay_field: self.delay_field.clone(),
            fail_field: self.fail_field.clone(),
        }
    }
}

/// `[lookup.cache]`: optional result cache of the CQL backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LookupCache {
    /// 0 = no cache.
    pub max_entries: u64,
    pub ttl_ms: u64,
    /// How long a miss is kept; unset = `ttl_ms` (so it has no value in the defaults
    /// file), 0 = misses are not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss_ttl_ms: Option<u64>,
}

impl LookupCache {
    /// How long a miss is kept: `miss_ttl_ms`, else `ttl_ms`.
    pub fn miss_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.miss_ttl_ms.unwrap_or(self.ttl_ms))
    }
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

    /// Render as TOML, as `check-config` prints it. With `[lookup.steps.*]` the
    /// single-lookup keys and each step's keys of other backends are left out: they are
    /// not used (and a file holding them would be refused).
    pub fn to_toml(&self) -> String {
        let rendered = if self.has_steps() {
            // Through JSON, whose maps keep the fields' order (TOML tables sort their keys).
            serde_json::to_value(self)
                .map_err(|e| e.to_string())
                .and_then(|mut v| {
                    pipeline::drop_unused_keys(&mut v);
                    toml::to_string(&v).map_err(|e| e.to_string())
                })
        } else {
            toml::to_string(self).map_err(|e| e.to_string())
        };
        rendered.unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
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
