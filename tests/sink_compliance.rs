//! One compliance suite every sink kind runs (file, stdout, cql, webhook), against the real
//! binary and a real destination:
//! 1. batches of envelopes in → each accepted id out exactly once (at least once, with
//!    identical copies, where the kind says so), in seq order per partition where the kind
//!    keeps order;
//! 2. a failing destination → the records stay pending (not counted emitted), `/readyz`
//!    answers 503 naming the output, and once the destination works again every record
//!    arrives;
//! 3. kill -9 of the service mid-stream → after a restart every acknowledged id arrived,
//!    with the kind's guarantee.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_cql_node::Faults;
use sluice_cql_node::wire::ErrorKind;
use support::cql::CqlTarget;
use support::webhook::{Answer, Receiver};
use support::{Config, Service, read_lines};

/// A destination under test.
trait Destination {
    fn name(&self) -> &'static str;
    /// The service config that writes the output here.
    fn config(&self) -> Config;
    /// Envelopes at the destination, for a service whose directory is `dir`.
    fn delivered(&self, dir: &Path) -> Vec<Value>;
    /// Exactly once across crashes (else at least once, copies identical).
    fn exactly_once(&self) -> bool;
    /// The destination keeps the order envelopes were emitted in.
    fn ordered(&self) -> bool;
    /// Make writes fail; returns a config to run the failure phase with. `None`: the kind
    /// cannot fail this way here (printed).
    fn break_it(&self) -> Option<Config>;
    /// Make writes work again; false when the failure cannot be healed (e.g. `/dev/full`).
    fn heal(&self) -> bool;
}

struct FileDest;

impl Destination for FileDest {
    fn name(&self) -> &'static str {
        "file"
    }
    fn config(&self) -> Config {
        Config::default()
    }
    fn delivered(&self, dir: &Path) -> Vec<Value> {
        read_lines(&dir.join("out.jsonl"))
    }
    fn exactly_once(&self) -> bool {
        true
    }
    fn ordered(&self) -> bool {
        true
    }
    fn break_it(&self) -> Option<Config> {
        // Every write to /dev/full fails with ENOSPC.
        Some(Config {
            output_path: Some("/dev/full".into()),
            ..Config::default()
        })
    }
    fn heal(&self) -> bool {
        false
    }
}

struct StdoutDest;

impl Destination for StdoutDest {
    fn name(&self) -> &'static str {
        "stdout"
    }
    fn config(&self) -> Config {
        Config {
            output_stdout: true,
            ..Config::default()
        }
    }
    fn delivered(&self, dir: &Path) -> Vec<Value> {
        read_lines(&dir.join("out.jsonl"))
    }
    fn exactly_once(&self) -> bool {
        false
    }
    fn ordered(&self) -> bool {
        true
    }
    fn break_it(&self) -> Option<Config> {
        Some(Config {
            output_stdout: true,
            output_path: Some("/dev/full".into()),
            ..Config::default()
        })
    }
    fn heal(&self) -> bool {
        false
    }
}

struct CqlDest {
    target: CqlTarget,
}

impl Destination for CqlDest {
    fn name(&self) -> &'static str {
        "cql"
    }
    fn config(&self) -> Config {
        Config {
            output_cql: format!(
                "contact_points = [\"{}\"]\nkeyspace = \"sluice_demo\"\ntable = \"enriched\"\n\
                 consistency = \"ONE\"\nconcurrency = 16\n",
                self.target.addr
            ),
            ..Config::default()
        }
    }
    fn delivered(&self, _dir: &Path) -> Vec<Value> {
        self.target
            .select("SELECT id, envelope FROM sluice_demo.enriched")
            .into_iter()
            .map(|r| serde_json::from_str(r[1].as_deref().expect("envelope")).expect("JSON"))
            .collect()
    }
    fn exactly_once(&self) -> bool {
        // An upsert keyed by id: one row per record, however often it was sent.
        true
    }
    fn ordered(&self) -> bool {
        false
    }
    fn break_it(&self) -> Option<Config> {
        if !self.target.is_test_node() {
            eprintln!("SKIP cql failure phase: needs the CQL test node's fault injection");
            return None;
        }
        self.target.set_faults(Faults {
            error_ratio: 1.0,
            error_kind: Some(ErrorKind::Overloaded),
            ..Faults::default()
        });
        Some(self.config())
    }
    fn heal(&self) -> bool {
        self.target.set_faults(Faults::default());
        true
    }
}

struct WebhookDest {
    receiver: Receiver,
}

impl Destination for WebhookDest {
    fn name(&self) -> &'static str {
        "webhook"
    }
    fn config(&self) -> Config {
        Config {
            output_webhook: format!(
                "url = \"{}\"\nbatch_max_records = 100\nbatch_max_ms = 20\ntimeout_ms = 2000\n\
                 initial_backoff_ms = 20\nmax_backoff_ms = 200\n",
                self.receiver.url
            ),
            ..Config::default()
        }
    }
    fn delivered(&self, _dir: &Path) -> Vec<Value> {
        self.receiver.taken()
    }
    fn exactly_once(&self) -> bool {
        false
    }
    fn ordered(&self) -> bool {
        // Concurrent POSTs may arrive in any order (each envelope carries its seq).
        false
    }
    fn break_it(&self) -> Option<Config> {
        self.receiver
            .otherwise(Some(Answer::Status(503, None, "down")));
        Some(self.config())
    }
    fn heal(&self) -> bool {
        self.receiver.otherwise(None);
        true
    }
}

fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "user_id": format!("u{}", i % 50 + 1)}))
        .collect()
}

/// Wait until `ids` all arrived (or panic after `limit`); returns what arrived.
fn wait_delivered(d: &dyn Destination, dir: &Path, ids: &[String], limit: Duration) -> Vec<Value> {
    let until = Instant::now() + limit;
    loop {
        let got = d.delivered(dir);
        let have: std::collections::HashSet<&str> =
            got.iter().filter_map(|e| e["id"].as_str()).collect();
        let missing = ids.iter().filter(|i| !have.contains(i.as_str())).count();
        if missing == 0 {
            return got;
        }
        assert!(
            Instant::now() < until,
            "{}: {missing} of {} ids never arrived",
            d.name(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each id in `ids` arrived per the kind's guarantee, and nothing else did.
fn assert_guarantee(d: &dyn Destination, ids: &[String], got: &[Value]) {
    let mut copies: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in got {
        copies
            .entry(e["id"].as_str().expect("id"))
            .or_default()
            .push(e);
    }
    for id in ids {
        let c = copies
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{}: {id} never arrived", d.name()));
        if d.exactly_once() {
            assert_eq!(c.len(), 1, "{}: {id} arrived {} times", d.name(), c.len());
        }
        assert!(
            c.iter().all(|e| e == &c[0]),
            "{}: copies of {id} differ (at least once means the same envelope): {c:?}",
            d.name()
        );
        assert_eq!(c[0]["outcome"], "ok", "{}: {}", d.name(), c[0]);
    }
    assert_eq!(copies.len(), ids.len(), "{}: unknown ids arrived", d.name());
}

fn assert_order(d: &dyn Destination, got: &[Value]) {
    if !d.ordered() {
        return;
    }
    let mut last: HashMap<u64, u64> = HashMap::new();
    for e in got {
        let (p, s) = (e["partition"].as_u64().unwrap(), e["seq"].as_u64().unwrap());
        if let Some(prev) = last.insert(p, s) {
            assert!(s > prev, "{}: partition {p} seq {s} after {prev}", d.name());
        }
    }
}

fn compliance(d: &dyn Destination) {
    let started = Instant::now();
    // 1. Batches in, each id out.
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_in(&d.config(), dir.path());
    let ids = svc.post_all(&records("a", 1000), 100);
    svc.wait_quiescent(Duration::from_secs(30));
    let got = wait_delivered(d, dir.path(), &ids, Duration::from_secs(10));
    assert_guarantee(d, &ids, &got);
    assert_order(d, &got);
    let m = svc.get("/metrics").body;
    assert!(
        m.contains("sluice_records_emitted_total{outcome=\"ok\"} 1000"),
        "{}: emitted counts what the sink took",
        d.name()
    );
    drop(svc);

    // 2. A failing destination: records stay pending, /readyz says which sink.
    if let Some(cfg) = d.break_it() {
        let fdir = tempfile::tempdir().unwrap();
        let mut cfg = cfg;
        cfg.checkpoint = "interval_ms = 50\n".into();
        let svc = Service::start_in(&cfg, fdir.path());
        let failing = svc.post_all(&records("f", 200), 100);
        let until = Instant::now() + Duration::from_secs(10);
        let ready = loop {
            let r = svc.get("/readyz");
            if r.status == 503 || Instant::now() > until {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(ready.status, 503, "{}: /readyz while failing", d.name());
        assert!(
            ready.body.contains("output"),
            "{}: /readyz names the sink: {}",
            d.name(),
            ready.body
        );
        let status = svc.status();
        assert_eq!(
            status["pending"],
            200,
            "{}: kept pending: {status}",
            d.name()
        );
        assert!(
            !svc.get("/metrics")
                .body
                .contains("sluice_records_emitted_total{outcome=\"ok\"}"),
            "{}: nothing counted emitted",
            d.name()
        );
        if d.heal() {
            svc.wait_quiescent(Duration::from_secs(30));
            let got = wait_delivered(
                d,
                fdir.path(),
                &[ids.clone(), failing.clone()].concat(),
                Duration::from_secs(10),
            );
            let failing_copies: Vec<Value> = got
                .into_iter()
                .filter(|e| e["id"].as_str().is_some_and(|i| i.starts_with('f')))
                .collect();
            assert_guarantee(d, &failing, &failing_copies);
            assert_eq!(
                svc.get("/readyz").status,
                200,
                "{}: healthy again",
                d.name()
            );
        } else {
            println!(
                "{}: a failed write cannot be healed here (/dev/full)",
                d.name()
            );
        }
        drop(svc);
    }

    // 3. kill -9 mid-stream, restart: every acknowledged id arrives.
    let kdir = tempfile::tempdir().unwrap();
    let mut svc = Service::start_in(&d.config(), kdir.path());
    let mut acked = Vec::new();
    for b in 0..20 {
        let batch = records(&format!("k{b}-"), 100);
        match svc.try_post_json("/v1/records", &batch) {
            Some(r) if r.status == 202 => acked.extend(
                r.json()["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string()),
            ),
            Some(r) if r.status == 429 => {}
            Some(r) => panic!("{}: unexpected {}: {}", d.name(), r.status, r.body),
            None => panic!("{}: the service did not answer", d.name()),
        }
        if b == 12 {
            svc.kill9();
            break;
        }
    }
    let svc = Service::start_in(&d.config(), kdir.path());
    svc.wait_quiescent(Duration::from_secs(30));
    let got = wait_delivered(d, kdir.path(), &acked, Duration::from_secs(10));
    let ours: Vec<Value> = got
        .into_iter()
        .filter(|e| e["id"].as_str().is_some_and(|i| i.starts_with('k')))
        .collect();
    assert_guarantee(d, &acked, &ours);
    println!(
        "{}: compliance passed in {:.1} s ({} acknowledged before kill -9, {} envelopes after restart)",
        d.name(),
        started.elapsed().as_secs_f64(),
        acked.len(),
        ours.len()
    );
}

#[test]
fn file_sink_complies() {
    compliance(&FileDest);
}

#[test]
fn stdout_sink_complies() {
    compliance(&StdoutDest);
}

#[test]
fn cql_sink_complies() {
    let target = CqlTarget::start(&[(
        "sluice_demo.enriched(id text PRIMARY KEY, envelope text)",
        String::new(),
    )]);
    compliance(&CqlDest { target });
}

#[test]
fn webhook_sink_complies() {
    compliance(&WebhookDest {
        receiver: Receiver::start(),
    });
}
