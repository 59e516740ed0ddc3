//! Pipelines of several lookups per record (README "Pipelines") with the real binary:
//! chained and independent steps over memory tables, per-step retries, outcomes and dead
//! letters naming the step, `/v1/enrich` and `sluice enrich`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Config, Service, assert_exactly_once};

/// Three tables: users (→ account_id), accounts (→ plan), plans (→ price).
fn write_tables(dir: &Path) {
    let users: Vec<Value> = (0..50)
        .map(|i| json!({"user_id": format!("u{i}"), "name": format!("n{i}"), "account_id": i % 10}))
        .collect();
    // Account 9 has no row: its users miss on the second step.
    let accounts: Vec<Value> = (0..9)
        .map(|a| json!({"account_id": a, "plan": if a % 2 == 0 { "pro" } else { "free" }}))
        .collect();
    let plans = [
        json!({"plan": "pro", "price": 10}),
        json!({"plan": "free", "price": 0}),
    ];
    let write = |name: &str, rows: &[Value]| {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.join(name), text).unwrap();
    };
    write("users.jsonl", &users);
    write("accounts.jsonl", &accounts);
    write("plans.jsonl", &plans);
}

/// A whole config file: the harness's paths and port, then `steps` (TOML) as the lookup.
fn config_text(dir: &Path, pipeline: &str, retry: &str, steps: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace_ms = 20000\n\
         [pipeline]\npartitions = 3\n{timeout}{pipeline}\n\
         [retry]\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n{retry}\n\
         {steps}\n\
         [output]\nkind = \"file\"\npath = \"{out}\"\n\
         [dead_letter]\nkind = \"file\"\npath = \"{dead}\"\n\
         [checkpoint]\ndir = \"{ck}\"\ninterval_ms = 50\n",
        timeout = if pipeline.contains("timeout_ms") {
            ""
        } else {
            "timeout_ms = 5000\n"
        },
        out = dir.join("out.jsonl").display(),
        dead = dir.join("dead.jsonl").display(),
        ck = dir.join("checkpoints").display(),
    )
}

fn chain_steps(dir: &Path, extra_user: &str) -> String {
    format!(
        "[lookup.steps.user]\nbackend = \"memory\"\ntable = \"{u}\"\nkey_column = \"user_id\"\n\
         binds = [\"/user_id\"]\ninto = \"/user\"\n{extra_user}\n\
         [lookup.steps.account]\nbackend = \"memory\"\ntable = \"{a}\"\nkey_column = \"account_id\"\n\
         binds = [\"/user/account_id\"]\ninto = \"/account\"\n\
         [lookup.steps.plan]\nbackend = \"memory\"\ntable = \"{p}\"\nkey_column = \"plan\"\n\
         binds = [\"/account/plan\"]\ninto = \"/plan_details\"\n",
        u = dir.join("users.jsonl").display(),
        a = dir.join("accounts.jsonl").display(),
        p = dir.join("plans.jsonl").display(),
    )
}

fn start(dir: &Path, text: &str) -> Service {
    Service::start_in_with_text(&Config::default(), dir, text)
}

fn by_id(envelopes: &[Value]) -> HashMap<String, &Value> {
    envelopes
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e))
        .collect()
}

#[test]
fn three_chained_steps_merge_every_result_and_misses_skip_what_depends_on_them() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let text = config_text(
        tmp.path(),
        "mode = \"ordered\"\n",
        "",
        &chain_steps(tmp.path(), ""),
    );
    let svc = start(tmp.path(), &text);
    // u0..u49 (u9, u19.. have account 9: no row), and a user nobody knows.
    let mut records: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("r{i}"), "user_id": format!("u{i}")}))
        .collect();
    records.push(json!({"id": "ghost", "user_id": "nobody"}));
    let ids = svc.post_all(&records, 20);
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert!(dead.is_empty(), "misses are emitted: {dead:?}");
    let e = by_id(&out);
    let r0 = e["r0"];
    assert_eq!(r0["outcome"], "ok");
    assert_eq!(r0["attempts"], 3);
    assert_eq!(
        r0["steps"],
        json!({"account": {"outcome": "ok", "attempts": 1},
               "plan": {"outcome": "ok", "attempts": 1},
               "user": {"outcome": "ok", "attempts": 1}})
    );
    assert_eq!(
        r0["record"],
        json!({"id": "r0", "user_id": "u0", "user": {"name": "n0", "account_id": 0},
               "account": {"plan": "pro"}, "plan_details": {"price": 10}})
    );
    // Account 9 has no row: the plan step's bind reads null, so it is skipped.
    let r9 = e["r9"];
    assert_eq!(r9["outcome"], "miss");
    assert_eq!(r9["steps"]["account"]["outcome"], "miss");
    assert_eq!(
        r9["steps"]["plan"],
        json!({"outcome": "skipped", "attempts": 0})
    );
    assert_eq!(r9["record"]["account"], Value::Null);
    assert_eq!(r9["record"]["plan_details"], Value::Null);
    assert_eq!(r9["attempts"], 2);
    let ghost = e["ghost"];
    assert_eq!(ghost["steps"]["user"]["outcome"], "miss");
    assert_eq!(ghost["steps"]["account"]["outcome"], "skipped");
    assert_eq!(ghost["steps"]["plan"]["outcome"], "skipped");
    // Ordered mode still holds per partition.
    let mut last: HashMap<u64, u64> = HashMap::new();
    for env in &out {
        let (p, s) = (
            env["partition"].as_u64().unwrap(),
            env["seq"].as_u64().unwrap(),
        );
        if let Some(prev) = last.insert(p, s) {
            assert!(s > prev, "ordered: partition {p} seq {s} after {prev}");
        }
    }
}

#[test]
fn a_dead_letter_miss_names_the_step_and_skip_dependents_skips_after_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    let steps = format!(
        "[lookup.steps.user]\nbackend = \"memory\"\ntable = \"{u}\"\nkey_column = \"user_id\"\n\
         binds = [\"/user_id\"]\ninto = \"/user\"\non_miss = \"skip_dependents\"\n\
         [lookup.steps.audit]\nbackend = \"memory\"\ntable = \"{p}\"\nkey_column = \"plan\"\n\
         binds = [\"/tier\"]\ninto = \"/audit\"\nafter = [\"user\"]\n\
         [lookup.steps.account]\nbackend = \"memory\"\ntable = \"{a}\"\nkey_column = \"account_id\"\n\
         binds = [\"/user/account_id\"]\ninto = \"/account\"\non_miss = \"dead_letter\"\n",
        u = d.join("users.jsonl").display(),
        a = d.join("accounts.jsonl").display(),
        p = d.join("plans.jsonl").display(),
    );
    let svc = start(d, &config_text(d, "", "", &steps));
    let records = vec![
        json!({"id": "ok", "user_id": "u1", "tier": "pro"}),
        json!({"id": "no-account", "user_id": "u9", "tier": "pro"}),
        json!({"id": "no-user", "user_id": "nobody", "tier": "pro"}),
    ];
    let ids = svc.post_all(&records, 10);
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    let (o, dl) = (by_id(&out), by_id(&dead));
    assert_eq!(o["ok"]["outcome"], "ok");
    assert_eq!(o["ok"]["record"]["audit"], json!({"price": 10}));
    let na = dl["no-account"];
    assert_eq!(na["outcome"], "miss");
    assert_eq!(na["error"], "step account: lookup found no row");
    // `skip_dependents`: `audit` runs only after `user` (no bind into it) and is skipped.
    let nu = o["no-user"];
    assert_eq!(nu["outcome"], "miss");
    assert_eq!(
        nu["steps"]["audit"],
        json!({"outcome": "skipped", "attempts": 0})
    );
    assert_eq!(nu["steps"]["account"]["outcome"], "skipped");
    assert_eq!(nu["record"]["audit"], Value::Null);
}

#[test]
fn retries_are_counted_per_step_and_a_failed_step_ends_the_record_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    // Both steps fail the first `/_sim/fail` attempts of a record.
    let steps = format!(
        "[lookup.steps.user]\nbackend = \"memory\"\ntable = \"{u}\"\nkey_column = \"user_id\"\n\
         binds = [\"/user_id\"]\ninto = \"/user\"\nfail_field = \"/_sim/fail\"\n\
         [lookup.steps.plan]\nbackend = \"memory\"\ntable = \"{p}\"\nkey_column = \"plan\"\n\
         binds = [\"/tier\"]\ninto = \"/plan\"\nfail_field = \"/_sim/fail\"\n",
        u = d.join("users.jsonl").display(),
        p = d.join("plans.jsonl").display(),
    );
    let svc = start(d, &config_text(d, "", "max_attempts = 3\n", &steps));
    let records = vec![
        json!({"id": "twice", "user_id": "u1", "tier": "pro", "_sim": {"fail": 2}}),
        json!({"id": "never", "user_id": "u1", "tier": "pro", "_sim": {"fail": 5}}),
    ];
    let ids = svc.post_all(&records, 10);
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    let (o, dl) = (by_id(&out), by_id(&dead));
    let t = o["twice"];
    assert_eq!(t["outcome"], "ok");
    assert_eq!(
        t["steps"]["user"]["attempts"], 3,
        "max_attempts holds per step"
    );
    assert_eq!(t["steps"]["plan"]["attempts"], 3);
    assert_eq!(t["attempts"], 6, "the top level sums the steps");
    let n = dl["never"];
    assert_eq!(n["outcome"], "failed");
    let error = n["error"].as_str().unwrap();
    assert!(
        error.starts_with("step plan: ") || error.starts_with("step user: "),
        "{error}"
    );
    assert!(error.contains("after 3 attempt(s)"), "{error}");
    assert_eq!(
        n["record"], records[1],
        "a failed record is emitted as it came"
    );
}

#[test]
fn enrich_endpoint_and_offline_enrich_run_pipelines() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    // Keyed by the id, so a record without `user_id` reaches the steps' check.
    let text = config_text(d, "key = \"/id\"\n", "", &chain_steps(d, ""));
    let svc = start(d, &text);
    let r = svc.post_json("/v1/enrich", &[json!({"id": "e1", "user_id": "u2"})]);
    assert_eq!(r.status, 200, "{}", r.body);
    let env = &r.json()["results"][0];
    assert_eq!(env["record"]["plan_details"], json!({"price": 10}));
    assert_eq!(env["steps"]["plan"]["outcome"], "ok");
    // A record whose first step's bind is absent is refused naming the step.
    let r = svc.post_json("/v1/records", &[json!({"id": "bad"})]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("step user"), "{}", r.body);
    assert!(r.body.contains("/user_id"), "{}", r.body);
    drop(svc);

    let input = d.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\":\"a\",\"user_id\":\"u4\"}\n{\"id\":\"b\",\"user_id\":\"u9\"}\n",
    )
    .unwrap();
    std::fs::write(d.join("offline.toml"), &text).unwrap();
    let outp = d.join("offline-out.jsonl");
    let status = std::process::Command::new(support::binary())
        .args(["enrich", "--config"])
        .arg(d.join("offline.toml"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&outp)
        .current_dir(d)
        .status()
        .unwrap();
    assert!(status.success());
    let lines = support::read_lines(&outp);
    let e = by_id(&lines);
    assert_eq!(e["a"]["outcome"], "ok");
    assert_eq!(e["a"]["record"]["plan_details"], json!({"price": 10}));
    assert_eq!(e["b"]["outcome"], "miss");
    assert_eq!(e["b"]["steps"]["plan"]["outcome"], "skipped");
}

/// Lookups of `step` this process made so far (`sluice_lookup_requests_total{step=..}`).
fn step_requests(svc: &Service, step: &str) -> f64 {
    let m = svc.get("/metrics").body;
    m.lines()
        .filter(|l| {
            l.starts_with("sluice_lookup_requests_total{")
                && l.contains(&format!("step=\"{step}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fast first step, then a slow one reading its result: records sit in the second step.
fn slow_second_step(dir: &Path, delay_ms: u64) -> String {
    format!(
        "[lookup.steps.user]\nbackend = \"memory\"\ntable = \"{u}\"\nkey_column = \"user_id\"\n\
         binds = [\"/user_id\"]\ninto = \"/user\"\n\
         [lookup.steps.account]\nbackend = \"memory\"\ntable = \"{a}\"\nkey_column = \"account_id\"\n\
         binds = [\"/user/account_id\"]\ninto = \"/account\"\ndelay_ms = [{delay_ms}, {delay_ms}]\n\
         attempt_timeout_ms = 20000\n",
        u = dir.join("users.jsonl").display(),
        a = dir.join("accounts.jsonl").display(),
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_kill_9_a_record_resumes_mid_pipeline_without_looking_up_finished_steps_again() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    let text = config_text(
        d,
        "capacity = 100\ntimeout_ms = 60000\n",
        "",
        &slow_second_step(d, 3000),
    );
    let mut svc = start(d, &text);
    let records: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("k{i}"), "user_id": format!("u{}", i % 8)}))
        .collect();
    let ids = svc.post_all(&records, 10);
    // Every record finished `user` and waits in `account` (3 s): kill -9 now.
    wait_for(
        "the first step of every record",
        Duration::from_secs(20),
        || step_requests(&svc, "user") >= 40.0,
    );
    std::thread::sleep(Duration::from_millis(200));
    svc.kill9();
    let svc = start(d, &text);
    svc.wait_quiescent(Duration::from_secs(60));
    assert_eq!(
        step_requests(&svc, "user"),
        0.0,
        "finished steps are not looked up again after the restore"
    );
    // Partitions publish their counters every 250 ms.
    wait_for(
        "the unfinished step's lookups",
        Duration::from_secs(5),
        || step_requests(&svc, "account") >= 40.0,
    );
    assert_eq!(
        step_requests(&svc, "account"),
        40.0,
        "the unfinished step runs once more"
    );
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    for e in &out {
        assert_eq!(e["steps"]["user"]["attempts"], 1, "{e}");
        assert_eq!(e["steps"]["user"]["outcome"], "ok", "{e}");
        // The attempt in flight at the crash counts: the step's second attempt finished.
        assert_eq!(e["steps"]["account"]["attempts"], 2, "{e}");
        assert!(e["record"]["user"]["account_id"].is_number(), "{e}");
    }
}

#[test]
fn a_handover_moves_records_mid_pipeline_and_the_new_owner_resumes_them() {
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    let cfg = Config {
        pipeline: "partitions = 6\ncapacity = 100\ntimeout_ms = 60000\n".into(),
        retry: "initial_backoff_ms = 1\nmax_backoff_ms = 5\n".into(),
        // Longer than a rebalance's drain (2 s): moved partitions hand records over in it.
        steps: slow_second_step(d, 5000),
        checkpoint: "interval_ms = 100\n".into(),
        ..Config::default()
    };
    let Some(mut c) = support::cluster::TestCluster::start("pipeline_handover", 3, 2, cfg) else {
        return;
    };
    c.wait_balanced(Duration::from_secs(20));
    let records: Vec<Value> = (0..120)
        .map(|i| json!({"id": format!("h{i}"), "user_id": format!("u{}", i % 40)}))
        .collect();
    let ids = c.node(1).post_all(&records, 10);
    let user_total = |c: &support::cluster::TestCluster, nodes: usize| -> f64 {
        (0..nodes).map(|i| step_requests(c.node(i), "user")).sum()
    };
    wait_for(
        "the first step of every record",
        Duration::from_secs(20),
        || user_total(&c, 2) >= 120.0,
    );
    // A third node joins while the records wait in the slow step: partitions move to it
    // with their records mid-pipeline.
    c.add_node();
    c.wait_balanced(Duration::from_secs(30));
    c.wait_quiescent(Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        user_total(&c, 3),
        120.0,
        "no node looks up a finished step again"
    );
    let envelopes: Vec<Value> = c.envelopes().into_iter().map(|(_, e)| e).collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &envelopes {
        *seen
            .entry(e["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        // Account 9 has no row: those users miss on the second step.
        let account = e["record"]["user"]["account_id"].as_u64().unwrap();
        assert_eq!(
            e["outcome"],
            if account == 9 { "miss" } else { "ok" },
            "{e}"
        );
        assert_eq!(e["steps"]["user"]["attempts"], 1, "{e}");
    }
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "{id} exactly once");
    }
    let moved = envelopes
        .iter()
        .filter(|e| e["node"] == "n2" && e["steps"]["account"]["attempts"] == 2)
        .count();
    assert!(
        moved > 0,
        "some records were handed over mid-pipeline (their second step began elsewhere)"
    );
}

/// An `http` step's TOML.
fn http_step(name: &str, url: &str, binds: &str, into: &str, extra: &str) -> String {
    format!(
        "[lookup.steps.{name}]\nbackend = \"http\"\nurl = \"{url}\"\nbinds = {binds}\n\
         into = \"{into}\"\n{}{extra}\n",
        if extra.contains("attempt_timeout_ms") {
            ""
        } else {
            "attempt_timeout_ms = 5000\n"
        }
    )
}

#[test]
fn independent_http_steps_of_one_record_are_in_flight_at_the_same_time() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use support::lookup_http::{Reply, Service as Lookups};
    let starts: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = starts.clone();
    let svc_http = Lookups::start(move |req| {
        seen.lock()
            .unwrap()
            .insert(req.target.clone(), Instant::now());
        Reply::json(200, r#"{"v":1}"#).after(Duration::from_millis(400))
    });
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = svc_http.base();
    let steps = http_step("a", &format!("{base}/a/{{0}}"), "[\"/user_id\"]", "/a", "")
        + &http_step("b", &format!("{base}/b/{{0}}"), "[\"/user_id\"]", "/b", "");
    let svc = start(d, &config_text(d, "", "", &steps));
    let records: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("o{i}"), "user_id": format!("k{i}")}))
        .collect();
    let ids = svc.post_all(&records, 10);
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    let starts = starts.lock().unwrap();
    for i in 0..10 {
        let (a, b) = (starts[&format!("/a/k{i}")], starts[&format!("/b/k{i}")]);
        let apart = if a > b { a - b } else { b - a };
        assert!(
            apart < Duration::from_millis(400),
            "record o{i}: its two lookups began {apart:?} apart, so they did not overlap"
        );
    }
    for e in &out {
        assert_eq!(e["outcome"], "ok", "{e}");
        assert!(
            e["latency_ms"].as_f64().unwrap() < 790.0,
            "two 400 ms lookups in parallel, not in sequence: {e}"
        );
    }
}

#[test]
fn http_answers_map_to_outcomes_and_a_retry_after_is_waited_for() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use support::lookup_http::{Reply, Service as Lookups};
    let flaked = AtomicBool::new(false);
    let svc_http = Lookups::start(move |req| match req.target.as_str() {
        "/geo/ok" => Reply::json(200, r#"{"country":"FR"}"#),
        "/geo/gone" => Reply::json(404, ""),
        "/geo/null" => Reply::json(200, "null"),
        "/geo/bad" => Reply::json(400, "nope: bad ip"),
        "/geo/text" => Reply::json(200, "<html>"),
        "/geo/flaky" if !flaked.swap(true, Ordering::SeqCst) => {
            Reply::json(503, "busy").header("retry-after", "1")
        }
        _ => Reply::json(200, r#"{"country":"DE"}"#),
    });
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let steps = http_step(
        "geo",
        &format!("{}/geo/{{0}}", svc_http.base()),
        "[\"/ip\"]",
        "/geo",
        "",
    );
    let svc = start(d, &config_text(d, "", "max_attempts = 3\n", &steps));
    let records: Vec<Value> = ["ok", "gone", "null", "bad", "text", "flaky"]
        .iter()
        .map(|k| json!({"id": k, "user_id": "u1", "ip": k}))
        .collect();
    let ids = svc.post_all(&records, 10);
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    let (o, dl) = (by_id(&out), by_id(&dead));
    assert_eq!(o["ok"]["record"]["geo"], json!({"country": "FR"}));
    assert_eq!(o["gone"]["outcome"], "miss");
    assert_eq!(o["null"]["outcome"], "miss");
    let bad = dl["bad"]["error"].as_str().unwrap();
    assert!(
        bad.starts_with("step geo: ") && bad.contains("400") && bad.contains("nope: bad ip"),
        "{bad}"
    );
    assert_eq!(
        dl["bad"]["steps"]["geo"]["attempts"], 1,
        "a 400 is not retried"
    );
    assert_eq!(dl["text"]["outcome"], "failed");
    let flaky = o["flaky"];
    assert_eq!(flaky["outcome"], "ok");
    assert_eq!(flaky["steps"]["geo"]["attempts"], 2);
    assert!(
        flaky["latency_ms"].as_f64().unwrap() >= 1000.0,
        "Retry-After: 1 is waited for: {flaky}"
    );
}

#[test]
fn a_batched_http_step_sends_many_keys_per_request() {
    use support::lookup_http::{Reply, Service as Lookups};
    let svc_http = Lookups::start(|req| {
        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
        let results: Vec<Value> = body["keys"]
            .as_array()
            .map(|keys| keys.iter().map(|k| json!({"echo": k[0]})).collect())
            .unwrap_or_default();
        Reply::json(200, json!({"results": results}).to_string()).after(Duration::from_millis(20))
    });
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let steps = http_step(
        "echo",
        &format!("{}/batch", svc_http.base()),
        "[\"/user_id\"]",
        "/echo",
        "method = \"POST\"\nbatch_max_keys = 100\nbatch_max_ms = 20\nconcurrency = 2\n",
    );
    let svc = start(d, &config_text(d, "capacity = 500\n", "", &steps));
    let records: Vec<Value> = (0..2000)
        .map(|i| json!({"id": format!("b{i}"), "user_id": format!("k{i}")}))
        .collect();
    let ids = svc.post_all(&records, 500);
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    for e in &out {
        assert_eq!(
            e["record"]["echo"]["echo"], e["record"]["user_id"],
            "answers in order: {e}"
        );
    }
    let posts = svc_http.seen().len();
    assert!(
        posts <= 200,
        "2000 lookups in batches of up to 100 took {posts} POSTs"
    );
}

#[test]
fn after_kill_9_the_http_service_is_not_asked_again_for_finished_steps() {
    use support::lookup_http::{Reply, Service as Lookups};
    let svc_http = Lookups::start(|req| {
        let id = req.target.rsplit('/').next().unwrap_or("u0").to_string();
        Reply::json(
            200,
            json!({"account_id": id.trim_start_matches('u').parse::<u64>().unwrap_or(0) % 9})
                .to_string(),
        )
    });
    let tmp = tempfile::tempdir().unwrap();
    write_tables(tmp.path());
    let d = tmp.path();
    let steps = http_step(
        "user",
        &format!("{}/users/{{0}}", svc_http.base()),
        "[\"/user_id\"]",
        "/user",
        "",
    ) + &format!(
        "[lookup.steps.account]\nbackend = \"memory\"\ntable = \"{a}\"\nkey_column = \"account_id\"\n\
         binds = [\"/user/account_id\"]\ninto = \"/account\"\ndelay_ms = [3000, 3000]\n\
         attempt_timeout_ms = 20000\n",
        a = d.join("accounts.jsonl").display()
    );
    let text = config_text(d, "timeout_ms = 60000\n", "", &steps);
    let mut svc = start(d, &text);
    let records: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("c{i}"), "user_id": format!("u{i}")}))
        .collect();
    let ids = svc.post_all(&records, 10);
    wait_for("every record's first step", Duration::from_secs(20), || {
        svc_http.seen().len() >= 30
    });
    std::thread::sleep(Duration::from_millis(200));
    svc.kill9();
    let before = svc_http.seen().len();
    assert_eq!(before, 30, "one request per record before the crash");
    let svc = start(d, &text);
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert_eq!(
        svc_http.seen().len(),
        before,
        "the restored records did not ask the HTTP service again"
    );
    assert!(out.iter().all(|e| e["steps"]["user"]["attempts"] == 1));
}

/// The README's worked example: users → accounts over CQL (the CQL test node, or a real
/// node with `SLUICE_TEST_CQL`), geo over HTTP, and a slow scoring service after the
/// account; kill -9 while records wait for the score. Every record once, with every
/// step's result, and no finished step looked up again.
#[test]
fn users_then_accounts_over_cql_and_geo_over_http_survive_kill_9_mid_stream() {
    use support::cql::CqlTarget;
    use support::lookup_http::{Reply, Service as Lookups};
    let users: String = (0..20)
        .map(|i| {
            format!(
                "{}\n",
                json!({"user_id": format!("u{i}"), "name": format!("n{i}"), "account_id": i % 5})
            )
        })
        .collect();
    let accounts: String = (0..5)
        .map(|a| {
            format!(
                "{}\n",
                json!({"account_id": a, "plan": format!("p{a}"), "status": "active"})
            )
        })
        .collect();
    let target = CqlTarget::start(&[
        (
            "sluice_demo.users(user_id text PRIMARY KEY, name text, account_id int)",
            users,
        ),
        (
            "sluice_demo.accounts(account_id int PRIMARY KEY, plan text, status text)",
            accounts,
        ),
    ]);
    let geo = Lookups::start(|req| {
        Reply::json(
            200,
            json!({"country": req.target.rsplit('/').next().unwrap_or("")}).to_string(),
        )
    });
    let score =
        Lookups::start(|_| Reply::json(200, r#"{"score":7}"#).after(Duration::from_millis(2500)));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let steps = format!(
        "[lookup.cql]\ncontact_points = [\"{addr}\"]\nkeyspace = \"sluice_demo\"\n\
         [lookup.steps.user]\nbackend = \"cql\"\nquery = \"SELECT name, account_id FROM users WHERE user_id = ?\"\n\
         binds = [\"/user_id\"]\ninto = \"/user\"\n\
         [lookup.steps.account]\nbackend = \"cql\"\nquery = \"SELECT plan, status FROM accounts WHERE account_id = ?\"\n\
         binds = [\"/user/account_id\"]\ninto = \"/account\"\n",
        addr = target.addr
    ) + &http_step(
        "geo",
        &format!("{}/geo/{{0}}", geo.base()),
        "[\"/ip\"]",
        "/geo",
        "",
    ) + &http_step(
        "score",
        // Keyed by the record's id too: records of one plan would share one request.
        &format!("{}/score/{{0}}/{{1}}", score.base()),
        "[\"/account/plan\", \"/id\"]",
        "/score",
        "attempt_timeout_ms = 20000\n",
    );
    let text = config_text(d, "timeout_ms = 60000\n", "", &steps);
    let mut svc = start(d, &text);
    let records: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("x{i}"), "user_id": format!("u{}", i % 20), "ip": format!("10.0.0.{i}")}))
        .collect();
    let ids = svc.post_all(&records, 15);
    // Every record has asked for its score (so user, account and geo are done): kill -9.
    wait_for(
        "every record at the scoring step",
        Duration::from_secs(30),
        || {
            // (Keyed by the record id too: equal plans would share one request.)
            score.seen().len() >= 60
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    svc.kill9();
    let (selects, geo_asked) = (
        target.is_test_node().then(|| target.selects()),
        geo.seen().len(),
    );
    assert_eq!(geo_asked, 60);
    let svc = start(d, &text);
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert_eq!(geo.seen().len(), geo_asked, "geo is not asked again");
    if let Some(before) = selects {
        assert_eq!(target.selects(), before, "no CQL step is looked up again");
    }
    for e in &out {
        assert_eq!(e["outcome"], "ok", "{e}");
        let r = &e["record"];
        let i: u64 = e["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(r["user"]["account_id"], json!((i % 20) % 5), "{e}");
        assert_eq!(
            r["account"]["plan"],
            json!(format!("p{}", (i % 20) % 5)),
            "{e}"
        );
        assert_eq!(r["geo"]["country"], json!(format!("10.0.0.{i}")), "{e}");
        assert_eq!(r["score"], json!({"score": 7}), "{e}");
        for step in ["user", "account", "geo"] {
            assert_eq!(e["steps"][step]["attempts"], 1, "{step} once: {e}");
        }
        assert_eq!(
            e["steps"]["score"]["attempts"], 2,
            "the score in flight at the crash counts"
        );
    }
}
