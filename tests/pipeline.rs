//! End-to-end guarantees over real HTTP: every accepted id reaches exactly one terminal
//! outcome, ordering per mode, deadlines, retries.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Config, Service, assert_exactly_once};

/// 100k records over 200 keys with random per-record latency (0–4 ms), a few that never
/// answer in time (attempt timeout) and a few that fail once (retried).
fn mixed_records(seed: u64) -> Vec<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..100_000)
        .map(|i| {
            let roll: f64 = rng.random();
            // Generous deadlines so a loaded CI machine cannot turn a fast record into a
            // timeout; a few records never answer in time (1.2 s > 0.8 s per attempt).
            let delay = if roll < 0.0002 {
                1200
            } else {
                rng.random_range(0..5)
            };
            let fail = u64::from(roll > 0.995);
            let key = if rng.random_bool(0.02) {
                "ghost".to_string()
            } else {
                format!("u{}", rng.random_range(1..=200))
            };
            json!({"id": format!("r{i}"), "user_id": key, "_sim": {"delay": delay, "fail": fail}})
        })
        .collect()
}

fn run_mode(mode: &str) -> (Vec<String>, Vec<Value>, Vec<Value>) {
    let svc = Service::start(&Config {
        pipeline: format!("mode = \"{mode}\"\npartitions = 4\ncapacity = 100\ntimeout_ms = 1000\n"),
        lookup: "attempt_timeout_ms = 800\n".into(),
        retry: "max_attempts = 3\ninitial_backoff_ms = 1\nmax_backoff_ms = 5\n".into(),
        memory: "delay_field = \"/_sim/delay\"\nfail_field = \"/_sim/fail\"\n".into(),
        ..Config::default()
    });
    let records = mixed_records(mode.len() as u64);
    let ids = svc.post_all(&records, 1000);
    assert_eq!(ids.len(), records.len());
    svc.wait_quiescent(Duration::from_secs(120));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    // Outcomes are the ones the inputs call for.
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for e in out.iter().chain(&dead) {
        let input = by_id[e["id"].as_str().unwrap()];
        let expect = if input["_sim"]["delay"] == 1200 {
            "timeout"
        } else if input["user_id"] == "ghost" {
            "miss"
        } else {
            "ok"
        };
        assert_eq!(e["outcome"], expect, "{e}");
        if expect == "ok" {
            let fails = input["_sim"]["fail"].as_u64().unwrap();
            assert_eq!(e["attempts"], fails + 1, "{e}");
        }
    }
    assert!(
        dead.iter()
            .all(|e| e["outcome"] == "timeout" && e["error"].is_string())
    );
    (ids, out, dead)
}

/// Seqs per partition in emission order (output and dead letters interleave in real
/// time, so each sink is checked on its own, plus the union sorted by seq is gap-free).
fn seqs_by<F: Fn(&Value) -> String>(lines: &[Value], group: F) -> HashMap<String, Vec<u64>> {
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for e in lines {
        m.entry(group(e))
            .or_default()
            .push(e["seq"].as_u64().unwrap());
    }
    m
}

fn strictly_increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn ordered_mode_emits_each_partition_strictly_by_seq() {
    let (_, out, dead) = run_mode("ordered");
    for (p, seqs) in seqs_by(&out, |e| e["partition"].to_string()) {
        assert!(strictly_increasing(&seqs), "partition {p} out of order");
    }
    for (p, seqs) in seqs_by(&dead, |e| e["partition"].to_string()) {
        assert!(
            strictly_increasing(&seqs),
            "dead letters of partition {p} out of order"
        );
    }
}

#[test]
fn key_ordered_mode_keeps_each_key_in_acceptance_order() {
    let (_, out, dead) = run_mode("key_ordered");
    for (k, seqs) in seqs_by(&out, |e| e["key"].to_string()) {
        assert!(strictly_increasing(&seqs), "key {k} out of order");
    }
    for (k, seqs) in seqs_by(&dead, |e| e["key"].to_string()) {
        assert!(
            strictly_increasing(&seqs),
            "dead letters of key {k} out of order"
        );
    }
}

#[test]
fn unordered_mode_loses_and_duplicates_nothing() {
    let (_, out, _) = run_mode("unordered");
    // With random latencies, completion order differs from seq order somewhere.
    let by_p = seqs_by(&out, |e| e["partition"].to_string());
    assert!(
        by_p.values().any(|s| !strictly_increasing(s)),
        "expected reordering"
    );
}

fn slow_timeout_config(on_timeout: &str) -> Config {
    Config {
        pipeline: format!("timeout_ms = 300\non_timeout = \"{on_timeout}\"\n"),
        lookup: "attempt_timeout_ms = 1000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    }
}

#[test]
fn deadline_goes_to_dead_letter_by_default() {
    let svc = Service::start(&slow_timeout_config("dead_letter"));
    let ids = svc.post_all(
        &[
            json!({"id": "slow", "user_id": "u1", "delay": 1000}),
            json!({"id": "fast", "user_id": "u2", "delay": 1}),
        ],
        10,
    );
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], "slow");
    assert_eq!(dead[0]["outcome"], "timeout");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("deadline of 300 ms")
    );
    assert!(dead[0]["latency_ms"].as_f64().unwrap() >= 300.0);
    assert!(dead[0]["record"].get("enrichment").is_none(), "un-enriched");
    assert_eq!(out[0]["id"], "fast");
}

#[test]
fn deadline_passes_through_unenriched_when_configured() {
    let svc = Service::start(&slow_timeout_config("pass_through"));
    let ids = svc.post_all(&[json!({"id": "slow", "user_id": "u1", "delay": 1000})], 10);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert!(dead.is_empty());
    assert_eq!(out[0]["outcome"], "timeout");
    assert!(out[0].get("error").is_none());
}

#[test]
fn attempt_timeouts_are_retried_when_configured() {
    let svc = Service::start(&Config {
        pipeline: "timeout_ms = 2000\n".into(),
        lookup: "attempt_timeout_ms = 50\n".into(),
        retry: "on = [\"timeout\"]\nmax_attempts = 3\ninitial_backoff_ms = 5\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    let ids = svc.post_all(&[json!({"id": "t", "user_id": "u1", "delay": 200})], 10);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert_eq!(dead[0]["outcome"], "timeout");
    assert_eq!(dead[0]["attempts"], 3);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("attempt 3 timed out")
    );
}

#[test]
fn retries_succeed_on_attempt_n_or_fail_after_max_attempts() {
    let svc = Service::start(&Config {
        retry: "max_attempts = 4\ninitial_backoff_ms = 2\nmax_backoff_ms = 10\n".into(),
        memory: "fail_field = \"/fail\"\n".into(),
        ..Config::default()
    });
    let records: Vec<Value> = (0..=5)
        .map(|n| json!({"id": format!("f{n}"), "user_id": "u1", "fail": n}))
        .collect();
    let ids = svc.post_all(&records, 10);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    for n in 0..=3u64 {
        let e = out
            .iter()
            .find(|e| e["id"] == format!("f{n}"))
            .expect("enriched");
        assert_eq!(e["outcome"], "ok");
        assert_eq!(e["attempts"], n + 1, "succeeds on attempt {}", n + 1);
    }
    for n in 4..=5u64 {
        let e = dead
            .iter()
            .find(|e| e["id"] == format!("f{n}"))
            .expect("dead letter");
        assert_eq!(e["outcome"], "failed");
        assert_eq!(e["attempts"], 4);
        assert!(e["error"].as_str().unwrap().contains("simulated failure"));
    }
}

#[test]
fn miss_can_be_dead_lettered_or_retried() {
    let svc = Service::start(&Config {
        lookup: "on_miss = \"dead_letter\"\n".into(),
        retry: "on = [\"miss\"]\nmax_attempts = 2\ninitial_backoff_ms = 1\n".into(),
        ..Config::default()
    });
    let ids = svc.post_all(&[json!({"id": "m", "user_id": "ghost"})], 10);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    assert_exactly_once(&ids, &out, &dead);
    assert_eq!(dead[0]["outcome"], "miss");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["error"], "lookup found no row");
}
