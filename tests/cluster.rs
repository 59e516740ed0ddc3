//! Cluster tests: a real etcd and several real `sluice serve` processes on loopback, load
//! sent to random nodes, nodes added, removed (SIGTERM), killed (-9), frozen (SIGSTOP),
//! and etcd members killed. Every test checks the records, not just the answers: each
//! acknowledged id exactly once across the nodes' sinks, one writer per (partition, epoch),
//! order where the mode promises it.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{
    LEASE_TTL_MS, TestCluster, assert_delivered, assert_key_order,
    assert_seq_increasing_per_partition, config,
};

fn run_for(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn three_nodes_serve_load_sent_to_random_nodes_in_every_mode() {
    for mode in ["ordered", "unordered", "key_ordered"] {
        let test = format!("three_nodes_{mode}");
        let Some((c, load)) =
            TestCluster::start_loaded(&test, 3, 3, config(mode), 4, Duration::from_secs(3))
        else {
            return;
        };
        let report = load.finish();
        c.wait_quiescent(Duration::from_secs(30));
        assert!(
            report.ids().len() > 500,
            "{mode}: too little load: {:?}",
            report.statuses
        );
        let env = assert_delivered(&c, &report);
        match mode {
            "ordered" => {
                assert_seq_increasing_per_partition(&env);
                assert_key_order(&env);
            }
            "key_ordered" => assert_key_order(&env),
            _ => {}
        }
        // Records reached every node's sink: the partitions really are spread.
        for i in 0..3 {
            assert!(
                env.iter().any(|(n, _)| *n == i),
                "{mode}: node {i} emitted nothing"
            );
        }
        eprintln!(
            "{mode}: {} records, statuses {:?}",
            report.ids().len(),
            report.statuses
        );
    }
}

#[test]
fn scale_two_to_three_to_one_under_load_loses_and_duplicates_nothing() {
    let Some((mut c, load)) = TestCluster::start_loaded(
        "scale_2_3_1",
        1,
        2,
        config("ordered"),
        4,
        Duration::from_secs(2),
    ) else {
        return;
    };
    c.add_node();
    let t = c.wait_balanced(Duration::from_secs(20));
    eprintln!("scale-out 2 -> 3 balanced in {t:?}");
    run_for(Duration::from_secs(2));
    c.leave(0);
    c.wait_balanced(Duration::from_secs(30));
    run_for(Duration::from_secs(1));
    c.leave(2);
    let t = c.wait_balanced(Duration::from_secs(30));
    eprintln!("scale-in to 1 balanced in {t:?}");
    run_for(Duration::from_secs(1));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    let env = assert_delivered(&c, &report);
    assert_seq_increasing_per_partition(&env);
    assert_key_order(&env);
    let statuses: Vec<u16> = report.statuses.keys().copied().collect();
    assert!(
        statuses.iter().all(|s| [202, 429, 503].contains(s)),
        "clients saw only 202, 429, 503: {:?}",
        report.statuses
    );
    let moved: std::collections::HashSet<u64> = env
        .iter()
        .map(|(_, e)| e["epoch"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        moved.len() > 6,
        "partitions changed owners: epochs {moved:?}"
    );
    eprintln!(
        "scale 2-3-1: {} records, statuses {:?}",
        report.ids().len(),
        report.statuses
    );
}

#[test]
fn a_killed_owner_is_replaced_within_the_lease_and_restarts_without_loss() {
    let Some((mut c, load)) =
        TestCluster::start_loaded("kill9", 1, 3, config("ordered"), 4, Duration::from_secs(2))
    else {
        return;
    };
    let killed_at = Instant::now();
    c.kill9(1);
    // Its partitions are served elsewhere within lease_ttl_ms + 2 s.
    let t = c.wait_balanced(Duration::from_millis(LEASE_TTL_MS + 8000));
    let failover = killed_at.elapsed();
    eprintln!("failover after kill -9: {failover:?} (balanced check took {t:?})");
    assert!(
        failover <= Duration::from_millis(LEASE_TTL_MS + 2000),
        "partitions moved after {failover:?}"
    );
    run_for(Duration::from_secs(1));
    // Back on its volume: truncates its sinks, hands its pending records to the owners.
    c.restart(1);
    c.wait_balanced(Duration::from_secs(20));
    run_for(Duration::from_secs(1));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    assert_delivered(&c, &report);
    eprintln!(
        "kill -9: {} records, statuses {:?}",
        report.ids().len(),
        report.statuses
    );
}

#[test]
fn a_frozen_owner_writes_nothing_under_its_stale_epochs() {
    let Some((c, load)) = TestCluster::start_loaded(
        "sigstop",
        1,
        2,
        config("ordered"),
        4,
        Duration::from_secs(2),
    ) else {
        return;
    };
    let before: std::collections::HashSet<u64> = c.view()["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["owner"] == "n1")
        .map(|p| p["epoch"].as_u64().expect("epoch"))
        .collect();
    // Freeze n1 past its lease; clients keep sending to n0 only.
    c.live.write().unwrap().retain(|b| *b != c.node(1).base);
    c.node(1).signal("STOP");
    let frozen_lines = support::read_lines(&c.out_path(1)).len();
    std::thread::sleep(Duration::from_millis(LEASE_TTL_MS + 2500));
    c.node(1).signal("CONT");
    run_for(Duration::from_secs(3));
    c.live.write().unwrap().push(c.node(1).base.clone());
    c.wait_balanced(Duration::from_secs(20));
    run_for(Duration::from_secs(1));
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    let lines = support::read_lines(&c.out_path(1));
    // Whatever n1 wrote under its old epochs was written before it froze.
    let stale_after: Vec<_> = lines
        .iter()
        .skip(frozen_lines)
        .filter(|e| before.contains(&e["epoch"].as_u64().unwrap_or(0)))
        .collect();
    assert!(
        stale_after.is_empty(),
        "{} envelopes landed under stale epochs after SIGCONT, e.g. {}",
        stale_after.len(),
        stale_after[0]
    );
    assert_delivered(&c, &report);
    let m = c.node(1).get("/metrics").body;
    assert!(
        m.contains("sluice_cluster_handovers_total{direction=\"lost\"} 1"),
        "n1 noticed it lost its lease"
    );
}

#[test]
fn etcd_leader_loss_is_survived_and_quorum_loss_fences_until_etcd_returns() {
    let Some((mut c, load)) = TestCluster::start_loaded(
        "etcd_faults",
        3,
        2,
        config("ordered"),
        3,
        Duration::from_secs(1),
    ) else {
        return;
    };
    let leader = c.etcd.wait_leader(Duration::from_secs(5));
    let before = load.sent.load(std::sync::atomic::Ordering::Relaxed);
    c.etcd.kill(leader);
    run_for(Duration::from_secs(3));
    let after = load.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after > before + 100,
        "service continued after the etcd leader died ({before} -> {after})"
    );
    c.etcd.restart(leader);
    c.etcd.wait_healthy(Duration::from_secs(20));
    // Lose quorum: 2 of 3 members frozen. After the lease TTL nobody may answer 202.
    let frozen: Vec<usize> = (0..3).filter(|i| *i != leader).take(2).collect();
    for i in &frozen {
        c.etcd.stop(*i);
    }
    // Past the lease (and the 2 s a 202 may wait for a forward accepted before the fence).
    std::thread::sleep(Duration::from_millis(LEASE_TTL_MS + 3500));
    let fenced_at = load.sent.load(std::sync::atomic::Ordering::Relaxed);
    run_for(Duration::from_secs(2));
    let still = load.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fenced_at, still, "no 202 while the lease cannot be renewed");
    let fencing = |n: &support::Service| {
        support::metric_sum(
            &n.get("/metrics").body,
            "sluice_cluster_fencing_refusals_total",
        )
    };
    for n in c.nodes.iter().flatten() {
        assert_eq!(n.get("/readyz").status, 503, "fenced node is not ready");
        let before = fencing(n);
        let two = [
            serde_json::json!({"user_id": "u1"}),
            serde_json::json!({"user_id": "u2"}),
        ];
        let r = n.post_json("/v1/records", &two);
        r.problem(503);
        assert!(r.header("retry-after").is_some());
        // The load still runs against the fenced nodes: at least these two are counted.
        let after = fencing(n);
        assert!(
            after >= before + 2.0,
            "both records refused while fenced are counted ({before} -> {after})"
        );
    }
    for i in &frozen {
        c.etcd.cont(*i);
    }
    // Back without a restart.
    let until = Instant::now() + Duration::from_secs(20);
    while load.sent.load(std::sync::atomic::Ordering::Relaxed) < still + 100 {
        assert!(
            Instant::now() < until,
            "service did not resume after etcd returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = load.finish();
    c.wait_quiescent(Duration::from_secs(30));
    assert_delivered(&c, &report);
}

#[test]
fn a_node_whose_partitions_or_mode_differ_refuses_to_join() {
    let Some(c) = TestCluster::start("mismatch", 1, 1, config("ordered")) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = c.etcd.endpoints();
    let cfg = support::Config {
        pipeline: "partitions = 9\nmode = \"unordered\"\n".into(),
        cluster: format!(
            "enabled = true\nnode = \"odd\"\netcd = [\"{}\"]\nprefix = \"/sluice-test/mismatch\"\n",
            endpoints[0]
        ),
        ..support::Config::default()
    };
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, cfg.render(dir.path())).expect("write");
    let out = std::process::Command::new(support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipeline.partitions") && err.contains('9') && err.contains('6'),
        "{err}"
    );
    assert!(
        err.contains("pipeline.mode") && err.contains("unordered"),
        "{err}"
    );

    // Same shape but the id of a running node: refused once the id outlives a lease TTL.
    let cfg = support::Config {
        pipeline: "partitions = 6\nmode = \"ordered\"\n".into(),
        cluster: format!(
            "enabled = true\nnode = \"n0\"\netcd = [\"{}\"]\nprefix = \"/sluice-test/mismatch\"\nlease_ttl_ms = 1000\n",
            endpoints[0]
        ),
        ..support::Config::default()
    };
    std::fs::write(&path, cfg.render(dir.path())).expect("write");
    let out = std::process::Command::new(support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster.node") && err.contains("`n0`"),
        "{err}"
    );
    assert_eq!(
        c.node(0).get("/readyz").status,
        200,
        "the running node is unharmed"
    );
}
