//! Smoke test of the `etcd-client` crate (0.17, written against newer etcd) against the
//! etcd server the project runs in CI (Debian's etcd-server 3.4): every call the cluster
//! mode relies on, on a real 1- or 3-member cluster (tests/support/etcd.rs), including
//! leader loss, quorum loss and a cut link. Skipped with a `SKIP` line when `etcd` is not
//! installed (`tests/run.sh` installs it).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LockOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use support::etcd::EtcdCluster;
use support::proxy::TcpProxy;
use tokio::time::timeout;

const PREFIX: &str = "/sluice-smoke/";

async fn connect(endpoints: &[String]) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
    timeout(
        Duration::from_secs(10),
        Client::connect(endpoints, Some(opts)),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

/// Run a blocking harness call on a runtime worker without stalling the other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Put with a deadline: `Ok` when etcd acknowledged it in time.
async fn put_within(
    client: &mut Client,
    key: &str,
    value: &str,
    limit: Duration,
) -> Result<(), String> {
    match timeout(limit, client.put(key, value, None)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

/// Retry a put (each try bounded by 1 s) until it succeeds within `limit`; returns how long
/// it took and the failures before (printed, so a run shows how the client failed over).
async fn put_until_ok(client: &mut Client, key: &str, value: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut failures = Vec::new();
    while start.elapsed() < limit {
        match put_within(client, key, value, Duration::from_millis(1000)).await {
            Ok(()) => {
                if !failures.is_empty() {
                    eprintln!(
                        "put {key}: ok after {:?}; failures before: {failures:?}",
                        start.elapsed()
                    );
                }
                return start.elapsed();
            }
            Err(e) => failures.push(format!("{:?}: {e}", start.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("put {key} did not succeed within {limit:?}; failures: {failures:?}");
}

/// The value of `key`, retrying failed or slow reads (each bounded by 1 s) for up to 5 s.
async fn get_value(client: &mut Client, key: &str) -> Option<String> {
    let start = Instant::now();
    loop {
        match timeout(Duration::from_secs(1), client.get(key, None)).await {
            Ok(Ok(r)) => {
                return r
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().expect("utf-8").to_string());
            }
            Ok(Err(e)) if start.elapsed() > Duration::from_secs(5) => panic!("get {key}: {e}"),
            Err(_) if start.elapsed() > Duration::from_secs(5) => panic!("get {key}: timed out"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The next watch event (type, key, value, create_revision, mod_revision), waiting at most
/// `limit`.
async fn next_event(
    stream: &mut WatchStream,
    pending: &mut Vec<(EventType, String, String, i64, i64)>,
    limit: Duration,
) -> (EventType, String, String, i64, i64) {
    let until = Instant::now() + limit;
    while pending.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        let resp = timeout(left, stream.message())
            .await
            .expect("no watch event in time")
            .expect("watch stream error")
            .expect("watch stream ended");
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        for ev in resp.events() {
            let kv = ev.kv().expect("event kv");
            pending.push((
                ev.event_type(),
                kv.key_str().expect("utf-8 key").to_string(),
                kv.value_str().expect("utf-8 value").to_string(),
                kv.create_revision(),
                kv.mod_revision(),
            ));
        }
    }
    pending.remove(0)
}

/// "Create `key` bound to `lease` only if it does not exist" — the membership/ownership
/// claim of the cluster mode. Returns (succeeded, value now stored, its create_revision,
/// its lease, header revision).
async fn claim(
    client: &mut Client,
    key: &str,
    value: &str,
    lease: i64,
) -> (bool, String, i64, i64, i64) {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(key, None),
        ])
        .or_else([TxnOp::get(key, None)]);
    let resp = client.txn(txn).await.expect("txn");
    let rev = resp.header().expect("header").revision();
    let ops = resp.op_responses();
    let get = ops
        .iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .expect("a get response in the txn");
    let kv = &get.kvs()[0];
    (
        resp.succeeded(),
        kv.value_str().expect("utf-8").to_string(),
        kv.create_revision(),
        kv.lease(),
        rev,
    )
}

/// Increment a counter with compare-and-swap on its mod_revision; returns the number of
/// conflicts (retries).
async fn cas_increment(client: &mut Client, key: &str) -> u64 {
    let mut conflicts = 0;
    loop {
        let got = client.get(key, None).await.expect("get counter");
        let (value, cmp) = match got.kvs().first() {
            Some(kv) => (
                kv.value_str()
                    .expect("utf-8")
                    .parse::<u64>()
                    .expect("number"),
                Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
            ),
            None => (0, Compare::create_revision(key, CompareOp::Equal, 0)),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, (value + 1).to_string(), None)]);
        if client.txn(txn).await.expect("cas txn").succeeded() {
            return conflicts;
        }
        conflicts += 1;
    }
}

/// Leases, keep-alive, create-if-absent txn, create_revision, prefix watch, revoke, expiry
/// and a CAS counter, through a client given all three endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_lease_txn_watch_cas_on_three_members() {
    let Some(cluster) =
        EtcdCluster::try_start_or_skip("kv_lease_txn_watch_cas_on_three_members", 3)
    else {
        return;
    };
    let endpoints = cluster.endpoints();
    let mut client = connect(&endpoints).await;

    // Maintenance status and member list: the server is the 3.4 we expect, and the leader
    // it reports is the one the harness finds.
    let status = client.status().await.expect("status");
    assert!(
        status.version().starts_with("3."),
        "version {}",
        status.version()
    );
    eprintln!("etcd server version {}", status.version());
    // (Compared a few times: a spurious election on a loaded machine may move the leader
    // between the two reads.)
    let mut agree = false;
    for _ in 0..5 {
        let reported = client.status().await.expect("status").leader();
        let leader = blocking(|| cluster.wait_leader(Duration::from_secs(5)));
        let (leader_id, _, _) = blocking(|| cluster.member_status(leader)).expect("leader status");
        if reported == leader_id {
            agree = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agree,
        "the client's status and the harness disagree on the leader"
    );
    let members = client.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 3);

    // A watch on the prefix, from now on (with prev_kv).
    let (_watcher, mut watch) = client
        .watch(
            PREFIX,
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("watch");
    let mut pending = Vec::new();

    // Lease + keep-alive stream: renewals keep a 2 s lease alive past its TTL.
    let lease = client.lease_grant(2, None).await.expect("lease grant");
    assert_eq!(lease.ttl(), 2);
    let lease_id = lease.id();
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease_id).await.expect("keep_alive");
    let key = format!("{PREFIX}members/node-a");
    let (ok, value, create_rev, key_lease, rev) =
        claim(&mut client, &key, "node-a", lease_id).await;
    assert!(ok, "the first claim succeeds");
    assert_eq!(value, "node-a");
    assert_eq!(create_rev, rev, "create_revision is the txn's revision");
    assert_eq!(key_lease, lease_id);
    let (ok, value, create_rev2, _, _) = claim(&mut client, &key, "node-b", lease_id).await;
    assert!(!ok, "the second claim fails");
    assert_eq!(value, "node-a", "the first owner stays");
    assert_eq!(create_rev2, create_rev);
    let got = client.get(key.as_str(), None).await.expect("get");
    assert_eq!(got.kvs()[0].create_revision(), create_rev);
    assert_eq!(got.kvs()[0].lease(), lease_id);

    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(5)).await;
    assert_eq!(
        (ev.0, ev.1.as_str(), ev.2.as_str(), ev.3),
        (EventType::Put, key.as_str(), "node-a", create_rev)
    );

    let mut renewed = 0;
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        keeper.keep_alive().await.expect("send keep-alive");
        let r = timeout(Duration::from_secs(2), renewals.message())
            .await
            .expect("keep-alive answer in time")
            .expect("keep-alive stream error")
            .expect("keep-alive stream ended");
        assert_eq!(r.id(), lease_id);
        assert!(r.ttl() > 0, "lease lost: ttl {}", r.ttl());
        renewed += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(renewed >= 4, "renewed {renewed} times");
    let ttl = client
        .lease_time_to_live(lease_id, None)
        .await
        .expect("time to live");
    assert!(
        ttl.ttl() > 0,
        "lease alive after 3 s of renewals (ttl {})",
        ttl.ttl()
    );
    assert_eq!(
        client
            .get(key.as_str(), None)
            .await
            .expect("get")
            .kvs()
            .len(),
        1
    );

    // Plain put and delete on the prefix are seen by the watch, in order.
    let other = format!("{PREFIX}other");
    client.put(other.as_str(), "x", None).await.expect("put");
    client.delete(other.as_str(), None).await.expect("delete");
    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(5)).await;
    assert_eq!((ev.0, ev.1.as_str()), (EventType::Put, other.as_str()));
    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(5)).await;
    assert_eq!((ev.0, ev.1.as_str()), (EventType::Delete, other.as_str()));

    // Revoking the lease deletes the key (and the watch sees it).
    client.lease_revoke(lease_id).await.expect("revoke");
    assert!(
        client
            .get(key.as_str(), None)
            .await
            .expect("get")
            .kvs()
            .is_empty()
    );
    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(5)).await;
    assert_eq!((ev.0, ev.1.as_str()), (EventType::Delete, key.as_str()));
    // The keep-alive stream now reports the lease gone (ttl <= 0).
    keeper.keep_alive().await.expect("send keep-alive");
    let r = timeout(Duration::from_secs(2), renewals.message())
        .await
        .expect("keep-alive answer in time")
        .expect("keep-alive stream error")
        .expect("keep-alive stream ended");
    assert!(r.ttl() <= 0, "revoked lease still has ttl {}", r.ttl());

    // A lease that is not renewed expires and takes its key with it.
    let short = client.lease_grant(1, None).await.expect("lease grant");
    assert_eq!(short.ttl(), 1, "a 1 s lease is granted as asked");
    let short = short.id();
    let ephemeral = format!("{PREFIX}members/node-gone");
    let (ok, ..) = claim(&mut client, &ephemeral, "gone", short).await;
    assert!(ok);
    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(5)).await;
    assert_eq!((ev.0, ev.1.as_str()), (EventType::Put, ephemeral.as_str()));
    let start = Instant::now();
    let ev = next_event(&mut watch, &mut pending, Duration::from_secs(8)).await;
    assert_eq!(
        (ev.0, ev.1.as_str()),
        (EventType::Delete, ephemeral.as_str())
    );
    eprintln!("1 s lease expired after {:?}", start.elapsed());
    assert!(
        client
            .get(ephemeral.as_str(), None)
            .await
            .expect("get")
            .kvs()
            .is_empty()
    );

    // A counter incremented with compare-and-swap by 4 concurrent writers: no lost update.
    let counter = format!("{PREFIX}counter");
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = client.clone();
        let counter = counter.clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                conflicts.fetch_add(cas_increment(&mut c, &counter).await, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        timeout(Duration::from_secs(20), t)
            .await
            .expect("CAS writers in time")
            .expect("CAS task");
    }
    let got = client
        .get(counter.as_str(), None)
        .await
        .expect("get counter");
    assert_eq!(got.kvs()[0].value_str().expect("utf-8"), "40");
    assert_eq!(got.kvs()[0].version(), 40, "one revision per increment");
    eprintln!(
        "CAS counter: 40 increments, {} conflicts",
        conflicts.load(Ordering::Relaxed)
    );

    // A range read of the prefix with a limit (the kind of scan a membership listing does).
    let all = client
        .get(PREFIX, Some(GetOptions::new().with_prefix().with_limit(10)))
        .await
        .expect("range");
    assert_eq!(all.kvs().len(), 1, "only the counter is left");

    // A watch resumed from a past revision replays the history since then, in order (what
    // a watcher does after reconnecting: start at the last revision it saw + 1).
    let (_w2, mut replay) = client
        .watch(
            format!("{PREFIX}members/"),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(create_rev),
            ),
        )
        .await
        .expect("watch from a revision");
    let mut pending = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = next_event(&mut replay, &mut pending, Duration::from_secs(5)).await;
        seen.push((ev.0, ev.1));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, key.clone()),
            (EventType::Delete, key.clone()),
            (EventType::Put, ephemeral.clone()),
            (EventType::Delete, ephemeral.clone()),
        ]
    );
}

/// A client given every endpoint keeps working when the leader is killed (re-election),
/// and while 2 of 3 members are frozen (SIGSTOP) writes fail within the client's deadline
/// and work again after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_survives_leader_kill_and_quorum_loss() {
    let Some(mut cluster) =
        EtcdCluster::try_start_or_skip("client_survives_leader_kill_and_quorum_loss", 3)
    else {
        return;
    };
    let mut client = connect(&cluster.endpoints()).await;
    put_until_ok(&mut client, "/k", "0", Duration::from_secs(5)).await;

    // Kill the leader: after re-election the same client goes on.
    let old = blocking(|| cluster.leader()).expect("a leader");
    blocking(|| cluster.kill(old));
    let took = put_until_ok(&mut client, "/k", "1", Duration::from_secs(10)).await;
    eprintln!("put succeeded {took:?} after killing leader m{old}");
    assert!(took < Duration::from_secs(6), "re-election took {took:?}");
    let new = blocking(|| cluster.wait_leader(Duration::from_secs(5)));
    assert_ne!(new, old);
    assert_eq!(get_value(&mut client, "/k").await.as_deref(), Some("1"));
    // Keep the killed endpoint in the client: the balanced channel still sends some
    // requests to it, and those fail at once with Unavailable ("tcp connect error"), so
    // callers must retry; a retry goes to a live member.
    let mut unavailable = 0;
    let t0 = Instant::now();
    for i in 0..60 {
        match timeout(
            Duration::from_secs(1),
            client.put("/k", format!("{}", 2 + i), None),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                assert!(
                    e.to_string().contains("unavailable"),
                    "unexpected error: {e}"
                );
                unavailable += 1;
            }
            Err(_) => panic!("a put hung with a dead endpoint"),
        }
        if i % 10 == 9 {
            eprintln!(
                "{:?}: {unavailable} of {} puts failed with a dead endpoint",
                t0.elapsed(),
                i + 1
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Restart it on its data dir and ports: it rejoins as an existing member.
    blocking(|| {
        cluster.restart(old);
        cluster.wait_healthy(Duration::from_secs(15));
    });
    assert!(blocking(|| cluster.member_healthy(old)));
    put_until_ok(&mut client, "/k", "after-restart", Duration::from_secs(5)).await;

    // Freeze 2 of 3 (the leader and one follower): no quorum, writes fail in time.
    let leader = blocking(|| cluster.wait_leader(Duration::from_secs(5)));
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    blocking(|| {
        cluster.stop(leader);
        cluster.stop(follower);
    });
    for _ in 0..2 {
        let r = put_within(&mut client, "/k", "no-quorum", Duration::from_millis(1500)).await;
        assert!(r.is_err(), "a put succeeded without quorum");
    }
    // With `require_leader`, the member left running answers at once with an error ("no
    // leader") instead of holding the request until the server's own timeout.
    let alone = (0..3)
        .find(|&i| i != leader && i != follower)
        .expect("the third member");
    let mut strict = Client::connect(
        [cluster.endpoint(alone)],
        Some(ConnectOptions::new().with_require_leader(true)),
    )
    .await
    .expect("connect");
    let start = Instant::now();
    let fast_error = loop {
        match timeout(
            Duration::from_millis(1000),
            strict.put("/k", "no-quorum", None),
        )
        .await
        {
            Ok(Ok(_)) => panic!("a put succeeded without quorum"),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => assert!(
                start.elapsed() < Duration::from_secs(6),
                "require_leader never failed fast"
            ),
        }
    };
    eprintln!(
        "require_leader put failed after {:?}: {fast_error}",
        start.elapsed()
    );
    assert!(fast_error.contains("no leader"), "{fast_error}");
    blocking(|| {
        cluster.cont(leader);
        cluster.cont(follower);
    });
    let took = put_until_ok(&mut client, "/k", "thawed", Duration::from_secs(10)).await;
    eprintln!("put succeeded {took:?} after SIGCONT");
    blocking(|| cluster.wait_healthy(Duration::from_secs(10)));
    // A put that timed out on the client is not necessarily lost: it can still be applied
    // once the members run again, even after a later put.
    let value = get_value(&mut client, "/k").await.expect("a value");
    eprintln!("after SIGCONT /k = {value:?}");
    assert!(value == "thawed" || value == "no-quorum", "{value}");
    put_until_ok(&mut client, "/k", "final", Duration::from_secs(5)).await;
    assert_eq!(get_value(&mut client, "/k").await.as_deref(), Some("final"));
}

/// Through a TCP proxy: a cut link fails requests and ends the keep-alive stream; after
/// restore the same client reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_after_a_cut_link() {
    let Some(cluster) = EtcdCluster::try_start_or_skip("client_recovers_after_a_cut_link", 1)
    else {
        return;
    };
    let proxy = TcpProxy::start(cluster.client_addr(0));
    let mut client = connect(&[proxy.url()]).await;
    put_until_ok(&mut client, "/link", "up", Duration::from_secs(5)).await;
    let lease = client.lease_grant(5, None).await.expect("lease").id();
    let (_keeper, mut renewals) = client.lease_keep_alive(lease).await.expect("keep_alive");

    proxy.cut();
    let r = put_within(&mut client, "/link", "cut", Duration::from_millis(1500)).await;
    assert!(r.is_err(), "a put went through a cut link");
    let ended = timeout(Duration::from_secs(3), renewals.message()).await;
    assert!(
        matches!(ended, Ok(Err(_)) | Ok(Ok(None))),
        "the keep-alive stream must end when the link is cut: {ended:?}"
    );

    proxy.restore();
    let took = put_until_ok(&mut client, "/link", "restored", Duration::from_secs(10)).await;
    eprintln!("put succeeded {took:?} after restoring the link");
    // The lease outlived the cut (TTL 5 s) and is kept alive on a new stream (keep_alive
    // itself fails when the first answer has ttl <= 0).
    let (mut keeper, mut renewals) = client
        .lease_keep_alive(lease)
        .await
        .expect("keep_alive again");
    keeper.keep_alive().await.expect("send keep-alive");
    let r = timeout(Duration::from_secs(2), renewals.message())
        .await
        .expect("keep-alive answer in time")
        .expect("keep-alive stream error")
        .expect("keep-alive stream ended");
    assert!(r.ttl() > 0);
}

/// The concurrency APIs (v3lock, v3election services) on 3.4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_services() {
    let Some(cluster) = EtcdCluster::try_start_or_skip("lock_and_election_services", 1) else {
        return;
    };
    let mut client = connect(&cluster.endpoints()).await;
    let lease = client.lease_grant(10, None).await.expect("lease").id();

    let lock = client
        .lock("/sluice-lock", Some(LockOptions::new().with_lease(lease)))
        .await
        .expect("lock");
    let lock_key = lock.key().to_vec();
    assert!(lock_key.starts_with(b"/sluice-lock/"));
    // A second locker waits until the first unlocks.
    let mut other = client.clone();
    let lease2 = client.lease_grant(10, None).await.expect("lease").id();
    let waiter = tokio::spawn(async move {
        other
            .lock("/sluice-lock", Some(LockOptions::new().with_lease(lease2)))
            .await
            .map(|r| r.key().to_vec())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the lock is exclusive");
    client.unlock(lock_key).await.expect("unlock");
    let second = timeout(Duration::from_secs(5), waiter)
        .await
        .expect("second lock in time")
        .expect("task")
        .expect("second lock");
    client.unlock(second).await.expect("unlock");

    let campaign = client
        .campaign("/sluice-election", "node-a", lease)
        .await
        .expect("campaign");
    let leader_key = campaign.leader().expect("leader key").clone();
    let who = client.leader("/sluice-election").await.expect("leader");
    assert_eq!(who.kv().expect("kv").value_str().expect("utf-8"), "node-a");
    client
        .proclaim(
            "node-a2",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader_key.clone())),
        )
        .await
        .expect("proclaim");
    let who = client.leader("/sluice-election").await.expect("leader");
    assert_eq!(who.kv().expect("kv").value_str().expect("utf-8"), "node-a2");
    client
        .resign(Some(
            etcd_client::ResignOptions::new().with_leader(leader_key),
        ))
        .await
        .expect("resign");
    let err = client.leader("/sluice-election").await;
    assert!(err.is_err(), "no leader after resign: {err:?}");
}
