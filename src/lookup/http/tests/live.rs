//! The backend against a real HTTP service on an ephemeral port: what is sent, what each
//! answer becomes, batching, connections, TLS, limits, cache and coalescing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::pure::format_http_date;
use super::server::{Reply, Seen, Service};
use crate::lookup::http::{HttpError, HttpLookup};
use crate::lookup::{Lookup, LookupError, LookupRequest, LookupResult, Pending, Row};
use crate::settings::Step;

fn step(keys: &str) -> Step {
    toml::from_str(&format!("backend = \"http\"\ninto = \"/out\"\n{keys}")).expect("a step")
}

fn lookup(keys: &str) -> HttpLookup {
    HttpLookup::new("geo", &step(keys)).expect("the backend")
}

fn start(l: &HttpLookup, record: &str) -> Pending {
    l.start(&LookupRequest {
        key: "",
        record,
        attempt: 1,
    })
}

/// Wait for every pending lookup, from a runtime that is not the backend's (as a partition
/// thread would).
fn wait_all(pending: Vec<Pending>) -> Vec<LookupResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    rt.block_on(futures_util::future::join_all(pending.into_iter().map(
        |p| async move {
            match p {
                Pending::Ready(r) => r,
                Pending::Later(f) => f.await,
            }
        },
    )))
}

fn get(l: &HttpLookup, record: &str) -> LookupResult {
    wait_all(vec![start(l, record)]).remove(0)
}

fn row(v: Value) -> LookupResult {
    Ok(Some(Row::from(v.to_string())))
}

/// Answers `{"target": <path and query>}`.
fn echo(s: &Seen) -> Reply {
    Reply::json(200, json!({ "target": s.target }).to_string())
}

#[test]
fn get_fills_placeholders_percent_encoded() {
    let svc = Service::start(echo);
    let l = lookup(&format!(
        "url = \"{}/geo/{{0}}/{{1}}?n={{2}}&b={{3}}\"\nbinds = [\"/ip\", \"/city\", \"/n\", \"/b\"]\nheaders = {{ x-api-key = \"k1\" }}",
        svc.base()
    ));
    assert_eq!(
        l.describe(),
        format!("http GET {}/geo/{{0}}/{{1}}?n={{2}}&b={{3}}", svc.base())
    );
    let cases = [
        (
            r#"{"ip": "a b/c", "city": "zürich", "n": 42, "b": true}"#,
            "/geo/a%20b%2Fc/z%C3%BCrich?n=42&b=true",
        ),
        (
            r#"{"ip": "10.0.0.1", "city": "日本", "n": -1.5, "b": false}"#,
            "/geo/10.0.0.1/%E6%97%A5%E6%9C%AC?n=-1.5&b=false",
        ),
        (
            r#"{"ip": "?&=#", "city": "%", "n": 0, "b": "1"}"#,
            "/geo/%3F%26%3D%23/%25?n=0&b=1",
        ),
    ];
    for (record, target) in cases {
        assert_eq!(
            get(&l, record),
            row(json!({ "target": target })),
            "{record}"
        );
    }
    let seen = svc.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "GET");
        assert_eq!(s.headers.get("x-api-key").map(String::as_str), Some("k1"));
        assert_eq!(
            s.headers.get("accept").map(String::as_str),
            Some("application/json")
        );
    }
}

#[test]
fn post_sends_the_keys_and_the_result_pointer_picks() {
    let svc = Service::start(|s| {
        let body: Value = serde_json::from_str(&s.body).expect("a JSON body");
        Reply::json(
            200,
            json!({ "data": { "got": body }, "other": 1 }).to_string(),
        )
    });
    let l = lookup(&format!(
        "url = \"{}/lookup\"\nmethod = \"POST\"\nbinds = [\"/user/id\", \"/n\"]\nresult = \"/data\"",
        svc.base()
    ));
    assert_eq!(
        get(&l, r#"{"user": {"id": "u 1"}, "n": 7}"#),
        row(json!({ "got": { "keys": ["u 1", 7] } }))
    );
    let s = &svc.seen()[0];
    assert_eq!((s.method.as_str(), s.target.as_str()), ("POST", "/lookup"));
    assert_eq!(s.body, r#"{"keys":["u 1",7]}"#);
    assert_eq!(
        s.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

/// Answers a batch `{"keys": [[k], ...]}` with `{"results": [{"k": k} | null for "none"]}`.
fn batch_echo(s: &Seen) -> Reply {
    let body: Value = serde_json::from_str(&s.body).expect("a JSON body");
    let results: Vec<Value> = body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| match &k[0] {
            Value::String(s) if s == "none" => Value::Null,
            v => json!({ "k": v }),
        })
        .collect();
    Reply::json(200, json!({ "results": results }).to_string())
}

#[test]
fn batches_hold_up_to_max_keys_and_answers_match_in_order() {
    let svc = Service::start(batch_echo);
    let l = lookup(&format!(
        "url = \"{}/batch\"\nbinds = [\"/k\"]\nbatch_max_keys = 4\nbatch_max_ms = 300\nattempt_timeout_ms = 5000",
        svc.base()
    ));
    assert!(l.describe().starts_with("http POST "), "{}", l.describe());
    let records: Vec<String> = (0..10)
        .map(|i| {
            if i == 5 {
                r#"{"k": "none"}"#.to_string()
            } else {
                format!(r#"{{"k": "key{i}"}}"#)
            }
        })
        .collect();
    let t0 = Instant::now();
    let results = wait_all(records.iter().map(|r| start(&l, r)).collect());
    for (i, r) in results.into_iter().enumerate() {
        if i == 5 {
            assert_eq!(r, Ok(None), "null is a miss");
        } else {
            assert_eq!(r, row(json!({ "k": format!("key{i}") })), "key {i}");
        }
    }
    let seen = svc.seen();
    let sizes: Vec<usize> = seen
        .iter()
        .map(|s| {
            let v: Value = serde_json::from_str(&s.body).expect("JSON");
            v["keys"].as_array().expect("keys").len()
        })
        .collect();
    assert_eq!(sizes, vec![4, 4, 2], "ceil(10 / 4) POSTs, full ones first");
    assert!(
        seen.iter()
            .all(|s| s.method == "POST" && s.target == "/batch")
    );
    // Each key went exactly once (which batch a key joins follows its task, not start order).
    let mut sent: Vec<String> = seen
        .iter()
        .flat_map(|s| {
            let v: Value = serde_json::from_str(&s.body).expect("JSON");
            v["keys"].as_array().expect("keys").clone()
        })
        .map(|k| k.to_string())
        .collect();
    sent.sort();
    let mut want: Vec<String> = records
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r).expect("JSON");
            json!([v["k"]]).to_string()
        })
        .collect();
    want.sort();
    assert_eq!(sent, want);
    assert!(
        seen[0].body.starts_with(r#"{"keys":[[""#),
        "{}",
        seen[0].body
    );
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(280),
        "the last batch waited for more keys: {elapsed:?}"
    );
    // A lone key goes once batch_max_ms is over.
    let t1 = Instant::now();
    assert_eq!(get(&l, r#"{"k": 1}"#), row(json!({ "k": 1 })));
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
}

#[test]
fn a_batch_answer_of_the_wrong_length_fails_every_lookup() {
    let svc = Service::start(|_| Reply::json(200, r#"{"results": [{"only": "one"}]}"#));
    let l = lookup(&format!(
        "url = \"{}/batch\"\nbinds = [\"/k\"]\nbatch_max_keys = 8\nbatch_max_ms = 200",
        svc.base()
    ));
    let results = wait_all(
        (0..3)
            .map(|i| start(&l, &format!(r#"{{"k": {i}}}"#)))
            .collect(),
    );
    assert_eq!(results.len(), 3);
    for r in results {
        let Err(LookupError::Fatal(m)) = r else {
            panic!("fatal, got {r:?}");
        };
        assert!(m.starts_with("HTTP 200: "), "{m}");
        assert!(m.contains(r#"{"results": [{"only": "one"}]}"#), "{m}");
    }
    assert_eq!(svc.seen().len(), 1, "one batch");
}

#[test]
fn statuses_become_misses_retries_and_failures() {
    let date = format_http_date(SystemTime::now() + Duration::from_secs(4));
    let svc = Service::start(move |s| match s.target.as_str() {
        "/s/found" => Reply::json(200, r#"{"city":"Oslo"}"#),
        "/s/404" => Reply::json(404, r#"{"error": "no such ip"}"#),
        "/s/null" => Reply::json(200, "null"),
        "/s/429s" => Reply::json(429, "slow down").header("Retry-After", "2"),
        "/s/429d" => Reply::json(429, "slow down").header("Retry-After", &date),
        "/s/503" => Reply::json(503, "unavailable"),
        "/s/408" => Reply::json(408, ""),
        "/s/400" => Reply::json(400, format!("bad key: {}", "x".repeat(400))),
        "/s/html" => Reply::json(200, "<html>hello</html>"),
        other => panic!("unexpected {other}"),
    });
    let l = lookup(&format!(
        "url = \"{}/s/{{0}}\"\nbinds = [\"/case\"]",
        svc.base()
    ));
    let case = |c: &str| get(&l, &format!(r#"{{"case": "{c}"}}"#));
    assert_eq!(case("found"), row(json!({ "city": "Oslo" })));
    assert_eq!(case("404"), Ok(None));
    assert_eq!(case("null"), Ok(None));
    assert_eq!(
        case("429s"),
        Err(LookupError::RetryAfter(
            "HTTP 429: slow down".into(),
            Duration::from_secs(2)
        ))
    );
    match case("429d") {
        Err(LookupError::RetryAfter(m, wait)) => {
            assert_eq!(m, "HTTP 429: slow down");
            assert!(
                wait > Duration::from_secs(2) && wait <= Duration::from_secs(4),
                "{wait:?}"
            );
        }
        other => panic!("RetryAfter, got {other:?}"),
    }
    assert_eq!(
        case("503"),
        Err(LookupError::Retryable("HTTP 503: unavailable".into()))
    );
    assert_eq!(
        case("408"),
        Err(LookupError::Retryable("HTTP 408: ".into()))
    );
    let Err(LookupError::Fatal(m)) = case("400") else {
        panic!("400 is fatal");
    };
    assert_eq!(m, format!("HTTP 400: bad key: {}", "x".repeat(191)));
    let Err(LookupError::Fatal(m)) = case("html") else {
        panic!("a 200 that is not JSON is fatal");
    };
    assert!(
        m.starts_with("HTTP 200: ") && m.ends_with("<html>hello</html>"),
        "{m}"
    );
    assert!(l.is_ready(), "the service answered throughout");
}

/// A port nothing listens on (bound once, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

#[test]
fn a_refused_connection_is_retryable_and_readiness_recovers_without_traffic() {
    let port = free_port();
    let l = lookup(&format!(
        "url = \"http://127.0.0.1:{port}/geo/{{0}}\"\nbinds = [\"/ip\"]\nattempt_timeout_ms = 2000"
    ));
    assert!(l.is_ready(), "ready until a connection fails");
    match get(&l, r#"{"ip": "1"}"#) {
        Err(LookupError::Retryable(m)) => assert!(!m.is_empty()),
        other => panic!("retryable, got {other:?}"),
    }
    assert!(!l.is_ready(), "unready after a refused connection");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!l.is_ready(), "still nothing listens");
    let svc = Service::start_on(port, echo);
    let t0 = Instant::now();
    while !l.is_ready() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(l.is_ready(), "the probe found the service");
    assert!(
        svc.seen().is_empty(),
        "readiness came back without a lookup"
    );
    assert_eq!(
        get(&l, r#"{"ip": "1"}"#),
        row(json!({ "target": "/geo/1" }))
    );
}

#[test]
fn an_attempt_over_its_timeout_is_a_timeout() {
    let svc = Service::start(|_| Reply::json(200, "{}").after(Duration::from_secs(2)));
    let l = lookup(&format!(
        "url = \"{}/slow/{{0}}\"\nbinds = [\"/k\"]\nattempt_timeout_ms = 150",
        svc.base()
    ));
    let t0 = Instant::now();
    let r = get(&l, r#"{"k": 1}"#);
    let took = t0.elapsed();
    assert!(matches!(r, Err(LookupError::Timeout(_))), "{r:?}");
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    assert!(l.is_ready(), "a slow answer is not an unreachable service");
}

#[test]
fn connections_are_kept_alive() {
    let svc = Service::start(echo);
    let l = lookup(&format!(
        "url = \"{}/k/{{0}}\"\nbinds = [\"/k\"]\nconcurrency = 4",
        svc.base()
    ));
    for i in 0..100 {
        assert_eq!(
            get(&l, &format!(r#"{{"k": {i}}}"#)),
            row(json!({ "target": format!("/k/{i}") }))
        );
    }
    assert_eq!(svc.seen().len(), 100);
    let c = svc.connections();
    assert!(
        (1..=4).contains(&c),
        "100 sequential lookups took {c} connections"
    );
}

#[test]
fn in_flight_requests_stay_within_concurrency() {
    let svc = Service::start(|s| echo(s).after(Duration::from_millis(100)));
    let l = lookup(&format!(
        "url = \"{}/k/{{0}}\"\nbinds = [\"/k\"]\nconcurrency = 3\nattempt_timeout_ms = 5000",
        svc.base()
    ));
    let records: Vec<String> = (0..12).map(|i| format!(r#"{{"k": {i}}}"#)).collect();
    let t0 = Instant::now();
    let results = wait_all(records.iter().map(|r| start(&l, r)).collect());
    assert!(
        results.iter().all(|r| matches!(r, Ok(Some(_)))),
        "{results:?}"
    );
    assert_eq!(
        svc.max_in_flight(),
        3,
        "never more than concurrency, and all of it used"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(390),
        "12 requests of 100 ms, 3 at a time: {:?}",
        t0.elapsed()
    );
    assert!(svc.connections() <= 3, "{}", svc.connections());
}

#[test]
fn tls_with_the_step_ca_and_without_it() {
    let (svc, pem) = Service::start_tls(echo);
    let url = format!("https://localhost:{}/tls/{{0}}", svc.addr.port());
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pem).expect("write the CA");
    let trusted = lookup(&format!(
        "url = \"{url}\"\nbinds = [\"/k\"]\nca_file = \"{}\"\nattempt_timeout_ms = 3000",
        ca.display()
    ));
    assert_eq!(
        get(&trusted, r#"{"k": "a"}"#),
        row(json!({ "target": "/tls/a" }))
    );
    let untrusted = lookup(&format!(
        "url = \"{url}\"\nbinds = [\"/k\"]\nattempt_timeout_ms = 3000"
    ));
    match get(&untrusted, r#"{"k": "a"}"#) {
        Err(LookupError::Retryable(m)) => {
            assert!(m.to_lowercase().contains("certificate"), "{m}")
        }
        other => panic!("an untrusted certificate fails, got {other:?}"),
    }
    assert_eq!(svc.seen().len(), 1, "only the trusted client got through");
    // A CA file that is not PEM, or not there, refuses the step.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    for path in [junk, dir.path().join("absent.pem")] {
        let s = step(&format!(
            "url = \"{url}\"\nbinds = [\"/k\"]\nca_file = \"{}\"",
            path.display()
        ));
        let e = HttpLookup::new("geo", &s).err().expect("refused");
        assert!(matches!(e, HttpError::CaFile { .. }), "{e}");
        assert!(
            e.to_string().starts_with("lookup.steps.geo.ca_file: "),
            "{e}"
        );
    }
}

#[test]
fn the_cache_keeps_rows_for_ttl_and_misses_only_for_miss_ttl() {
    let svc = Service::start(|s| match s.target.as_str() {
        "/c/miss" => Reply::json(404, ""),
        "/c/down" => Reply::json(503, ""),
        _ => echo(s),
    });
    let base = svc.base();
    let cached = |extra: &str| {
        lookup(&format!(
            "url = \"{base}/c/{{0}}\"\nbinds = [\"/k\"]\ncache = {{ max_entries = 100, ttl_ms = 60000{extra} }}"
        ))
    };
    let l = cached("");
    let found = row(json!({ "target": "/c/x" }));
    assert_eq!(get(&l, r#"{"k": "x"}"#), found);
    assert_eq!(get(&l, r#"{"k": "x"}"#), found);
    assert!(
        matches!(start(&l, r#"{"k": "x"}"#), Pending::Ready(Ok(Some(_)))),
        "a hit answers at once"
    );
    assert_eq!(l.cache_stats(), (2, 1));
    assert_eq!(get(&l, r#"{"k": "miss"}"#), Ok(None));
    assert_eq!(get(&l, r#"{"k": "miss"}"#), Ok(None));
    assert!(get(&l, r#"{"k": "down"}"#).is_err());
    assert!(get(&l, r#"{"k": "down"}"#).is_err());
    let count = |t: &str| svc.seen().iter().filter(|s| s.target == t).count();
    assert_eq!(count("/c/x"), 1, "a row is cached");
    assert_eq!(count("/c/miss"), 2, "miss_ttl 0: misses are not cached");
    assert_eq!(count("/c/down"), 2, "errors are never cached");

    let m = cached(", miss_ttl_ms = 300");
    assert_eq!(get(&m, r#"{"k": "miss"}"#), Ok(None));
    assert_eq!(get(&m, r#"{"k": "miss"}"#), Ok(None));
    assert_eq!(count("/c/miss"), 3, "the miss is kept for miss_ttl");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(get(&m, r#"{"k": "miss"}"#), Ok(None));
    assert_eq!(count("/c/miss"), 4, "and asked again after it");
    // Typed keys: the string "1" and the number 1 are different lookups.
    assert!(get(&l, r#"{"k": "1"}"#).is_ok());
    assert!(get(&l, r#"{"k": 1}"#).is_ok());
    assert_eq!(count("/c/1"), 2);
}

#[test]
fn equal_binds_in_flight_share_one_request() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let svc = Service::start(move |s| {
        h.fetch_add(1, Ordering::SeqCst);
        echo(s).after(Duration::from_millis(200))
    });
    let l = lookup(&format!(
        "url = \"{}/k/{{0}}\"\nbinds = [\"/k\"]\nattempt_timeout_ms = 3000",
        svc.base()
    ));
    let mut pending: Vec<Pending> = (0..10).map(|_| start(&l, r#"{"k": "same"}"#)).collect();
    pending.push(start(&l, r#"{"k": "other"}"#));
    let results = wait_all(pending);
    for r in &results[..10] {
        assert_eq!(*r, row(json!({ "target": "/k/same" })));
    }
    assert_eq!(results[10], row(json!({ "target": "/k/other" })));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one request per distinct key"
    );
    assert_eq!(l.coalesced(), 9);
    // The flight is over: the next lookup asks again (no cache configured).
    assert!(get(&l, r#"{"k": "same"}"#).is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[test]
fn the_ingest_check_and_bad_steps() {
    let l = lookup("url = \"http://127.0.0.1:9/x/{0}/{1}\"\nbinds = [\"/a\", \"/b/c\"]");
    assert_eq!(l.check(r#"{"a": 1, "b": {"c": "x"}}"#), Ok(()));
    let (p, m) = l.check(r#"{"a": 1}"#).unwrap_err();
    assert_eq!(p, "/b/c");
    assert!(m.starts_with("missing"), "{m}");
    let (p, m) = l.check(r#"{"a": {"x": 1}, "b": {"c": 1}}"#).unwrap_err();
    assert_eq!(p, "/a");
    assert!(m.starts_with("is an object"), "{m}");
    let (_, m) = l.check(r#"{"a": null, "b": {"c": 1}}"#).unwrap_err();
    assert!(m.starts_with("is null"), "{m}");
    // start() on an unbindable record fails it without a request.
    assert!(matches!(
        start(&l, r#"{"a": [1], "b": {"c": 1}}"#),
        Pending::Ready(Err(LookupError::Fatal(m))) if m.starts_with("/a: is an array")
    ));

    let refused = |keys: &str| {
        HttpLookup::new("geo", &step(keys))
            .err()
            .expect("refused")
            .to_string()
    };
    let e = refused("url = \"http://h/{x}\"\nbinds = [\"/a\"]");
    assert!(
        e.starts_with("lookup.steps.geo.url: ") && e.contains("placeholder"),
        "{e}"
    );
    let e = refused("url = \"http://h/{0}/{1}\"\nbinds = [\"/a\"]");
    assert!(e.contains("uses {1} but the step has 1 bind(s)"), "{e}");
    let e = refused("url = \"ftp://h/{0}\"\nbinds = [\"/a\"]");
    assert!(
        e.starts_with("lookup.steps.geo.url: ") && e.contains("http://"),
        "{e}"
    );
    let e = refused("url = \"not a url\"\nbinds = [\"/a\"]");
    assert!(e.starts_with("lookup.steps.geo.url: "), "{e}");
    let e = refused("url = \"http://h/{0}\"\nbinds = [\"a\"]");
    assert!(e.starts_with("lookup.steps.geo.binds: "), "{e}");
    let e = refused("url = \"http://h/\"\nresult = \"x\"");
    assert!(e.starts_with("lookup.steps.geo.result: "), "{e}");
    let e = refused("url = \"http://h/\"\nheaders = { \"bad name\" = \"v\" }");
    assert!(e.starts_with("lookup.steps.geo.headers: `bad name`"), "{e}");
    let e = refused("url = \"http://h/\"\nheaders = { x-ok = \"bad\\nvalue\" }");
    assert!(e.starts_with("lookup.steps.geo.headers: `x-ok`"), "{e}");
    let e = refused("url = \"http://h/{0}\"\nbinds = [\"/a\"]\nbatch_max_keys = 10");
    assert!(e.contains("batched"), "{e}");
}
