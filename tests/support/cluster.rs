//! A sluice cluster for integration tests: a real etcd (see `etcd.rs`) and several real
//! `sluice serve` processes on loopback, each with its own data directory, plus a load
//! generator that posts to random live nodes and the checks every cluster test shares.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::etcd::EtcdCluster;
use super::{Config, Service, read_lines};

/// Cluster settings of every test node (short leases: failover tests stay fast).
pub const LEASE_TTL_MS: u64 = 2000;

/// See module docs.
pub struct TestCluster {
    pub etcd: EtcdCluster,
    prefix: String,
    config: Config,
    /// Per node index: the running process (None once stopped or killed).
    pub nodes: Vec<Option<Service>>,
    dirs: Vec<tempfile::TempDir>,
    /// Data directories taken away from their node (a volume deleted): kept so the audit
    /// still reads what was emitted into them.
    spare: Vec<(usize, tempfile::TempDir)>,
    /// Per node index: extra environment of its process (e.g. a fixed bind and advertise).
    pub env: Vec<Vec<(String, String)>>,
    /// Base URLs of the nodes that accept load now (the load generator reads this).
    pub live: Arc<RwLock<Vec<String>>>,
}

impl TestCluster {
    /// etcd with `etcd_members` members and `nodes` sluice nodes on `config` (its
    /// `[cluster]` is filled in); `None` (after a printed skip) without an etcd binary.
    pub fn start(test: &str, etcd_members: usize, nodes: usize, config: Config) -> Option<Self> {
        let etcd = EtcdCluster::try_start_or_skip(test, etcd_members)?;
        let mut c = TestCluster {
            etcd,
            prefix: format!("/sluice-test/{test}"),
            config,
            nodes: Vec::new(),
            dirs: Vec::new(),
            spare: Vec::new(),
            env: Vec::new(),
            live: Arc::new(RwLock::new(Vec::new())),
        };
        for _ in 0..nodes {
            c.add_node();
        }
        Some(c)
    }

    /// [`TestCluster::start`], then wait until the partitions are spread, start `clients`
    /// load clients over 40 keys and let them run for `warm`: where every cluster test
    /// begins.
    pub fn start_loaded(
        test: &str,
        etcd_members: usize,
        nodes: usize,
        config: Config,
        clients: usize,
        warm: Duration,
    ) -> Option<(Self, Load)> {
        let c = Self::start(test, etcd_members, nodes, config)?;
        c.wait_balanced(Duration::from_secs(20));
        let load = Load::start(c.live.clone(), clients, 40);
        std::thread::sleep(warm);
        Some((c, load))
    }

    fn config_of(&self, i: usize) -> Config {
        let endpoints: Vec<String> = self
            .etcd
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        Config {
            cluster: format!(
                "enabled = true\nnode = \"n{i}\"\netcd = [{}]\nprefix = \"{}\"\nlease_ttl_ms = {LEASE_TTL_MS}\n{}",
                endpoints.join(", "),
                self.prefix,
                self.config.cluster,
            ),
            server: self.config.server.clone(),
            pipeline: self.config.pipeline.clone(),
            retry: self.config.retry.clone(),
            lookup: self.config.lookup.clone(),
            memory: self.config.memory.clone(),
            steps: self.config.steps.clone(),
            cql: self.config.cql.clone(),
            checkpoint: self.config.checkpoint.clone(),
            env: self.env.get(i).cloned().unwrap_or_default(),
            ..Config::default()
        }
    }

    /// Start one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = Service::start_in(&self.config_of(i), dir.path());
        self.live.write().unwrap().push(svc.base.clone());
        self.nodes.push(Some(svc));
        self.dirs.push(dir);
        i
    }

    /// The volume of stopped node `i` is deleted: its next start finds an empty directory
    /// (what it emitted stays readable for the audit).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} still runs");
        let old = std::mem::replace(&mut self.dirs[i], tempfile::tempdir().expect("tempdir"));
        self.spare.push((i, old));
    }

    /// Take node `i`'s process out of the cluster's bookkeeping (it keeps running, e.g.
    /// frozen, until the caller ends it) and give its slot an empty volume, as a
    /// replacement pod gets; the process's own directory stays readable for the audit.
    pub fn detach(&mut self, i: usize) -> Service {
        self.unlist(i);
        let svc = self.nodes[i].take().expect("node runs");
        self.wipe(i);
        svc
    }

    /// The checkpoint directories no node uses any more (deleted volumes), newest last.
    pub fn spare_checkpoints(&self) -> Vec<PathBuf> {
        self.spare
            .iter()
            .map(|(_, d)| d.path().join("checkpoints"))
            .collect()
    }

    /// Start node `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} still runs");
        let svc = Service::start_in(&self.config_of(i), self.dirs[i].path());
        self.live.write().unwrap().push(svc.base.clone());
        self.nodes[i] = Some(svc);
    }

    pub fn node(&self, i: usize) -> &Service {
        self.nodes[i].as_ref().expect("node runs")
    }

    fn unlist(&self, i: usize) {
        if let Some(s) = &self.nodes[i] {
            self.live.write().unwrap().retain(|b| *b != s.base);
        }
    }

    /// SIGTERM node `i` and wait for a clean exit (graceful leave).
    pub fn leave(&mut self, i: usize) {
        self.unlist(i);
        let mut svc = self.nodes[i].take().expect("node runs");
        assert_eq!(svc.terminate(), Some(0), "node {i} leaves cleanly");
    }

    /// kill -9 node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.unlist(i);
        let mut svc = self.nodes[i].take().expect("node runs");
        svc.kill9();
    }

    /// Output file of node `i`.
    pub fn out_path(&self, i: usize) -> PathBuf {
        self.dirs[i].path().join("out.jsonl")
    }

    /// `/v1/cluster` from the first live node.
    pub fn view(&self) -> Value {
        let n = self.nodes.iter().flatten().next().expect("a live node");
        n.get("/v1/cluster").json()
    }

    /// Wait until every partition has an owner among the live nodes and the live nodes
    /// own ⌊P/N⌋ or ⌈P/N⌉ each; returns how long it took.
    pub fn wait_balanced(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let live: Vec<String> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .map(|i| format!("n{i}"))
            .collect();
        loop {
            let ok = self.nodes.iter().flatten().all(|n| {
                let r = n.get("/v1/cluster");
                if r.status != 200 {
                    return false;
                }
                balanced(&r.json(), &live)
            });
            if ok {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "not balanced over {live:?} after {limit:?}: {}",
                self.view()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every envelope of every node (output and dead letter), with the node index whose
    /// file holds it, in file order.
    pub fn envelopes(&self) -> Vec<(usize, Value)> {
        let mut all = Vec::new();
        // A deleted volume's files were written by the node of that slot.
        let spare = self.spare.iter().map(|(i, d)| (*i, d));
        for (i, d) in self.dirs.iter().enumerate().chain(spare) {
            for f in ["out.jsonl", "dead.jsonl"] {
                for v in read_lines(&d.path().join(f)) {
                    all.push((i, v));
                }
            }
        }
        all
    }

    /// Wait until every live node has nothing pending or staged.
    pub fn wait_quiescent(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let busy: Vec<String> = self
                .nodes
                .iter()
                .flatten()
                .filter_map(|n| {
                    let s = n.status();
                    let m = n.get("/metrics").body;
                    let staged = m
                        .lines()
                        .find(|l| l.starts_with("sluice_cluster_staged_records "))
                        .and_then(|l| l.split(' ').nth(1))
                        .unwrap_or("0")
                        .to_string();
                    (s["pending"] != 0 || staged != "0")
                        .then(|| format!("{}: pending {} staged {staged}", n.base, s["pending"]))
                })
                .collect();
            if busy.is_empty() {
                // Flush every sink to its file (a checkpoint commits them first).
                // A node fenced for a moment (an etcd member just came back) answers 503.
                for n in self.nodes.iter().flatten() {
                    let mut r = n.post_json("/v1/checkpoint", &[]);
                    while r.status == 503 && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(100));
                        r = n.post_json("/v1/checkpoint", &[]);
                    }
                    assert_eq!(r.status, 200, "checkpoint: {}", r.body);
                }
                return;
            }
            assert!(
                Instant::now() < until,
                "still busy after {limit:?}: {busy:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn balanced(view: &Value, live: &[String]) -> bool {
    let parts = view["partitions"].as_array().cloned().unwrap_or_default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in &parts {
        match p["owner"].as_str() {
            Some(o) if live.iter().any(|l| l == o) => {
                *counts.entry(o.to_string()).or_default() += 1
            }
            _ => return false,
        }
    }
    let (lo, hi) = (parts.len() / live.len(), parts.len().div_ceil(live.len()));
    live.iter().all(|l| {
        let c = counts.get(l).copied().unwrap_or(0);
        c >= lo && c <= hi
    })
}

/// What the load generator saw.
#[derive(Default)]
pub struct LoadReport {
    /// Ids acknowledged with 202, per client in sending order.
    pub acked: Vec<Vec<String>>,
    /// Answers by status code (0 = connection failed).
    pub statuses: BTreeMap<u16, u64>,
}

impl LoadReport {
    /// Every acknowledged id.
    pub fn ids(&self) -> Vec<String> {
        self.acked.iter().flatten().cloned().collect()
    }
}

/// What one load client saw: acknowledged ids in order, and answers by status.
type ClientResult = (Vec<String>, BTreeMap<u16, u64>);

/// Clients posting batches to random live nodes until `stop`. Client `c` names its records
/// `c{c}-{n}` with n increasing, keys from a small set, so per-key order can be checked.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<ClientResult>>,
    pub sent: Arc<AtomicU64>,
}

impl Load {
    pub fn start(live: Arc<RwLock<Vec<String>>>, clients: usize, keys: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, live, sent) = (stop.clone(), live.clone(), sent.clone());
                std::thread::spawn(move || client(c, &live, &stop, &sent, keys))
            })
            .collect();
        Load {
            stop,
            threads,
            sent,
        }
    }

    /// Stop and collect what every client saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Release);
        let mut report = LoadReport::default();
        for t in self.threads {
            let (acked, statuses) = t.join().expect("load client");
            report.acked.push(acked);
            for (s, n) in statuses {
                *report.statuses.entry(s).or_default() += n;
            }
        }
        report
    }
}

fn client(
    c: usize,
    live: &RwLock<Vec<String>>,
    stop: &AtomicBool,
    sent: &AtomicU64,
    keys: u32,
) -> ClientResult {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64 * 7919 + 1);
    let mut acked = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut n = 0u64;
    let mut pending: Option<Vec<Value>> = None;
    while !stop.load(Ordering::Acquire) {
        let batch = pending.take().unwrap_or_else(|| {
            (0..rng.random_range(1..30))
                .map(|_| {
                    n += 1;
                    json!({"id": format!("c{c}-{n}"), "user_id": format!("u{}", rng.random_range(1..=keys))})
                })
                .collect()
        });
        let target = {
            let l = live.read().unwrap();
            if l.is_empty() {
                drop(l);
                std::thread::sleep(Duration::from_millis(10));
                pending = Some(batch);
                continue;
            }
            l[rng.random_range(0..l.len())].clone()
        };
        let body = serde_json::to_vec(&batch).expect("json");
        let res = agent
            .post(format!("{target}/v1/records"))
            .header("content-type", "application/json")
            .send(&body[..]);
        let status = match res {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                match status {
                    202 => {
                        let v: Value = serde_json::from_str(&text).expect("202 body is JSON");
                        let ids = v["ids"].as_array().expect("ids");
                        assert_eq!(ids.len(), batch.len());
                        acked.extend(ids.iter().map(|i| i.as_str().unwrap_or("").to_string()));
                        sent.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    }
                    429 | 503 => {
                        assert!(
                            r.headers().get("retry-after").is_some(),
                            "{status} without Retry-After: {text}"
                        );
                        // Nothing was accepted: send the same records again (ids and order
                        // per client stay as they were).
                        pending = Some(batch);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    s => panic!("unexpected {s} from {target}: {text}"),
                }
                status
            }
            Err(_) => {
                // The node went away mid-request: the outcome is unknown, so these ids
                // are not counted as acknowledged and are not resent (a resend could
                // duplicate a record the node had accepted).
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        *statuses.entry(status).or_default() += 1;
    }
    (acked, statuses)
}

/// The checks every cluster test makes once the cluster is quiescent: each acknowledged id
/// exactly once across the nodes' sinks (missing ones located first), one writer per
/// (partition, epoch), seqs never repeated. Returns the envelopes for mode-specific checks.
pub fn assert_delivered(c: &TestCluster, report: &LoadReport) -> Vec<(usize, Value)> {
    assert_cluster_exactly_once(c, report);
    let env = c.envelopes();
    assert_one_writer_per_epoch(&env);
    assert_seqs_unique(&env);
    env
}

/// Which files under the nodes' directories mention `id` (journals, snapshots, sinks): the
/// diagnosis printed when an acknowledged id is missing.
pub fn where_is(c: &TestCluster, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, d) in c.dirs.iter().enumerate() {
        let mut stack = vec![d.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p)
                    && bytes.windows(id.len() + 2).any(|w| {
                        w[1..w.len() - 1] == *id.as_bytes() && !w[w.len() - 1].is_ascii_digit()
                    })
                {
                    found.push(format!(
                        "n{i}:{}",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    ));
                }
            }
        }
    }
    found
}

/// [`assert_exactly_once`], printing where missing ids are stuck first.
pub fn assert_cluster_exactly_once(c: &TestCluster, report: &LoadReport) {
    let env = c.envelopes();
    let seen: std::collections::HashSet<&str> =
        env.iter().filter_map(|(_, e)| e["id"].as_str()).collect();
    for id in report
        .ids()
        .iter()
        .filter(|i| !seen.contains(i.as_str()))
        .take(5)
    {
        eprintln!("missing {id}: found in {:?}", where_is(c, id));
    }
    assert_exactly_once(report, &env);
}

/// Every acknowledged id exactly once across the cluster's sinks; nothing unknown.
pub fn assert_exactly_once(report: &LoadReport, envelopes: &[(usize, Value)]) {
    let mut seen: HashMap<&str, Vec<usize>> = HashMap::new();
    for (node, e) in envelopes {
        seen.entry(e["id"].as_str().expect("id"))
            .or_default()
            .push(*node);
    }
    let ids = report.ids();
    let mut missing = Vec::new();
    for id in &ids {
        match seen.get(id.as_str()).map(Vec::len) {
            Some(1) => {}
            None => missing.push(id.clone()),
            Some(n) => {
                let copies: Vec<String> = envelopes
                    .iter()
                    .filter(|(_, e)| e["id"] == id.as_str())
                    .map(|(node, e)| {
                        format!(
                            "n{node}: partition {} seq {} epoch {} attempts {}",
                            e["partition"], e["seq"], e["epoch"], e["attempts"]
                        )
                    })
                    .collect();
                panic!("id {id} emitted {n} times: {copies:?}")
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged ids never emitted, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dupes: Vec<_> = seen.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(dupes.is_empty(), "duplicates: {dupes:?}");
    assert!(
        seen.len() >= ids.len(),
        "{} envelopes for {} acknowledged ids",
        seen.len(),
        ids.len()
    );
}

/// Each (partition, epoch) was written by one node only, and that node is the one the
/// envelopes name: never two owners emitting for one partition.
pub fn assert_one_writer_per_epoch(envelopes: &[(usize, Value)]) {
    let mut writer: HashMap<(u64, u64), usize> = HashMap::new();
    for (node, e) in envelopes {
        let key = (
            e["partition"].as_u64().expect("partition"),
            e["epoch"].as_u64().expect("epoch"),
        );
        assert!(key.1 > 0, "cluster envelopes carry an epoch: {e}");
        assert_eq!(
            e["node"],
            format!("n{node}"),
            "envelope names the node whose file holds it"
        );
        let w = *writer.entry(key).or_insert(*node);
        assert_eq!(
            w, *node,
            "partition {} epoch {} written by two nodes",
            key.0, key.1
        );
    }
}

/// Envelopes of each partition in emission order: by epoch (ownerships follow each other
/// in epoch order), then by position in the owner's file.
fn by_partition(envelopes: &[(usize, Value)]) -> BTreeMap<u64, Vec<&Value>> {
    let mut m: BTreeMap<u64, Vec<(u64, usize, &Value)>> = BTreeMap::new();
    for (pos, (_, e)) in envelopes.iter().enumerate() {
        m.entry(e["partition"].as_u64().expect("partition"))
            .or_default()
            .push((e["epoch"].as_u64().unwrap_or(0), pos, e));
    }
    m.into_iter()
        .map(|(p, mut v)| {
            v.sort_by_key(|(epoch, pos, _)| (*epoch, *pos));
            (p, v.into_iter().map(|(_, _, e)| e).collect())
        })
        .collect()
}

/// `ordered`: seq strictly increasing per partition across owners (graceful changes).
pub fn assert_seq_increasing_per_partition(envelopes: &[(usize, Value)]) {
    for (p, list) in by_partition(envelopes) {
        let seqs: Vec<u64> = list
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        for w in seqs.windows(2) {
            assert!(w[0] < w[1], "partition {p}: seq {} then {}", w[0], w[1]);
        }
    }
}

/// `key_ordered` (and `ordered`): per key, emitted in seq order, and each client's records
/// of one key in the order the client sent them.
pub fn assert_key_order(envelopes: &[(usize, Value)]) {
    for (p, list) in by_partition(envelopes) {
        let mut last_seq: HashMap<String, u64> = HashMap::new();
        let mut last_n: HashMap<(String, String), u64> = HashMap::new();
        for e in list {
            let key = e["key"].to_string();
            let seq = e["seq"].as_u64().expect("seq");
            if let Some(prev) = last_seq.insert(key.clone(), seq) {
                assert!(prev < seq, "partition {p} key {key}: seq {prev} then {seq}");
            }
            let id = e["id"].as_str().unwrap_or("");
            if let Some((c, n)) = id.split_once('-')
                && let Ok(n) = n.parse::<u64>()
                && let Some(prev) = last_n.insert((c.to_string(), key.clone()), n)
            {
                assert!(
                    prev < n,
                    "client {c} key {key}: record {n} emitted after {prev} (sent later)"
                );
            }
        }
    }
}

/// Seqs never repeat within a partition.
pub fn assert_seqs_unique(envelopes: &[(usize, Value)]) {
    let mut seen: HashMap<(u64, u64), &str> = HashMap::new();
    for (_, e) in envelopes {
        let k = (
            e["partition"].as_u64().unwrap_or(0),
            e["seq"].as_u64().unwrap_or(0),
        );
        let id = e["id"].as_str().unwrap_or("");
        if let Some(other) = seen.insert(k, id) {
            panic!("partition {} seq {} used by {other} and {id}", k.0, k.1);
        }
    }
}

/// The config every cluster test starts from: `mode`, 6 partitions, a little lookup delay.
pub fn config(mode: &str) -> Config {
    Config {
        pipeline: format!(
            "mode = \"{mode}\"\npartitions = 6\ncapacity = 50\nbacklog = 5000\ntimeout_ms = 5000\n"
        ),
        memory: "delay_ms = [0, 2]\n".into(),
        checkpoint: "interval_ms = 100\n".into(),
        ..Config::default()
    }
}
