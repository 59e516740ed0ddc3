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
    assert!(generated.starts_with('p'), "generated id {generated}");

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
