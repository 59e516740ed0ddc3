//! A leaving node keeps listening until it exits (README "Operating"): from SIGTERM to
//! exit its port never refuses a connection, `/readyz` answers 503 at once, and every
//! request is still served — standalone with 503 + `Retry-After`, in a cluster routed as
//! on any node (records of partitions owned elsewhere forwarded and acknowledged). The
//! real binary, connections in a tight loop, and the records audited in the sinks.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{TestCluster, assert_delivered, assert_key_order, config};
use support::leaving::{
    Connector, Poster, addr_of, alive, get_status, idle_keep_alive, readyz_503_within,
};
use support::{Config, Service, read_lines};

/// Records that take `delay_ms` each to look up (the memory backend's `delay_field`).
fn slow(prefix: &str, n: usize, delay_ms: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "user_id": format!("u{}", i + 1), "delay": delay_ms}))
        .collect()
}

/// After SIGTERM and until the process is gone, `/readyz` never answers 200.
fn readyz_never_200_until_exit(base: &str, pid: u32) {
    let addr = addr_of(base);
    while alive(pid) {
        let s = get_status(addr, "/readyz");
        assert_ne!(s, Some(200), "/readyz answered 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_standalone_node_accepts_connections_until_it_exits() {
    let mut svc = Service::start(&Config {
        pipeline: "partitions = 2\ntimeout_ms = 20000\n".into(),
        lookup: "attempt_timeout_ms = 10000\n".into(),
        memory: "delay_field = \"/delay\"\n".into(),
        ..Config::default()
    });
    let addr = addr_of(&svc.base);
    let pid = svc.pid().expect("runs");
    // In flight at SIGTERM: the drain keeps the process alive for about 1.5 s.
    let slow_ids = svc.post_all(&slow("slow", 3, 1500), 3);
    // A pooled connection, idle, as clients keep them.
    let _idle = idle_keep_alive(addr);
    let connector = Connector::start(addr, pid);
    let poster = Poster::start(addr, pid, |n| {
        vec![json!({"id": format!("p-{n}"), "user_id": format!("u{}", n % 40 + 1)})]
    });
    std::thread::sleep(Duration::from_millis(300));
    let term = Instant::now();
    svc.send_term();
    poster.mark();
    let not_ready = readyz_503_within(addr, Duration::from_secs(1));
    readyz_never_200_until_exit(&svc.base, pid);
    let lived = term.elapsed();
    let code = svc.wait_exit(Duration::from_secs(30));
    let connects = connector.finish();
    let posts = poster.finish();
    eprintln!(
        "standalone: exit {code:?} {lived:?} after SIGTERM; /readyz 503 after {not_ready:?}; \
         connections {connects:?}; posts {:?}, {} acknowledged ({} after SIGTERM)",
        posts.statuses,
        posts.acked.len(),
        posts.acked_after_mark.len()
    );
    assert_eq!(code, Some(0), "a clean exit");
    assert!(
        lived >= Duration::from_millis(1200),
        "the drain kept the process alive: {lived:?}"
    );
    assert!(not_ready.is_some(), "/readyz 503 right after SIGTERM");
    assert_eq!(
        connects.refused_alive, 0,
        "connections refused while the process lived: {connects:?}"
    );
    assert!(connects.failed_alive.is_empty(), "{connects:?}");
    assert!(connects.accepted > 100, "the loop ran: {connects:?}");
    assert!(posts.violations.is_empty(), "{:?}", posts.violations);
    assert!(
        posts.statuses.get(&503).copied().unwrap_or(0) > 0,
        "a draining standalone node answers 503: {:?}",
        posts.statuses
    );
    assert!(posts.acked_after_mark.is_empty(), "no 202 after SIGTERM");
    let mut ids = slow_ids;
    ids.extend(posts.acked);
    let out = read_lines(&svc.dir.join("out.jsonl"));
    let dead = read_lines(&svc.dir.join("dead.jsonl"));
    support::assert_exactly_once(&ids, &out, &dead);
}

#[test]
fn a_leaving_cluster_node_answers_and_forwards_until_it_exits() {
    let mut cfg = config("ordered");
    cfg.memory.push_str("delay_field = \"/delay\"\n");
    cfg.lookup.push_str("attempt_timeout_ms = 10000\n");
    let Some((mut c, load)) = TestCluster::start_loaded(
        "leaving_keeps_listening",
        1,
        3,
        cfg,
        3,
        Duration::from_secs(2),
    ) else {
        return;
    };
    let leaving = 1;
    let base = c.node(leaving).base.clone();
    let addr = addr_of(&base);
    let pid = c.node(leaving).pid().expect("runs");
    // In flight at SIGTERM: the partitions of the leaving node drain for about 1.5 s before
    // their handover (the others' slow records are forwarded and wait there).
    let slow_ids = c.node(leaving).post_all(&slow("slow", 40, 1500), 40);
    let _idle = idle_keep_alive(addr);
    let connector = Connector::start(addr, pid);
    let poster = Poster::start(addr, pid, |n| {
        vec![json!({"id": format!("t-{n}"), "user_id": format!("u{}", n % 40 + 1)})]
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut svc = c.nodes[leaving].take().expect("runs");
    let term = Instant::now();
    svc.send_term();
    poster.mark();
    let not_ready = readyz_503_within(addr, Duration::from_secs(1));
    readyz_never_200_until_exit(&base, pid);
    let lived = term.elapsed();
    let code = svc.wait_exit(Duration::from_secs(60));
    c.live.write().unwrap().retain(|b| *b != base);
    let connects = connector.finish();
    let posts = poster.finish();
    std::thread::sleep(Duration::from_secs(1));
    let mut report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    eprintln!(
        "leaving node: exit {code:?} {lived:?} after SIGTERM; /readyz 503 after \
         {not_ready:?}; connections {connects:?}; posts {:?}, {} acknowledged ({} after \
         SIGTERM); load {:?}",
        posts.statuses,
        posts.acked.len(),
        posts.acked_after_mark.len(),
        report.statuses
    );
    assert_eq!(code, Some(0), "a clean leave");
    assert!(not_ready.is_some(), "/readyz 503 right after SIGTERM");
    assert_eq!(
        connects.refused_alive, 0,
        "connections refused while the process lived: {connects:?}"
    );
    assert!(connects.failed_alive.is_empty(), "{connects:?}");
    assert!(posts.violations.is_empty(), "{:?}", posts.violations);
    // The leaving node kept routing: records of partitions owned elsewhere were forwarded
    // and acknowledged after its SIGTERM, and emitted by their owners.
    assert!(
        !posts.acked_after_mark.is_empty(),
        "202s from the leaving node after SIGTERM: {:?}",
        posts.statuses
    );
    let after: std::collections::HashSet<String> = posts.acked_after_mark.iter().cloned().collect();
    report.acked.push(slow_ids);
    report.acked.push(posts.acked);
    let env = assert_delivered(&c, &report);
    assert_key_order(&env);
    let elsewhere = env
        .iter()
        .filter(|(node, e)| {
            *node != leaving && e["id"].as_str().is_some_and(|id| after.contains(id))
        })
        .count();
    assert!(
        elsewhere > 0,
        "records acknowledged by the leaving node after SIGTERM were emitted by other nodes"
    );
}
