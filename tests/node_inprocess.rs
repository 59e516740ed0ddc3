//! Nodes run in-process through `sluice::node::run(settings, listener, shutdown)` — the
//! library entry the binary itself uses — each on its own thread with its own actix system,
//! talking real HTTP over loopback: a standalone node, and two cluster members on a real etcd.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::etcd::EtcdCluster;
use support::{Config, read_lines};

/// A node running on a thread of this process.
struct InProcess {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), sluice::node::NodeError>>>,
    agent: ureq::Agent,
}

impl InProcess {
    fn start(config: &Config, dir: &Path) -> InProcess {
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config.render(dir)).expect("write config");
        let settings =
            sluice::settings::load_from(Some(&path), std::iter::empty()).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(sluice::node::run(settings, listener, async {
                let _ = stopped.await;
            }))
        });
        let node = InProcess {
            base,
            stop: Some(stop),
            thread: Some(thread),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while node.get("/readyz").0 != 200 {
            assert!(Instant::now() < until, "in-process node not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    fn get(&self, path: &str) -> (u16, String) {
        match self.agent.get(format!("{}{path}", self.base)).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    fn post(&self, records: &[Value]) -> (u16, Value) {
        let body = serde_json::to_vec(records).expect("json");
        let mut r = self
            .agent
            .post(format!("{}/v1/records", self.base))
            .header("content-type", "application/json")
            .send(&body[..])
            .expect("POST");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Resolve the shutdown future and wait for `run` to return (graceful stop).
    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let result = self
            .thread
            .take()
            .expect("thread")
            .join()
            .expect("node thread");
        assert!(result.is_ok(), "node::run ended with {result:?}");
    }
}

fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "user_id": format!("u{}", i % 50)}))
        .collect()
}

fn ids(dirs: &[&Path]) -> Vec<String> {
    let mut out: Vec<String> = dirs
        .iter()
        .flat_map(|d| read_lines(&d.join("out.jsonl")))
        .map(|e| e["id"].as_str().unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn a_standalone_node_runs_in_process_and_stops_on_its_shutdown_future() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = InProcess::start(&Config::default(), dir.path());
    let (status, body) = node.post(&records("s", 200));
    assert_eq!(status, 202, "{body}");
    node.stop();
    let mut expected: Vec<String> = (0..200).map(|i| format!("s-{i}")).collect();
    expected.sort();
    assert_eq!(
        ids(&[dir.path()]),
        expected,
        "every record once, flushed at stop"
    );
}

#[test]
fn two_cluster_members_run_in_one_process() {
    let Some(etcd) = EtcdCluster::try_start_or_skip("two_cluster_members_run_in_one_process", 1)
    else {
        return;
    };
    let config = |node: &str| Config {
        pipeline: "partitions = 4\n".into(),
        cluster: format!(
            "enabled = true\nnode = \"{node}\"\netcd = [\"{}\"]\nprefix = \"/sluice-test/inprocess\"\nlease_ttl_ms = 2000\n",
            etcd.endpoint(0)
        ),
        ..Config::default()
    };
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = InProcess::start(&config("a"), da.path());
    let b = InProcess::start(&config("b"), db.path());
    // Wait until both own two partitions.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = a.get("/v1/cluster");
        let view: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let owners: Vec<&str> = view["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["owner"].as_str()).collect())
            .unwrap_or_default();
        if owners.iter().filter(|o| **o == "a").count() == 2
            && owners.iter().filter(|o| **o == "b").count() == 2
        {
            break;
        }
        assert!(Instant::now() < until, "not balanced: {view}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everything goes to `a`; half of it belongs to `b`'s partitions and is forwarded.
    let (status, body) = a.post(&records("c", 400));
    assert_eq!(status, 202, "{body}");
    a.stop();
    b.stop();
    let mut expected: Vec<String> = (0..400).map(|i| format!("c-{i}")).collect();
    expected.sort();
    assert_eq!(
        ids(&[da.path(), db.path()]),
        expected,
        "every record exactly once"
    );
    assert!(
        !read_lines(&db.path().join("out.jsonl")).is_empty(),
        "b emitted the records of its partitions"
    );
}
