//! The REST contract over real HTTP against the real binary: every status code with its
//! problem+json body, both body formats, `/v1/enrich` order, status and metrics.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Config, Service};

fn records(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "user_id": format!("u{}", i % 1000 + 1)}))
        .collect()
}

#[test]
fn array_and_ndjson_bodies_are_accepted_and_enriched() {
    let svc = Service::start(&Config::default());
    let r = svc.post_json("/v1/records", &records(3, "a"));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"accepted": 3, "ids": ["a-0", "a-1", "a-2"]})
    );

    let nd = b"{\"id\":\"n-0\",\"user_id\":\"u5\"}\n\n{\"user_id\":\"nobody\"}\n";
    let r = svc.post_as("/v1/records", Some("application/x-ndjson"), None, nd);
    assert_eq!(r.status, 202, "{}", r.body);
    let ids = r.json()["ids"].clone();
    assert_eq!(ids[0], "n-0");
    let generated = ids[1].as_str().unwrap().to_string();
    assert!(
        generated.starts_with("sluice:p"),
        "generated id {generated}"
    );

    let r = svc.post_json("/v1/records", &[]);
    assert_eq!(r.json(), json!({"accepted": 0, "ids": []}));

    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert!(dead.is_empty());
    assert_eq!(out.len(), 5);
    let by_id = |id: &str| out.iter().find(|e| e["id"] == id).cloned().unwrap();
    let a0 = by_id("a-0");
    assert_eq!(a0["outcome"], "ok");
    assert_eq!(a0["attempts"], 1);
    assert_eq!(a0["key"], "u1");
    assert_eq!(a0["record"]["enrichment"]["name"], "Ada");
    assert!(a0["latency_ms"].as_f64().unwrap() >= 0.0);
    let miss = by_id(&generated);
    assert_eq!(miss["outcome"], "miss");
    assert_eq!(miss["record"]["enrichment"], Value::Null);
}

#[test]
fn malformed_bodies_get_400_and_nothing_is_accepted() {
    let svc = Service::start(&Config::default());
    let p = svc
        .post_as(
            "/v1/records",
            Some("application/json"),
            None,
            b"[{\"user_id\":",
        )
        .problem(400);
    assert!(p["detail"].as_str().unwrap().contains("not valid JSON"));
    let p = svc
        .post_as(
            "/v1/records",
            Some("application/json"),
            None,
            b"{\"user_id\":\"u1\"}",
        )
        .problem(400);
    assert!(p["detail"].as_str().unwrap().contains("array"));
    let p = svc
        .post_as(
            "/v1/records",
            Some("application/x-ndjson"),
            None,
            b"{\"user_id\":\"u1\"}\n{nope\n",
        )
        .problem(400);
    assert!(p["detail"].as_str().unwrap().starts_with("line 2"), "{p}");
    svc.post_as("/v1/enrich", Some("application/json"), None, b"\xff\xfe")
        .problem(400);
    assert_eq!(svc.status()["partitions"][0]["accepted"], 0);
    assert_eq!(
        svc.status()["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["accepted"].as_u64().unwrap())
            .sum::<u64>(),
        0
    );
}

#[test]
fn wrong_content_type_is_415() {
    let svc = Service::start(&Config::default());
    svc.post_as("/v1/records", Some("text/csv"), None, b"user_id\nu1\n")
        .problem(415);
    svc.post_as("/v1/records", None, None, b"[]").problem(415);
}

#[test]
fn invalid_records_get_422_listing_index_and_pointer() {
    let svc = Service::start(&Config::default());
    let body = json!([
        {"id": "ok-1", "user_id": "u1"},
        {"id": "bad-1"},
        "not an object",
        {"id": ["x"], "user_id": {"nested": true}},
    ]);
    let p = svc
        .post_as(
            "/v1/records",
            Some("application/json"),
            None,
            body.to_string().as_bytes(),
        )
        .problem(422);
    let errors = p["errors"].as_array().unwrap();
    let pairs: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["pointer"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pairs,
        vec![(1, "/user_id"), (2, ""), (3, "/user_id"), (3, "/id")]
    );
    assert!(errors.iter().all(|e| e["message"].is_string()));
    assert!(p["detail"].as_str().unwrap().contains("3 of 4"));
    std::thread::sleep(Duration::from_millis(100));
    let (out, dead) = svc.finish();
    assert!(
        out.is_empty() && dead.is_empty(),
        "atomic: the good record was not accepted either"
    );
}

#[test]
fn limits_give_413_for_bytes_and_record_count() {
    let svc = Service::start(&Config {
        server: "max_body_bytes = 2000\nmax_records_per_request = 5\n".into(),
        ..Config::default()
    });
    let p = svc.post_json("/v1/records", &records(6, "x")).problem(413);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("max_records_per_request")
    );
    let big = vec![json!({"user_id": "u1", "pad": "x".repeat(3000)})];
    let p = svc.post_json("/v1/records", &big).problem(413);
    assert!(p["detail"].as_str().unwrap().contains("max_body_bytes"));
    assert_eq!(svc.post_json("/v1/records", &records(5, "y")).status, 202);
}

#[test]
fn auth_tokens_require_a_bearer_token_on_posts_only() {
    let svc = Service::start(&Config {
        server: "auth_tokens = [\"s3cret\", \"other\"]\n".into(),
        ..Config::default()
    });
    let body = serde_json::to_vec(&records(1, "t")).unwrap();
    let r = svc.post_as("/v1/records", Some("application/json"), None, &body);
    r.problem(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    svc.post_as(
        "/v1/records",
        Some("application/json"),
        Some("wrong"),
        &body,
    )
    .problem(401);
    svc.post_as("/v1/enrich", Some("application/json"), None, &body)
        .problem(401);
    svc.post_as("/v1/checkpoint", None, None, b"").problem(401);
    assert_eq!(
        svc.post_as(
            "/v1/records",
            Some("application/json"),
            Some("other"),
            &body
        )
        .status,
        202
    );
    assert_eq!(svc.get("/v1/status").status, 200);
    assert_eq!(svc.get("/healthz").status, 200);
}

#[test]
fn overload_gives_429_with_retry_after_and_accepts_nothing_of_the_batch() {
    // One partition, one record in flight at a time, 300 ms each, backlog of 5.
    let svc = Service::start(&Config {
        pipeline: "partitions = 1\ncapacity = 1\nbacklog = 5\ntimeout_ms = 20000\n".into(),
        lookup: "attempt_timeout_ms = 10000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    let slow = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{prefix}-{i}"), "user_id": "u1", "delay": 300}))
            .collect()
    };
    assert_eq!(svc.post_json("/v1/records", &slow("first", 6)).status, 202);
    std::thread::sleep(Duration::from_millis(100));
    let r = svc.post_json("/v1/records", &slow("refused", 3));
    let p = r.problem(429);
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was accepted")
    );
    let accepted: u64 = svc.status()["partitions"][0]["accepted"].as_u64().unwrap();
    assert_eq!(accepted, 6);
    svc.wait_quiescent(Duration::from_secs(20));
    let (out, dead) = svc.finish();
    assert_eq!(out.len() + dead.len(), 6);
    assert!(
        out.iter()
            .all(|e| e["id"].as_str().unwrap().starts_with("first-"))
    );
}

#[test]
fn a_batch_one_partition_can_never_hold_is_413_not_429() {
    let svc = Service::start(&Config {
        pipeline: "partitions = 1\ncapacity = 2\nbacklog = 3\n".into(),
        ..Config::default()
    });
    let p = svc
        .post_json("/v1/records", &records(6, "big"))
        .problem(413);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("send smaller batches"),
        "{p}"
    );
    assert_eq!(svc.post_json("/v1/records", &records(5, "ok")).status, 202);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, _) = svc.finish();
    assert_eq!(out.len(), 5);
}

#[test]
fn enrich_answers_in_request_order() {
    let svc = Service::start(&Config {
        pipeline: "mode = \"unordered\"\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    // Later records complete first (descending delays), yet results come in request order.
    let body: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("e-{i}"), "user_id": format!("u{}", i + 1), "delay": 50 - i}))
        .chain(std::iter::once(json!({"id": "e-miss", "user_id": "ghost"})))
        .collect();
    let r = svc.post_json("/v1/enrich", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    let ids: Vec<&str> = results.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let expect: Vec<String> = (0..50)
        .map(|i| format!("e-{i}"))
        .chain(["e-miss".to_string()])
        .collect();
    assert_eq!(ids, expect);
    assert_eq!(results[0]["record"]["enrichment"]["name"], "Ada");
    assert_eq!(results[50]["outcome"], "miss");
    svc.wait_quiescent(Duration::from_secs(5));
    let (out, dead) = svc.finish();
    assert!(
        out.is_empty() && dead.is_empty(),
        "/v1/enrich results are not written to sinks"
    );
}

#[test]
fn status_metrics_health_and_unknown_routes() {
    let svc = Service::start(&Config::default());
    svc.post_all(&records(100, "m"), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    let s = svc.status();
    assert_eq!(s["ready"], true);
    assert_eq!(s["mode"], "ordered");
    assert_eq!(s["pending"], 0);
    let parts = s["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let accepted: u64 = parts.iter().map(|p| p["accepted"].as_u64().unwrap()).sum();
    let emitted: u64 = parts.iter().map(|p| p["emitted"].as_u64().unwrap()).sum();
    assert_eq!((accepted, emitted), (100, 100));

    let m = svc.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("sluice_records_accepted_total 100"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("sluice_records_emitted_total{outcome=\"ok\"} 100")
    );
    assert!(
        m.body
            .contains("sluice_http_requests_total{route=\"/v1/records\",status=\"202\"} 2")
    );
    assert!(m.body.contains("sluice_lookup_duration_seconds_bucket"));
    assert!(m.body.contains("sluice_partition_in_flight_records"));

    assert_eq!(svc.get("/healthz").status, 200);
    assert_eq!(svc.get("/readyz").json(), json!({"ready": true}));
    svc.get("/v2/nothing").problem(404);
    svc.get("/v1/records").problem(405);
    let c = svc.post_as("/v1/checkpoint", None, None, b"");
    assert_eq!(c.status, 200, "{}", c.body);
    let c = c.json();
    assert_eq!(c["records"], 0, "nothing pending when quiescent");
    assert!(c["bytes"].as_u64().unwrap() > 0);
    assert!(c["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(svc.status()["last_checkpoint"]["at"], c["at"]);
    assert!(
        svc.get("/metrics")
            .body
            .contains("sluice_checkpoint_age_seconds")
    );
}

#[test]
fn draining_node_answers_503_then_finishes_its_records() {
    let svc = Service::start(&Config {
        pipeline: "partitions = 1\ntimeout_ms = 20000\n".into(),
        lookup: "attempt_timeout_ms = 10000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    let slow: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("s-{i}"), "user_id": "u1", "delay": 1500}))
        .collect();
    assert_eq!(svc.post_json("/v1/records", &slow).status, 202);
    // SIGTERM while records are in flight: the node keeps answering, but with 503.
    svc.send_term();
    std::thread::sleep(Duration::from_millis(200));
    let r = svc.post_json("/v1/records", &records(1, "late"));
    r.problem(503);
    svc.get("/readyz").problem(503);
    assert_eq!(svc.status()["ready"], false);
    let (out, dead) = svc.finish();
    assert_eq!(out.len(), 3, "in-flight records finished during the drain");
    assert!(dead.is_empty());
}

// ---- slow and odd clients: raw sockets, byte by byte -----------------------------------

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use support::Reply;

fn host(base: &str) -> &str {
    base.trim_start_matches("http://")
}

fn port(base: &str) -> u16 {
    host(base).rsplit(':').next().unwrap().parse().unwrap()
}

/// A raw connection with a read timeout.
fn connect(base: &str, read_timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(host(base)).expect("connect");
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s
}

/// Everything up to EOF (the requests here say `Connection: close`), parsed.
fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| {
        panic!(
            "no complete answer ({e}); got {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    parse_reply(&raw)
}

/// One answer on a kept-alive connection (its head and `Content-Length` bytes of body).
fn read_one(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read an answer");
        assert!(n > 0, "closed before a whole answer");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_reply(&raw);
            let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
            if raw.len() >= end + 4 + len {
                return r;
            }
        }
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Send one request as it is and read the answer.
fn raw(base: &str, request: &str, body: &[u8]) -> Reply {
    let mut s = connect(base, Duration::from_secs(20));
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(&mut s)
}

/// The binary run directly: logs at info captured line by line, any shutdown grace.
struct Node {
    child: Child,
    base: String,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(config: &Config, grace_ms: u64) -> Node {
        Node::start_limited(config, grace_ms, None)
    }

    /// [`Node::start`] with the process's open-file limit set to `nofile`.
    fn start_limited(config: &Config, grace_ms: u64, nofile: Option<u32>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let text = config.render(dir.path()).replace(
            "shutdown_grace_ms = 20000",
            &format!("shutdown_grace_ms = {grace_ms}"),
        );
        std::fs::write(&path, text).unwrap();
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                    support::binary(),
                ]);
                c
            }
            None => Command::new(support::binary()),
        };
        let mut child = cmd
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("sluice listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for l in stderr.lines().map_while(Result::ok) {
                eprintln!("{l}");
                let _ = tx.send(l);
            }
        });
        let node = Node {
            child,
            base,
            log,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while raw(
            &node.base,
            "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            b"",
        )
        .status
            != 200
        {
            assert!(Instant::now() < until, "not ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    /// The first log line containing `what` (within 10 s).
    fn log_line(&self, what: &str) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line with {what:?}"),
            }
        }
    }

    fn get_json(&self, path: &str) -> Value {
        raw(
            &self.base,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        )
        .json()
    }

    /// SIGTERM; the exit code and how long the process took to exit.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn in_flight(status: &Value) -> u64 {
    status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["in_flight"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_stalled_body_gets_408_problem_and_the_connection_is_closed() {
    let svc = Service::start(&Config::default());
    // Headers complete, then 12 of the announced 100 bytes, then nothing.
    let mut body = connect(&svc.base, Duration::from_secs(20));
    let started = Instant::now();
    body.write_all(
        b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n[{\"user_id\":",
    )
    .unwrap();
    // Headers that never end: actix's request-head timeout (a bare 408).
    let mut head = connect(&svc.base, Duration::from_secs(20));
    head.write_all(b"POST /v1/records HTTP/1.1\r\nHost: t\r\n")
        .unwrap();

    let r = read_reply(&mut body);
    let waited = started.elapsed();
    let p = r.problem(408);
    assert_eq!(p["type"], "urn:sluice:problem:request-timeout");
    assert!(
        p["detail"].as_str().unwrap().contains("12 of 100 bytes"),
        "{p}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "408 after {waited:?}"
    );
    let mut rest = Vec::new();
    head.read_to_end(&mut rest)
        .expect("the head timeout closes the connection");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // Nothing of the stalled request was accepted; the service still serves.
    assert_eq!(svc.status()["pending"], 0);
    assert_eq!(
        svc.post_json("/v1/records", &records(1, "after")).status,
        202
    );
}

#[test]
fn connections_are_capped_and_the_limits_are_logged_at_start() {
    // 512 open files: 256 are kept for the node's own files, 256 (128 per worker) for
    // connections.
    let node = Node::start_limited(&Config::default(), 20000, Some(512));
    let line: Value = serde_json::from_str(&node.log_line("HTTP limits")).unwrap();
    assert_eq!(line["max_connections"], 256, "{line}");
    assert_eq!(line["per_worker"], 128, "{line}");
    assert_eq!(line["head_timeout_ms"], 5000, "{line}");
    assert_eq!(line["body_timeout_ms"], 30000, "{line}");
    assert_eq!(line["body_idle_timeout_ms"], 5000, "{line}");
    // Fill every slot with a kept-alive connection (answered once, so surely taken; idle
    // ones are closed after 5 s, and all of this takes far less).
    let held: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = connect(&node.base, Duration::from_secs(5));
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            assert_eq!(read_one(&mut s).status, 200);
            s
        })
        .collect();
    let mut extra = connect(&node.base, Duration::from_millis(1000));
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    match extra.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("connection 257 of a cap of 256 was served: {other:?}"),
    }
    // Slots free: the waiting connection is taken and served.
    drop(held);
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = read_reply(&mut extra);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn shutdown_with_a_waiting_enrich_honours_the_grace() {
    let mut node = Node::start(
        &Config {
            pipeline: "timeout_ms = 60000\n".into(),
            lookup: "attempt_timeout_ms = 60000\n".into(),
            memory: "delay_field = \"/_sim/delay_ms\"\n".into(),
            ..Config::default()
        },
        1000,
    );
    let body = serde_json::to_vec(
        &(0..3)
            .map(|i| json!({"id": format!("slow-{i}"), "user_id": "u1", "_sim": {"delay_ms": 30000}}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let base = node.base.clone();
    let client = std::thread::spawn(move || {
        raw(
            &base,
            &format!(
                "POST /v1/enrich HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            &body,
        )
    });
    let until = Instant::now() + Duration::from_secs(10);
    while in_flight(&node.get_json("/v1/status")) < 3 {
        assert!(Instant::now() < until, "the records never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, took) = node.terminate();
    eprintln!("SIGTERM to exit: {took:?} (shutdown_grace_ms = 1000)");
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_millis(2000),
        "exit took {took:?} with shutdown_grace_ms = 1000"
    );
    let r = client.join().unwrap();
    let p = r.problem(503);
    assert!(p["detail"].as_str().unwrap().contains("grace"), "{p}");
}

/// Sockets of the local `port` in TCP state CLOSE_WAIT (the peer closed, we did not).
fn close_wait(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3
                && cols[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                && cols[3] == "08"
        })
        .count()
}

#[test]
fn an_enrich_client_that_goes_away_releases_its_connection_at_once() {
    let svc = Service::start(&Config {
        pipeline: "timeout_ms = 20000\n".into(),
        lookup: "attempt_timeout_ms = 20000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    let body = br#"[{"id":"gone","user_id":"u1","delay":4000}]"#;
    let mut s = connect(&svc.base, Duration::from_secs(5));
    s.write_all(
        format!(
            "POST /v1/enrich HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(body).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while in_flight(&svc.status()) < 1 {
        assert!(Instant::now() < until, "the record never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        close_wait(port(&svc.base)),
        0,
        "the server still holds the closed connection (its handler waits for the record)"
    );
    // The record itself ends as usual (its envelope goes nowhere); the node is quiet again.
    svc.wait_quiescent(Duration::from_secs(15));
    let (out, dead) = svc.finish();
    assert!(out.is_empty() && dead.is_empty());
}

#[test]
fn a_content_encoding_other_than_identity_is_415() {
    let svc = Service::start(&Config::default());
    // A gzip member's first bytes: parsed as JSON they would be a 400.
    let gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
    for path in ["/v1/records", "/v1/enrich"] {
        let r = raw(
            &svc.base,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                gz.len()
            ),
            gz,
        );
        let p = r.problem(415);
        assert_eq!(p["type"], "urn:sluice:problem:unsupported-content-encoding");
        assert!(p["detail"].as_str().unwrap().contains("`gzip`"), "{p}");
        assert_eq!(r.header("accept-encoding"), Some("identity"));
    }
    let body = br#"[{"id":"plain","user_id":"u1"}]"#;
    let r = raw(
        &svc.base,
        &format!(
            "POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Encoding: identity\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        body,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, _) = svc.finish();
    assert_eq!(out.len(), 1, "only the identity-encoded record");
}

#[test]
fn head_works_where_get_does_and_405_says_what_is_allowed() {
    let svc = Service::start(&Config::default());
    let req = |method: &str, path: &str| {
        raw(
            &svc.base,
            &format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        )
    };
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status"] {
        let get = req("GET", path);
        let head = req("HEAD", path);
        assert_eq!(
            (get.status, head.status),
            (200, 200),
            "{path}: {}",
            head.body
        );
        assert_eq!(head.body, "", "{path}: HEAD has no body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
    }
    // Standalone: /v1/cluster is 404 either way.
    assert_eq!(req("GET", "/v1/cluster").status, 404);
    assert_eq!(req("HEAD", "/v1/cluster").status, 404);

    for (method, path, allow) in [
        ("GET", "/v1/records", "POST"),
        ("PUT", "/v1/enrich", "POST"),
        ("GET", "/v1/checkpoint", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/v1/status", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ] {
        let r = req(method, path);
        let p = r.problem(405);
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert!(p["detail"].as_str().unwrap().contains(allow), "{p}");
    }
    req("GET", "/v2/nothing").problem(404);
}

#[test]
fn an_enrich_client_that_goes_away_frees_the_slots_of_its_waiting_records() {
    let svc = Service::start(&Config {
        pipeline: "partitions = 1\ncapacity = 2\ntimeout_ms = 60000\n".into(),
        lookup: "attempt_timeout_ms = 60000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    // 40 slow records on one partition with room for 2 in flight: 38 wait behind them.
    let records: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"id":"g{i}","user_id":"u1","delay":1500}}"#))
        .collect();
    let body = format!("[{}]", records.join(","));
    let mut s = connect(&svc.base, Duration::from_secs(5));
    s.write_all(
        format!(
            "POST /v1/enrich HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while in_flight(&svc.status()) < 2 {
        assert!(Instant::now() < until, "the records never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    // Without the caller, the waiting records are not looked up: 40 × 1.5 s / 2 slots
    // would take 30 s; the two in flight finish, the rest end at once.
    let started = Instant::now();
    svc.wait_quiescent(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // And the node takes new work right away.
    let r = svc.post_json("/v1/enrich", &[json!({"id": "next", "user_id": "u1"})]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_listen_queue_holds_1024_waiting_connections() {
    let svc = Service::start(&Config::default());
    let Ok(out) = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", port(&svc.base))])
        .output()
    else {
        eprintln!("SKIP the_listen_queue_holds_1024_waiting_connections: `ss` is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // LISTEN  Recv-Q  Send-Q(= the backlog)  local  peer
    let backlog: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlog, ["1024"], "{text}");
}

#[test]
fn expect_100_continue_with_a_too_large_body_gets_413_first() {
    use std::io::Read;
    let svc = Service::start(&Config {
        server: "max_body_bytes = 1000\n".into(),
        ..Config::default()
    });
    let mut s = connect(&svc.base, Duration::from_secs(5));
    s.write_all(
        b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // The client waits for `100 Continue` before sending the body: the answer must be 413.
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    // A small body still gets its 100 and is taken.
    let body = br#"[{"id":"e1","user_id":"u1"}]"#;
    let mut s = connect(&svc.base, Duration::from_secs(5));
    s.write_all(
        format!(
            "POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut cont = [0u8; 25];
    s.read_exact(&mut cont).unwrap();
    assert!(
        cont.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    s.write_all(body).unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 202, "{}", r.body);
}
