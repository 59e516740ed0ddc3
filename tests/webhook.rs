//! Webhook sink against a real local receiver: batching, retries with the same
//! Idempotency-Key, refusals to the dead letter, timeouts, backpressure up to 429s at
//! ingress, kill -9 (at least once, the very same envelopes) and a webhook dead letter.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::webhook::{Answer, Post, Receiver};
use support::{Config, Reply, Service};

fn config(r: &Receiver, extra: &str) -> Config {
    Config {
        output_webhook: format!("url = \"{}\"\n{extra}", r.url),
        ..Config::default()
    }
}

fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "user_id": format!("u{}", i % 50 + 1)}))
        .collect()
}

/// POST one request that must be accepted whole; returns its ids.
fn accept(svc: &Service, records: &[Value]) -> Vec<String> {
    let r = svc.post_json("/v1/records", records);
    assert_eq!(r.status, 202, "{}", r.body);
    ids_of(&r)
}

fn ids_of(r: &Reply) -> Vec<String> {
    r.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("id").to_string())
        .collect()
}

fn id_set(envelopes: &[Value]) -> BTreeSet<String> {
    envelopes
        .iter()
        .map(|e| e["id"].as_str().expect("envelope id").to_string())
        .collect()
}

fn expect_ids(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// The sum of the samples of metric `name` whose labels include every `labels` pair.
fn metric(svc: &Service, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = svc.get("/metrics").body;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().expect("metric value"))
        })
        .sum()
}

/// Poll `/v1/status` until its `sink_problems` mention `problem`; returns that status.
fn wait_status(svc: &Service, problem: &str, limit: Duration) -> Value {
    let until = Instant::now() + limit;
    loop {
        let s = svc.status();
        if s["sink_problems"].to_string().contains(problem) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "sink_problems never named {problem:?} in {limit:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll a file sink until it holds `n` lines.
fn wait_lines(path: &std::path::Path, n: usize, limit: Duration) -> Vec<Value> {
    let until = Instant::now() + limit;
    loop {
        let lines = support::read_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "{} holds {} lines of {n} after {limit:?}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every POST's NDJSON body, content type and key as the contract says.
fn assert_well_formed(posts: &[Post]) {
    for p in posts {
        assert_eq!(p.content_type.as_deref(), Some("application/x-ndjson"));
        let key = p.idempotency_key.as_deref().expect("Idempotency-Key");
        assert!(key.starts_with("sluice-output-"), "{key}");
        assert!(p.body.ends_with('\n'), "NDJSON ends with a newline");
        assert_eq!(p.body.lines().count(), p.envelopes.len());
        for e in &p.envelopes {
            assert!(e.is_object() && e["id"].is_string(), "{e}");
        }
    }
}

#[test]
fn smoke_every_envelope_arrives() {
    let r = Receiver::start();
    let svc = Service::start(&config(&r, "batch_max_records = 50\nbatch_max_ms = 20\n"));
    let ids = svc.post_all(&records("a", 300), 100);
    svc.wait_quiescent(Duration::from_secs(30));
    let taken = r.wait_for_ids(ids.len(), Duration::from_secs(10));
    assert_eq!(taken.len(), 300);
    assert!(r.posts().iter().all(|p| p.envelopes.len() <= 50));
}

#[test]
fn batches_are_cut_by_size() {
    let r = Receiver::start();
    let svc = Service::start(&config(
        &r,
        "batch_max_records = 50\nbatch_max_ms = 60000\n",
    ));
    let ids = svc.post_all(&records("s", 500), 100);
    assert_eq!(ids.len(), 500);
    let taken = r.wait_for_ids(500, Duration::from_secs(10));
    svc.wait_quiescent(Duration::from_secs(10));
    let posts = r.posts();
    println!(
        "size batching: {} POSTs, sizes {:?}",
        posts.len(),
        posts.iter().map(|p| p.envelopes.len()).collect::<Vec<_>>()
    );
    assert_eq!(posts.len(), 10, "500 envelopes in POSTs of 50");
    assert!(
        posts
            .iter()
            .all(|p| p.envelopes.len() == 50 && p.status == 200)
    );
    assert_eq!(taken.len(), 500, "no envelope twice");
    assert_eq!(id_set(&taken), expect_ids(&ids));
    assert_well_formed(&posts);
    let keys: BTreeSet<_> = posts.iter().map(|p| p.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 10, "one key per batch");
    for e in &taken {
        assert_eq!(e["outcome"], "ok", "{e}");
    }
}

#[test]
fn a_partial_batch_leaves_when_its_oldest_envelope_is_batch_max_ms_old() {
    let r = Receiver::start();
    let svc = Service::start(&config(&r, "batch_max_records = 50\nbatch_max_ms = 300\n"));
    let sent = Instant::now();
    let ids = accept(&svc, &records("t", 7));
    let acked = Instant::now();
    let taken = r.wait_for_ids(7, Duration::from_secs(5));
    let posts = r.posts();
    assert_eq!(posts.len(), 1, "7 envelopes in one POST");
    let after_ack = posts[0].at.duration_since(acked);
    println!(
        "age batching: POST {:?} after sending, {after_ack:?} after the 202",
        posts[0].at.duration_since(sent)
    );
    assert!(
        posts[0].at.duration_since(sent) >= Duration::from_millis(300),
        "not before batch_max_ms"
    );
    // The batch's clock may start a little before the 202 (the ack waits for an fsync).
    assert!(after_ack >= Duration::from_millis(200), "{after_ack:?}");
    assert!(after_ack < Duration::from_secs(2), "{after_ack:?}");
    assert_eq!(taken.len(), 7);
    assert_eq!(id_set(&taken), expect_ids(&ids));
    assert_well_formed(&posts);
    svc.wait_quiescent(Duration::from_secs(5));
}

#[test]
fn configured_headers_are_sent_with_every_post() {
    let r = Receiver::start();
    let cfg = config(
        &r,
        "batch_max_records = 10\nbatch_max_ms = 20\n\
         headers = { Authorization = \"Bearer x\", X-Tenant = \"acme\" }\n",
    );
    // The documented `headers = { Authorization = "Bearer …" }` must load (checked first so
    // a refusal is reported as such rather than as a service that did not start).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, cfg.render(dir.path())).expect("write config");
    let check = std::process::Command::new(support::binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    assert!(
        check.status.success(),
        "[output.webhook] headers are refused: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let svc = Service::start_in(&cfg, dir.path());
    let ids = accept(&svc, &records("hd", 25));
    let taken = r.wait_for_ids(25, Duration::from_secs(5));
    assert_eq!(id_set(&taken), expect_ids(&ids));
    let posts = r.posts();
    assert!(posts.len() >= 3, "25 envelopes in POSTs of at most 10");
    assert_well_formed(&posts);
    for p in &posts {
        assert_eq!(
            p.headers.get("authorization").map(String::as_str),
            Some("Bearer x"),
            "{:?}",
            p.headers
        );
        assert_eq!(
            p.headers.get("x-tenant").map(String::as_str),
            Some("acme"),
            "{:?}",
            p.headers
        );
    }
}

#[test]
fn a_5xx_is_retried_with_the_same_key_and_envelopes() {
    let r = Receiver::start();
    r.script(&[
        Answer::Status(503, None, "busy"),
        Answer::Status(503, None, "busy"),
        Answer::ok(),
    ]);
    let svc = Service::start(&config(
        &r,
        "batch_max_records = 50\nbatch_max_ms = 50\nconcurrency = 1\n\
         initial_backoff_ms = 200\nmax_backoff_ms = 1000\n",
    ));
    let ids = accept(&svc, &records("r", 20));
    // While the batch is retried, /readyz names the webhook sink.
    let body = svc.wait_readyz(503, "webhook", Duration::from_secs(3));
    assert!(body.contains("503"), "{body}");
    let taken = r.wait_for_ids(20, Duration::from_secs(5));
    let posts = r.posts();
    println!(
        "5xx retry: {} POSTs, statuses {:?}",
        posts.len(),
        posts.iter().map(|p| p.status).collect::<Vec<_>>()
    );
    assert!(posts.len() >= 3);
    assert_eq!(
        posts[..3].iter().map(|p| p.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    for p in &posts[1..3] {
        assert_eq!(p.idempotency_key, posts[0].idempotency_key, "same key");
        assert_eq!(p.envelopes, posts[0].envelopes, "same envelopes");
        assert_eq!(p.body, posts[0].body, "same body");
    }
    assert_eq!(id_set(&taken), expect_ids(&ids));
    svc.wait_quiescent(Duration::from_secs(5));
    let retries = metric(&svc, "sluice_webhook_retries_total", &[("sink", "output")]);
    let five = metric(
        &svc,
        "sluice_webhook_batches_total",
        &[("sink", "output"), ("class", "5xx")],
    );
    let two = metric(
        &svc,
        "sluice_webhook_batches_total",
        &[("sink", "output"), ("class", "2xx")],
    );
    println!("metrics: retries {retries}, 5xx {five}, 2xx {two}");
    assert_eq!(retries, 2.0);
    assert_eq!(five, 2.0);
    assert!(two >= 1.0);
    svc.wait_readyz(200, "", Duration::from_secs(3));
    assert_eq!(svc.status()["sink_problems"], json!([]));
}

#[test]
fn a_429_retry_waits_for_retry_after() {
    let r = Receiver::start();
    r.script(&[Answer::Status(429, Some(1), "slow down")]);
    let svc = Service::start(&config(
        &r,
        "batch_max_records = 50\nbatch_max_ms = 20\nconcurrency = 1\n\
         initial_backoff_ms = 10\nmax_backoff_ms = 20\n",
    ));
    let ids = accept(&svc, &records("w", 10));
    let taken = r.wait_for_ids(10, Duration::from_secs(5));
    let posts = r.posts();
    assert!(posts.len() >= 2);
    assert_eq!(posts[0].status, 429);
    assert_eq!(posts[1].status, 200);
    assert_eq!(posts[1].idempotency_key, posts[0].idempotency_key);
    assert_eq!(posts[1].envelopes, posts[0].envelopes);
    let gap = posts[1].at.duration_since(posts[0].at);
    println!("429: retried after {gap:?}");
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After: 1 honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    assert_eq!(id_set(&taken), expect_ids(&ids));
    svc.wait_quiescent(Duration::from_secs(5));
}

#[test]
fn a_400_sends_the_batch_to_the_dead_letter_with_the_answer() {
    let r = Receiver::start();
    r.script(&[Answer::Status(400, None, "bad field: user_id")]);
    let svc = Service::start(&config(
        &r,
        "batch_max_records = 50\nbatch_max_ms = 50\nconcurrency = 1\ninitial_backoff_ms = 10\n",
    ));
    let ids = accept(&svc, &records("x", 12));
    svc.wait_quiescent(Duration::from_secs(5));
    let dead = wait_lines(&svc.dir.join("dead.jsonl"), 12, Duration::from_secs(5));
    assert_eq!(dead.len(), 12, "each envelope once");
    assert_eq!(id_set(&dead), expect_ids(&ids));
    for e in &dead {
        let error = e["error"].as_str().unwrap_or_else(|| panic!("error: {e}"));
        assert!(
            error.contains("400") && error.contains("bad field: user_id"),
            "{error}"
        );
        assert_eq!(e["outcome"], "ok", "the outcome stays: {e}");
    }
    println!("400: dead letter error {:?}", dead[0]["error"]);
    let posts = r.posts();
    assert_eq!(posts.len(), 1, "a 400 is not retried");
    assert!(r.taken().is_empty(), "the receiver took none");
    assert_eq!(
        metric(
            &svc,
            "sluice_sink_rejected_envelopes_total",
            &[("sink", "output")]
        ),
        12.0
    );
    assert_eq!(
        metric(
            &svc,
            "sluice_webhook_batches_total",
            &[("sink", "output"), ("class", "4xx")]
        ),
        1.0
    );
    assert_eq!(svc.status()["pending"], 0);
}

#[test]
fn a_hanging_receiver_times_out_and_the_batch_is_retried() {
    let r = Receiver::start();
    r.script(&[Answer::Hang(Duration::from_secs(3))]);
    let svc = Service::start(&config(
        &r,
        "batch_max_records = 50\nbatch_max_ms = 20\nconcurrency = 1\ntimeout_ms = 300\n\
         initial_backoff_ms = 10\n",
    ));
    let started = Instant::now();
    let ids = accept(&svc, &records("h", 15));
    let taken = r.wait_for_ids(15, Duration::from_secs(5));
    println!("hang: delivered after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client gave up after timeout_ms, not after the receiver's 3 s"
    );
    let posts = r.posts();
    assert!(posts.len() >= 2);
    assert_eq!(posts[0].status, 0, "the first POST hung");
    assert_eq!(posts[1].status, 200);
    assert_eq!(posts[1].idempotency_key, posts[0].idempotency_key);
    assert_eq!(posts[1].envelopes, posts[0].envelopes);
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(gap >= Duration::from_millis(300), "{gap:?}");
    assert_eq!(id_set(&taken), expect_ids(&ids));
    assert_eq!(taken.len(), 15);
    svc.wait_quiescent(Duration::from_secs(5));
    assert!(
        metric(
            &svc,
            "sluice_webhook_batches_total",
            &[("sink", "output"), ("class", "error")]
        ) >= 1.0
    );
    assert!(metric(&svc, "sluice_webhook_retries_total", &[("sink", "output")]) >= 1.0);
}

#[test]
fn a_stalled_receiver_turns_into_429s_with_bounded_memory() {
    let r = Receiver::start();
    r.otherwise(Some(Answer::Hang(Duration::from_secs(60))));
    let svc = Service::start(&Config {
        output_webhook: format!(
            "url = \"{}\"\nbatch_max_records = 10\nbatch_max_ms = 20\nconcurrency = 1\n\
             timeout_ms = 500\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n",
            r.url
        ),
        pipeline: "partitions = 2\ncapacity = 10\nbacklog = 50\n".into(),
        ..Config::default()
    });
    let mut accepted = Vec::new();
    let (mut refused, mut max_rss) = (0usize, 0u64);
    let mut unready = None;
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    // Keep pushing until the ingress has refused a while and /readyz names the sink.
    while refused < 50 || unready.is_none() {
        assert!(
            Instant::now() < until,
            "accepted {}, refused {refused}, readyz {unready:?}",
            accepted.len()
        );
        let batch = records(&format!("l{n}-"), 20);
        n += 1;
        let reply = svc.post_json("/v1/records", &batch);
        match reply.status {
            202 => accepted.extend(ids_of(&reply)),
            429 => {
                assert!(reply.header("retry-after").is_some(), "429 has Retry-After");
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", reply.body),
        }
        max_rss = max_rss.max(svc.rss_kib().expect("rss"));
        if unready.is_none() {
            let ready = svc.get("/readyz");
            if ready.status == 503 {
                assert!(ready.body.contains("webhook"), "{}", ready.body);
                unready = Some(ready.body);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = svc.status();
    println!(
        "stalled: accepted {} records, {refused} requests refused with 429, pending {}, \
         {} POSTs so far, max RSS {} MiB\n/readyz: {}",
        accepted.len(),
        status["pending"],
        r.posts().len(),
        max_rss / 1024,
        unready.as_deref().unwrap_or("")
    );
    // 2 partitions × (capacity 10 + backlog 50) is what the service may hold.
    assert!(
        accepted.len() <= 120,
        "bounded intake: {} accepted",
        accepted.len()
    );
    assert!(status["pending"].as_u64().unwrap() > 0);
    assert!(max_rss < 400 * 1024, "RSS {max_rss} KiB");
    assert!(r.taken().is_empty(), "nothing was delivered while stalled");
    // Un-stall: everything accepted arrives.
    r.otherwise(None);
    let taken = r.wait_for_ids(accepted.len(), Duration::from_secs(15));
    assert!(id_set(&taken).is_superset(&expect_ids(&accepted)));
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(3));
    println!(
        "un-stalled: {} envelopes taken for {} ids, {} POSTs",
        taken.len(),
        accepted.len(),
        r.posts().len()
    );
}

#[test]
fn kill_9_mid_stream_resends_the_same_envelopes() {
    let r = Receiver::start();
    r.otherwise(Some(Answer::Slow(Duration::from_millis(100))));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        &r,
        "batch_max_records = 20\nbatch_max_ms = 20\nconcurrency = 2\ntimeout_ms = 5000\n\
         initial_backoff_ms = 10\n",
    );
    let mut svc = Service::start_in(&cfg, dir.path());
    let mut acked = Vec::new();
    std::thread::scope(|s| {
        let poster = s.spawn(|| {
            let mut acked = Vec::new();
            for n in 0..100 {
                match svc.try_post_json("/v1/records", &records(&format!("k{n}-"), 20)) {
                    Some(r) if r.status == 202 => acked.extend(ids_of(&r)),
                    Some(r) if r.status == 429 => {}
                    Some(r) => panic!("unexpected {}: {}", r.status, r.body),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        });
        // Kill once the receiver is part way through.
        r.wait_for_ids(100, Duration::from_secs(10));
        svc.signal("KILL");
        acked = poster.join().expect("poster");
    });
    svc.kill9();
    let before = id_set(&r.taken());
    println!(
        "kill -9: {} ids acknowledged, {} taken before the kill, {} POSTs",
        acked.len(),
        before.len(),
        r.posts().len()
    );
    assert!(
        before.len() < acked.len(),
        "the kill came mid-stream: {} of {} delivered",
        before.len(),
        acked.len()
    );
    r.otherwise(None);
    let svc = Service::start_in(&cfg, dir.path());
    r.wait_for_ids(acked.len(), Duration::from_secs(20));
    svc.wait_quiescent(Duration::from_secs(10));
    let taken = r.taken();
    let mut copies: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &taken {
        copies
            .entry(e["id"].as_str().expect("id").to_string())
            .or_default()
            .push(e);
    }
    for id in &acked {
        assert!(
            copies.contains_key(id),
            "acknowledged id {id} never arrived"
        );
    }
    let mut twice = 0;
    for (id, all) in &copies {
        if all.len() > 1 {
            twice += 1;
        }
        for e in &all[1..] {
            assert_eq!(*e, all[0], "copies of {id} differ");
        }
    }
    println!(
        "after restart: {} envelopes for {} ids; {twice} ids arrived more than once",
        taken.len(),
        copies.len()
    );
    // POSTs in flight at the kill were taken by the receiver and sent again after the
    // restart: without such copies the comparison above would prove nothing.
    assert!(twice > 0, "no batch was in flight at the kill");
}

fn failing_records() -> Vec<Value> {
    vec![
        json!({"id": "ok1", "user_id": "u1"}),
        json!({"id": "f1", "user_id": "u2", "fail": 1}),
        json!({"id": "ok2", "user_id": "u3"}),
        json!({"id": "m1", "user_id": "ghost"}),
        json!({"id": "f2", "user_id": "u4", "fail": 5}),
        json!({"id": "m2", "user_id": "nobody"}),
    ]
}

fn dead_letter_config(out: &Receiver, dead: &Receiver) -> Config {
    Config {
        output_webhook: format!("url = \"{}\"\nbatch_max_ms = 20\n", out.url),
        dead_webhook: format!(
            "url = \"{}\"\nbatch_max_ms = 20\ninitial_backoff_ms = 10\n",
            dead.url
        ),
        retry: "max_attempts = 1\n".into(),
        memory: "fail_field = \"/fail\"\n".into(),
        lookup: "on_miss = \"dead_letter\"\n".into(),
        ..Config::default()
    }
}

fn assert_dead_letters(dead: &[Value]) {
    let by_id: BTreeMap<&str, &Value> = dead
        .iter()
        .map(|e| (e["id"].as_str().expect("id"), e))
        .collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        ["f1", "f2", "m1", "m2"]
    );
    for (id, e) in by_id {
        let outcome = if id.starts_with('f') {
            "failed"
        } else {
            "miss"
        };
        assert_eq!(e["outcome"], outcome, "{e}");
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
}

#[test]
fn a_webhook_dead_letter_receives_failed_and_missed_records() {
    let out = Receiver::start();
    let dead = Receiver::start();
    let svc = Service::start(&dead_letter_config(&out, &dead));
    let ids = accept(&svc, &failing_records());
    assert_eq!(ids.len(), 6);
    let dead_taken = dead.wait_for_ids(4, Duration::from_secs(5));
    let out_taken = out.wait_for_ids(2, Duration::from_secs(5));
    svc.wait_quiescent(Duration::from_secs(5));
    println!("dead letters: {dead_taken:?}");
    assert_eq!(dead_taken.len(), 4);
    assert_dead_letters(&dead_taken);
    assert_eq!(
        out_taken
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["ok1", "ok2"])
    );
    for p in dead.posts() {
        let key = p.idempotency_key.expect("Idempotency-Key");
        assert!(key.starts_with("sluice-dead_letter-"), "{key}");
        assert_eq!(p.content_type.as_deref(), Some("application/x-ndjson"));
    }
    assert!(support::read_lines(&svc.dir.join("dead.jsonl")).is_empty());
    assert_eq!(
        metric(
            &svc,
            "sluice_webhook_envelopes_total",
            &[("sink", "dead_letter")]
        ),
        4.0
    );
}

#[test]
fn a_refusing_dead_letter_keeps_records_pending_until_it_accepts() {
    let out = Receiver::start();
    let dead = Receiver::start();
    dead.otherwise(Some(Answer::Status(400, None, "dead letters not welcome")));
    let svc = Service::start(&dead_letter_config(&out, &dead));
    accept(&svc, &failing_records());
    out.wait_for_ids(2, Duration::from_secs(5));
    let body = svc.wait_readyz(503, "dead_letter", Duration::from_secs(3));
    assert!(body.contains("400"), "{body}");
    // Refused, then offered again about every second: still pending, not emitted.
    dead.wait_for_posts(2, Duration::from_secs(5));
    let status = wait_status(&svc, "dead_letter", Duration::from_secs(3));
    let emitted: u64 = status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["emitted"].as_u64().unwrap())
        .sum();
    println!(
        "refusing dead letter: {} POSTs refused, pending {}, emitted {emitted}, problems {}",
        dead.posts().len(),
        status["pending"],
        status["sink_problems"]
    );
    assert_eq!(status["pending"], 4);
    assert_eq!(emitted, 2);
    assert!(dead.taken().is_empty());
    assert_eq!(
        metric(
            &svc,
            "sluice_records_emitted_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    // The receiver accepts: the records arrive and nothing stays pending.
    dead.otherwise(None);
    let taken = dead.wait_for_ids(4, Duration::from_secs(5));
    assert_dead_letters(&taken);
    svc.wait_quiescent(Duration::from_secs(5));
    svc.wait_readyz(200, "", Duration::from_secs(3));
    assert_eq!(
        metric(
            &svc,
            "sluice_records_emitted_total",
            &[("outcome", "failed")]
        ),
        2.0
    );
}

#[test]
fn readyz_stays_503_while_a_refused_dead_letter_is_offered_again() {
    let out = Receiver::start();
    let dead = Receiver::start();
    // A receiver that takes a while to refuse (300 ms, then 400).
    dead.otherwise(Some(Answer::Late(
        Duration::from_millis(300),
        400,
        "dead letters not welcome",
    )));
    let svc = Service::start(&dead_letter_config(&out, &dead));
    accept(&svc, &failing_records());
    svc.wait_readyz(503, "dead_letter", Duration::from_secs(3));
    // Watch /readyz across at least one offer again (about every second).
    let first = dead.posts().len();
    let watch = Instant::now();
    let mut ready = Vec::new();
    while watch.elapsed() < Duration::from_millis(2500) {
        let r = svc.get("/readyz");
        if r.status == 200 {
            ready.push(watch.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let offered = dead.posts().len() - first;
    println!(
        "offered again {offered} time(s) in 2.5 s; /readyz answered 200 {} time(s), first at {:?}",
        ready.len(),
        ready.first()
    );
    assert!(offered >= 1, "the refused envelopes were offered again");
    assert_eq!(svc.status()["pending"], 4, "still pending");
    assert!(dead.taken().is_empty());
    assert!(
        ready.is_empty(),
        "/readyz answered 200 {} time(s) (first {:?} into the watch) while the dead letter \
         kept refusing and 4 records stayed pending",
        ready.len(),
        ready.first()
    );
}

#[test]
fn https_receivers_are_reached_over_rustls_with_a_private_ca() {
    let (r, pem) = Receiver::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    // Without the CA the certificate is not trusted: the batch is retried, never dropped.
    let untrusted = Service::start(&Config {
        output_webhook: format!(
            "url = \"{}\"\nbatch_max_ms = 10\ninitial_backoff_ms = 20\nmax_backoff_ms = 50\n",
            r.url
        ),
        ..Config::default()
    });
    let ids = untrusted.post_all(&records("t", 5), 5);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = untrusted.get("/readyz");
        if ready.status == 503 || std::time::Instant::now() > until {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        ready.status, 503,
        "an untrusted certificate makes the sink unhealthy"
    );
    assert_eq!(untrusted.status()["pending"], 5, "kept pending");
    assert!(
        r.posts().is_empty(),
        "no request got through the TLS handshake"
    );
    drop(untrusted);
    // With the CA: delivered over TLS.
    let svc = Service::start(&Config {
        output_webhook: format!(
            "url = \"{}\"\nbatch_max_ms = 10\nca_file = \"{}\"\n",
            r.url,
            ca.display()
        ),
        ..Config::default()
    });
    let more = svc.post_all(&records("s", 20), 10);
    svc.wait_quiescent(Duration::from_secs(10));
    let taken = r.wait_for_ids(more.len(), Duration::from_secs(10));
    assert_eq!(taken.len(), 20);
    assert!(ids.iter().all(|i| i.starts_with('t')));
}
