//! A slow disk under load (issue 11): fsync made slow in the real binary (an `LD_PRELOAD`
//! library, `tests/support/faults.rs`) while many clients post. The journal's channel must
//! never block an actor: over-the-limit requests are refused whole (429, `Retry-After`,
//! a problem naming the journal's lag) and answer at once, the ingress and the partitions keep
//! serving (`/v1/enrich` answers in milliseconds while fsyncs take 500 ms), and once the disk
//! is fast again every acknowledged record is emitted exactly once — across kill -9 for
//! `ack = "durable"` too.
//!
//! The node's journal limit here is 8 × `server.max_body_bytes` = 512 KiB of request data.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::faults::{self, Faults};
use support::{Config, Service, assert_exactly_once};

/// The two tests each run a node and many clients: one at a time on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Every answer must come within this, however slow the disk.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

fn library_or_skip(test: &str) -> Option<&'static Path> {
    match faults::library() {
        Ok(lib) => Some(lib),
        Err(e) => {
            eprintln!("SKIP {test}: the LD_PRELOAD fault library cannot be built ({e})");
            None
        }
    }
}

fn config(ack: &str, env: Vec<(String, String)>) -> Config {
    Config {
        server: "max_body_bytes = 65536\nmax_records_per_request = 100\n".into(),
        // Two partitions on two threads: the load goes to one, the probes to the other.
        pipeline: "partitions = 2\nthreads = 2\ncapacity = 20\nbacklog = 20000\n\
                   mode = \"unordered\"\ntimeout_ms = 60000\n"
            .into(),
        lookup: "attempt_timeout_ms = 30000\n".into(),
        checkpoint: format!("ack = \"{ack}\"\ninterval_ms = 1000\n"),
        env,
        ..Config::default()
    }
}

/// A client with a bound of its own: a request that takes longer is a hang.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One HTTP answer: status, `Retry-After`, body; `None` when the connection failed.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
    took: Duration,
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Option<Answer> {
    let t = Instant::now();
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .ok()?;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.body_mut().read_to_string().ok()?;
    Some(Answer {
        status: r.status().as_u16(),
        retry_after,
        body,
        took: t.elapsed(),
    })
}

fn get(agent: &ureq::Agent, url: &str) -> Duration {
    let t = Instant::now();
    let r = agent.get(url).call().expect("GET");
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    t.elapsed()
}

/// The partition of each key `u1`..`u40` (asked with `/v1/enrich`, which is not journaled).
fn partitions_of_keys(svc: &Service) -> HashMap<String, u64> {
    let body: Vec<Value> = (1..=40)
        .map(|i| json!({"user_id": format!("u{i}")}))
        .collect();
    let r = svc.post_json("/v1/enrich", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(1..)
        .map(|(e, i)| (format!("u{i}"), e["partition"].as_u64().expect("partition")))
        .collect()
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    accepted: Vec<String>,
    /// Ids of requests that got no answer (the node was killed meanwhile).
    in_doubt: Vec<String>,
    journal_429: usize,
    partition_429: usize,
    slowest: Duration,
    sample_refusal: Option<String>,
}

impl Seen {
    fn merge(&mut self, o: Seen) {
        self.accepted.extend(o.accepted);
        self.in_doubt.extend(o.in_doubt);
        self.journal_429 += o.journal_429;
        self.partition_429 += o.partition_429;
        self.slowest = self.slowest.max(o.slowest);
        if self.sample_refusal.is_none() {
            self.sample_refusal = o.sample_refusal;
        }
    }
}

/// Post `per_request` records of keys `keys` (padded to ~700 bytes) until `stop`, checking
/// every refusal: a 429 problem with `Retry-After` naming the journal's lag, or one naming a
/// full partition; anything else (a 503, a 500) fails the test.
fn client(
    url: &str,
    client: usize,
    keys: &[String],
    per_request: usize,
    stop: &AtomicBool,
) -> Seen {
    let agent = agent();
    let pad = "x".repeat(600);
    let mut seen = Seen::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let ids: Vec<String> = (0..per_request)
            .map(|i| format!("c{client}-{n}-{i}"))
            .collect();
        let body: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": id, "user_id": keys[(n + i) % keys.len()], "pad": pad}))
            .collect();
        n += 1;
        let Some(a) = post(&agent, url, &serde_json::to_vec(&body).expect("json")) else {
            seen.in_doubt.extend(ids);
            continue;
        };
        seen.slowest = seen.slowest.max(a.took);
        match a.status {
            202 => seen.accepted.extend(ids),
            429 => {
                let p: Value = serde_json::from_str(&a.body).expect("problem+json");
                assert_eq!(p["status"], 429, "{}", a.body);
                assert!(a.retry_after.is_some(), "429 without Retry-After");
                let detail = p["detail"].as_str().unwrap_or_default();
                if detail.starts_with("the journal is ") {
                    assert!(
                        detail.contains("behind") && detail.contains("the disk is slow"),
                        "{detail}"
                    );
                    seen.journal_429 += 1;
                    seen.sample_refusal.get_or_insert(detail.to_string());
                } else {
                    assert!(detail.starts_with("partition "), "{detail}");
                    seen.partition_429 += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            s => panic!("unexpected status {s}: {}", a.body),
        }
    }
    seen
}

/// `sluice_records_emitted_total` summed over outcomes.
fn emitted(agent: &ureq::Agent, base: &str) -> u64 {
    let text = agent
        .get(format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("sluice_records_emitted_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_slow_disk_refuses_requests_at_the_edge_and_freezes_no_actor() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lib) =
        library_or_skip("a_slow_disk_refuses_requests_at_the_edge_and_freezes_no_actor")
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let faults = Faults::new(&tmp.path().join("faults"));
    // ack = "received": nothing waits for the fsync, so only the journal's bound holds the
    // clients back.
    let svc = Service::start(&config("received", faults.env(lib)));
    let parts = partitions_of_keys(&svc);
    let load: Vec<String> = parts
        .iter()
        .filter(|(_, p)| **p == 0)
        .map(|(k, _)| k.clone())
        .collect();
    let probe_key = parts
        .iter()
        .find(|(_, p)| **p == 1)
        .map(|(k, _)| k.clone())
        .expect("a key of partition 1");
    assert!(!load.is_empty());

    faults.delay_fsync(500);
    let url = format!("{}/v1/records", svc.base);
    let stop = AtomicBool::new(false);
    let agent = agent();
    let emitted_before = emitted(&agent, &svc.base);
    let (seen, probes, reads, emitted_during) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|c| {
                let (url, load, stop) = (&url, &load, &stop);
                s.spawn(move || client(url, c, load, 10, stop))
            })
            .collect();
        // Probes on the quiet partition: through the ingress and a partition actor.
        let started = Instant::now();
        let (mut probes, mut reads) = (Vec::new(), Vec::new());
        let enrich = serde_json::to_vec(&json!([{"user_id": probe_key}])).expect("json");
        std::thread::sleep(Duration::from_millis(500));
        while started.elapsed() < Duration::from_secs(4) {
            let a =
                post(&agent, &format!("{}/v1/enrich", svc.base), &enrich).expect("enrich answers");
            assert_eq!(a.status, 200, "{}", a.body);
            probes.push(a.took);
            reads.push(get(&agent, &format!("{}/v1/status", svc.base)));
            reads.push(get(&agent, &format!("{}/metrics", svc.base)));
            std::thread::sleep(Duration::from_millis(50));
        }
        let emitted_during = emitted(&agent, &svc.base);
        stop.store(true, Ordering::Release);
        let mut seen = Seen::default();
        for c in clients {
            seen.merge(c.join().expect("client"));
        }
        (seen, probes, reads, emitted_during)
    });
    let delayed = faults.calls().len();
    faults.delay_fsync(0);
    let probe_median = median(probes.clone());
    eprintln!(
        "slow disk, ack=received: {} accepted, {} x 429 (journal), {} x 429 (partition), slowest answer {:?}; \
         /v1/enrich probes: median {:?}, max {:?}; status/metrics max {:?}; emitted {} -> {}; \
         {delayed} fsyncs delayed\n  e.g. {:?}",
        seen.accepted.len(),
        seen.journal_429,
        seen.partition_429,
        seen.slowest,
        probe_median,
        probes.iter().max(),
        reads.iter().max(),
        emitted_before,
        emitted_during,
        seen.sample_refusal,
    );
    assert!(delayed > 0, "the fault library delayed no fsync");
    // (1) Over the limit: refused whole at once, naming the journal; nothing hangs.
    assert!(
        seen.journal_429 > 0,
        "no request was refused for the journal's lag"
    );
    assert!(
        seen.slowest < ANSWER_BOUND,
        "a request took {:?}",
        seen.slowest
    );
    // (2) No actor frozen: the ingress and a partition answer an enrich in far less than
    // one fsync; status and metrics answer; accepted records keep being emitted.
    assert!(
        probe_median < Duration::from_millis(150),
        "/v1/enrich took {probe_median:?} (median) while fsyncs take 500 ms: an actor waits for the journal"
    );
    assert!(probes.iter().all(|t| *t < ANSWER_BOUND));
    assert!(
        reads.iter().all(|t| *t < Duration::from_secs(2)),
        "{reads:?}"
    );
    assert!(
        emitted_during > emitted_before,
        "nothing was emitted while the disk was slow"
    );
    // (3) Disk fast again: every acknowledged record exactly once.
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    assert_exactly_once(&seen.accepted, &out, &dead);
}

#[test]
fn durable_acknowledgements_survive_a_slow_disk_and_kill_9() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lib) = library_or_skip("durable_acknowledgements_survive_a_slow_disk_and_kill_9")
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let faults = Faults::new(&tmp.path().join("faults"));
    let dir = tmp.path().join("node");
    std::fs::create_dir_all(&dir).expect("node dir");
    let cfg = config("durable", faults.env(lib));
    let mut svc = Service::start_in(&cfg, &dir);
    let keys: Vec<String> = (1..=40).map(|i| format!("u{i}")).collect();

    faults.delay_fsync(300);
    let url = format!("{}/v1/records", svc.base);
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        // 24 clients × 50 records (~36 KB a request): more than the 512 KiB the journal may
        // lag while an fsync takes 300 ms.
        let clients: Vec<_> = (0..24)
            .map(|c| {
                let (url, keys, stop) = (&url, &keys, &stop);
                s.spawn(move || client(url, c, keys, 50, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        // kill -9 in the middle of it: requests in flight get no answer (in doubt).
        stop.store(true, Ordering::Release);
        svc.kill9();
        let mut seen = Seen::default();
        for c in clients {
            seen.merge(c.join().expect("client"));
        }
        seen
    });
    eprintln!(
        "slow disk, ack=durable: {} accepted, {} in doubt, {} x 429 (journal), {} x 429 (partition), \
         slowest answer {:?}\n  e.g. {:?}",
        seen.accepted.len(),
        seen.in_doubt.len(),
        seen.journal_429,
        seen.partition_429,
        seen.slowest,
        seen.sample_refusal,
    );
    assert!(
        seen.journal_429 > 0,
        "no request was refused for the journal's lag"
    );
    assert!(
        seen.slowest < ANSWER_BOUND,
        "a request took {:?}",
        seen.slowest
    );
    assert!(!seen.accepted.is_empty());

    // Restart on a fast disk: every 202 exactly once, a request without an answer at most
    // once (whole or not at all), nothing else.
    faults.heal();
    let svc = Service::start_in(&cfg, &dir);
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    let doubt: HashSet<&str> = seen.in_doubt.iter().map(String::as_str).collect();
    let (out_sure, dead_sure): (Vec<Value>, Vec<Value>) = (
        out.iter()
            .filter(|e| !doubt.contains(e["id"].as_str().unwrap_or("")))
            .cloned()
            .collect(),
        dead.iter()
            .filter(|e| !doubt.contains(e["id"].as_str().unwrap_or("")))
            .cloned()
            .collect(),
    );
    assert_exactly_once(&seen.accepted, &out_sure, &dead_sure);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in out.iter().chain(&dead) {
        *count.entry(e["id"].as_str().expect("id")).or_default() += 1;
    }
    assert!(
        doubt
            .iter()
            .all(|id| count.get(id).copied().unwrap_or(0) <= 1),
        "a record of an unanswered request was emitted twice"
    );
}
