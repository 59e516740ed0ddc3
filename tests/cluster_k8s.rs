//! The cluster under Kubernetes' own failure modes (README "Cluster"): a pod back on an
//! empty volume (its PersistentVolumeClaim re-created, an `emptyDir`), a frozen pod that
//! meets its replacement, and peers that cannot reach an owner which still reaches etcd.
//! Real etcd, real `sluice serve` processes, load to random nodes; each test ends with
//! the audit: every acknowledged id exactly once across every volume's sinks.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::{LEASE_TTL_MS, TestCluster, assert_delivered, config};
use support::proxy::TcpProxy;

/// The ids of the records a checkpoint directory still holds (pending, or staged for
/// another owner): what its node had not handed on when its volume was deleted.
fn held_ids(dir: &Path) -> HashSet<String> {
    let (state, _, _) = sluice::durability::files::restore(dir).expect("read the old volume");
    state
        .pending
        .values()
        .chain(state.staged.values())
        .map(|r| serde_json::from_str::<String>(&r.id).unwrap_or_else(|_| r.id.to_string()))
        .collect()
}

#[test]
fn a_node_back_on_an_empty_volume_after_a_graceful_stop_loses_nothing_it_acknowledges() {
    let Some((mut c, load)) = TestCluster::start_loaded(
        "empty-volume-term",
        1,
        3,
        config("ordered"),
        4,
        Duration::from_secs(2),
    ) else {
        return;
    };
    c.leave(1);
    let old = c.spare_checkpoints();
    c.wipe(1);
    let held = held_ids(&c.spare_checkpoints()[old.len()]);
    assert!(
        held.is_empty(),
        "a graceful leave hands everything over: {held:?}"
    );
    // The same id on an empty directory: a new incarnation. Before, the owners took its
    // new batches (stage numbers from 0 again) for resends of its former life's and
    // dropped them: 2,029 acknowledged records lost in the first seconds back.
    c.restart(1);
    std::thread::sleep(Duration::from_secs(4));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    assert_delivered(&c, &report);
    eprintln!(
        "SIGTERM + empty volume: {} acknowledged, statuses {:?}",
        report.ids().len(),
        report.statuses
    );
}

#[test]
fn a_node_back_on_an_empty_volume_after_kill_9_loses_only_what_its_volume_held() {
    let Some((mut c, load)) = TestCluster::start_loaded(
        "empty-volume-kill",
        1,
        3,
        config("unordered"),
        4,
        Duration::from_secs(2),
    ) else {
        return;
    };
    c.kill9(1);
    c.wipe(1);
    let held = held_ids(&c.spare_checkpoints()[0]);
    c.restart(1);
    c.wait_balanced(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    let envelopes = c.envelopes();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (_, e) in &envelopes {
        *seen
            .entry(e["id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let ids = report.ids();
    let missing: Vec<&String> = ids.iter().filter(|i| !seen.contains_key(*i)).collect();
    let unexplained: Vec<&&String> = missing.iter().filter(|i| !held.contains(**i)).collect();
    let doubled: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "kill -9 + empty volume: {} acknowledged, {} missing (all held by the deleted volume: {}), \
         {} doubled, statuses {:?}",
        ids.len(),
        missing.len(),
        unexplained.is_empty(),
        doubled.len(),
        report.statuses
    );
    assert!(
        unexplained.is_empty(),
        "{} acknowledged ids lost that the deleted volume did not hold, e.g. {:?}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(5)]
    );
    assert!(doubled.is_empty(), "emitted twice: {doubled:?}");
}

#[test]
fn a_frozen_node_that_meets_its_replacement_hands_over_and_exits_2() {
    let Some((mut c, load)) =
        TestCluster::start_loaded("twin", 1, 3, config("ordered"), 4, Duration::from_secs(2))
    else {
        return;
    };
    // Frozen past its lease (a stuck node, a paused VM); the StatefulSet starts a
    // replacement with the same pod name on an empty volume.
    let mut frozen = c.detach(1);
    frozen.signal("STOP");
    std::thread::sleep(Duration::from_millis(LEASE_TTL_MS + 2500));
    c.restart(1);
    c.wait_balanced(Duration::from_secs(20));
    let epochs_before = epochs(&c);
    frozen.signal("CONT");
    let woke = Instant::now();
    let code = frozen.wait_exit(Duration::from_secs(60));
    eprintln!(
        "the woken twin exited with {code:?} after {:?}",
        woke.elapsed()
    );
    assert_eq!(
        code,
        Some(2),
        "the woken node sees its id taken and exits 2"
    );
    // Ownership never flapped: every partition changed hands at most once meanwhile.
    let epochs_after = epochs(&c);
    let moved = epochs_before
        .iter()
        .zip(&epochs_after)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        moved <= 1,
        "{moved} partitions changed owner while the twin woke: {epochs_before:?} -> {epochs_after:?}"
    );
    c.wait_balanced(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    // What the frozen node held (its own directory is audited too) reached the owners.
    let left = held_ids(&c.spare_checkpoints()[0]);
    assert!(
        left.is_empty(),
        "the twin left {} records behind",
        left.len()
    );
    assert_delivered(&c, &report);
    eprintln!(
        "frozen twin: {} acknowledged, statuses {:?}",
        report.ids().len(),
        report.statuses
    );
}

/// Every partition's epoch as the first live node sees it.
fn epochs(c: &TestCluster) -> Vec<u64> {
    c.view()["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["epoch"].as_u64().unwrap_or(0))
        .collect()
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn peers_cut_off_from_an_owner_stage_its_records_then_move_its_partitions() {
    let mut cfg = config("ordered");
    cfg.cluster = "peer_timeout_ms = 1500\n".into();
    let Some(mut c) = TestCluster::start("peer-cut", 1, 0, cfg) else {
        return;
    };
    // n2 is reached by its peers through a proxy (its advertised URL), by clients and
    // etcd directly: cutting the proxy cuts it from its peers only.
    let port = free_port();
    let proxy = TcpProxy::start(([127, 0, 0, 1], port).into());
    c.env = vec![
        Vec::new(),
        Vec::new(),
        vec![
            ("SLUICE__SERVER__BIND".into(), format!("127.0.0.1:{port}")),
            ("SLUICE__CLUSTER__ADVERTISE".into(), proxy.url()),
        ],
    ];
    for _ in 0..3 {
        c.add_node();
    }
    c.wait_balanced(Duration::from_secs(20));
    let load = support::cluster::Load::start(c.live.clone(), 4, 40);
    std::thread::sleep(Duration::from_secs(2));

    // A black hole first (connections accepted, nothing answered): before, every POST
    // took 2.0 s (waiting for the owner) and ownership never moved.
    let (moved, took, posts, slow, bh_ids) = cut_until_moved(&c, || proxy.cut());
    eprintln!(
        "black hole: n2's partitions moved after {took:?}; {posts} POSTs to n0 meanwhile, \
         {slow} slower than 1.5 s"
    );
    assert!(
        moved,
        "n2's partitions never moved: {}",
        c.node(0).get("/v1/cluster").body
    );
    assert!(
        took >= Duration::from_millis(1500),
        "moved before the peer timeout: {took:?}"
    );
    assert!(
        slow <= 2,
        "{slow} of {posts} answers waited for the unreachable owner"
    );
    let metrics = c.node(0).get("/metrics").body;
    assert!(
        metrics.contains("sluice_cluster_peer_unreachable{peer=\"n2\"} 1"),
        "n0 says it cannot reach n2"
    );
    proxy.restore();
    c.wait_balanced(Duration::from_secs(30));
    let metrics = c.node(0).get("/metrics").body;
    assert!(
        metrics.contains("sluice_cluster_peer_unreachable{peer=\"n2\"} 0"),
        "n0 reaches n2 again"
    );

    // Connections refused: before, 264 of 268 batches to the other nodes got 503 for the
    // whole cut and ownership never moved.
    let (moved, took, _, _, refused_ids) = cut_until_moved(&c, || proxy.refuse());
    eprintln!("refused: n2's partitions moved after {took:?}");
    assert!(
        moved,
        "n2's partitions never moved: {}",
        c.node(0).get("/v1/cluster").body
    );
    proxy.restore();
    c.wait_balanced(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let mut report = load.finish();
    report.acked.push(bh_ids);
    report.acked.push(refused_ids);
    c.wait_quiescent(Duration::from_secs(30));
    let answered: u64 = report.statuses.values().sum();
    let refused = report.statuses.get(&503).copied().unwrap_or(0);
    eprintln!(
        "peer cut: {} acknowledged, statuses {:?}",
        report.ids().len(),
        report.statuses
    );
    assert!(
        refused * 5 < answered,
        "{refused} of {answered} answers were 503: records for an unreachable owner are staged"
    );
    assert_delivered(&c, &report);
}

/// Cut n2 from its peers with `cut`, then POST to n0 (records of every partition) until
/// n0 shows n2 unreachable and owning nothing, 15 s at most. Answers whether that
/// happened, when, how many POSTs were answered, how many took longer than 1.5 s, and the
/// ids acknowledged.
fn cut_until_moved(
    c: &TestCluster,
    cut: impl FnOnce(),
) -> (bool, Duration, usize, usize, Vec<String>) {
    let cut_at = Instant::now();
    cut();
    let (mut posts, mut slow, mut acked) = (0, 0, Vec::new());
    while cut_at.elapsed() < Duration::from_secs(15) {
        let v = c.node(0).get("/v1/cluster").json();
        let unreachable = v["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["node"] == "n2" && m["state"] == "unreachable")
        });
        let owns = v["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["owner"] == "n2"));
        if unreachable && !owns {
            return (true, cut_at.elapsed(), posts, slow, acked);
        }
        let records: Vec<serde_json::Value> = (0..12)
            .map(|j| serde_json::json!({"id": format!("cut-{}-{posts}-{j}", cut_at.elapsed().as_nanos()), "user_id": format!("u{j}")}))
            .collect();
        let t = Instant::now();
        let r = c.node(0).post_json("/v1/records", &records);
        if t.elapsed() > Duration::from_millis(1500) {
            slow += 1;
        }
        posts += 1;
        match r.status {
            202 => acked.extend(
                records
                    .iter()
                    .map(|r| r["id"].as_str().unwrap_or("").to_string()),
            ),
            503 | 429 => assert!(r.header("retry-after").is_some(), "{}", r.body),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    (false, cut_at.elapsed(), posts, slow, acked)
}
