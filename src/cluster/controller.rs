//! The cluster controller of one node: keeps its etcd lease alive (and fences the node
//! when it cannot), reads the cluster's members and owners every [`POLL`], and moves
//! partitions toward the assignment every node computes the same way (`assign.rs`):
//!
//! - **acquire** a free partition assigned here: create its owner key (epoch = the key's
//!   create revision), lease a seq block, activate it in the engine (dormant records first,
//!   then records handed over to this node, then new ones);
//! - **release** (graceful handover) a partition assigned elsewhere: close admission (503
//!   for it), let in-flight records finish, evict the rest from the partition actor, commit
//!   the sinks, move what is still pending into the outbox, ship it to the new owner, and
//!   only then delete the owner key, so the new owner starts with those records, in order;
//! - **lost lease** (the node was stopped or cut off past its TTL): every partition is
//!   dropped at once, the sinks are cut back to their last commit, and the pending records
//!   go to the new owners once they exist;
//! - **another incarnation** holds this node's id (a replacement started on an empty volume
//!   while this node was frozen past its lease): the node never registers again; it admits
//!   nothing, hands what it holds to the owners and exits 2 (README "Cluster", *Incarnations*);
//! - **unreachable owners**: every node probes the others over HTTP and marks in etcd those
//!   it has not reached for `cluster.peer_timeout_ms`; a member most others cannot reach
//!   loses its partitions (`reach.rs`), and sees it through etcd.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::assign::assign;
use super::etcd::{Meta, Registration, Store, StoreError, View};
use super::reach::{self, Watch};
use crate::engine::Engine;
use crate::engine::ownership::{Member, Owner, Ownership};
use crate::settings::Settings;

/// How often the node reads the cluster's keys when nothing is moving.
pub const POLL: Duration = Duration::from_millis(200);
/// How often while a partition has no owner or is being handed over: the 503 window of a
/// handover is mostly the time until every node has seen the new owner.
pub const FAST_POLL: Duration = Duration::from_millis(40);
/// Longest wait for a new owner to take handed-over records before the key is released
/// anyway (the records then follow from the outbox; order may suffer, nothing is lost).
const HANDOVER_SHIP_LIMIT: Duration = Duration::from_secs(5);
/// Longest drain of a partition moved by a rebalance (not a leave).
const REBALANCE_DRAIN: Duration = Duration::from_secs(2);
/// A retiring node exits once it holds nothing and no other node has sent or asked it
/// anything for this long.
const RETIRE_QUIET: Duration = Duration::from_secs(3);
/// How often each node probes every other member over HTTP.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long the verdict that an owner is cut off must stand before another node takes its
/// partitions: the cut-off owner reads the same verdict and stops within a poll or two, so
/// two nodes do not emit for one partition at once.
const DEPOSE_AFTER: Duration = Duration::from_millis(1000);

/// Why the node cannot join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// This node's shape differs from the cluster's (exit 2).
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// See module docs.
pub struct Controller {
    store: Store,
    engine: Arc<Engine>,
    ownership: Arc<Ownership>,
    node: String,
    advertise: String,
    partitions: u32,
    ttl: Duration,
    grace: Duration,
    lease: AtomicI64,
    releasing: Mutex<HashSet<u32>>,
    leaving: AtomicBool,
    stopped: AtomicBool,
    /// Held while partitions change hands here (activate, give away, lose everything), so
    /// a lost lease never interleaves with an activation under that lease.
    transition: tokio::sync::Mutex<()>,
    incarnation: String,
    peer_timeout: Duration,
    /// This node's probes of the other members.
    watch: Mutex<Watch>,
    /// Peers this node has marked unreachable in etcd.
    marked: Mutex<BTreeSet<String>>,
    /// Members judged cut off, since when this node has seen the verdict.
    cut_since: Mutex<HashMap<String, Instant>>,
    /// Found at join: another live incarnation holds this id (see [`Controller::retire`]).
    retire_at_start: Mutex<Option<String>>,
    /// Set once the node retired: why it must exit (2).
    exit: tokio::sync::watch::Sender<Option<String>>,
}

impl Controller {
    /// Connect to etcd (retrying until `deadline`) and check this node's partitions and
    /// mode against the cluster's.
    pub async fn join(
        settings: &Settings,
        engine: Arc<Engine>,
        advertise: String,
    ) -> Result<Arc<Controller>, JoinError> {
        let c = &settings.cluster;
        let ttl = Duration::from_millis(c.lease_ttl_ms.div_ceil(1000) * 1000);
        let timeout = (ttl / 3).clamp(Duration::from_millis(300), Duration::from_secs(3));
        let mut attempt = 0u32;
        let store = loop {
            match Store::connect(&c.etcd, &c.prefix, timeout).await {
                Ok(s) => break s,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, endpoints = ?c.etcd, "cannot reach etcd; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mine = Meta {
            partitions: settings.pipeline.partitions,
            mode: settings.pipeline.mode.as_str().to_string(),
        };
        let theirs = loop {
            match store.ensure_meta(&mine).await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's shape from etcd; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut problems = Vec::new();
        if theirs.partitions != mine.partitions {
            problems.push(format!(
                "pipeline.partitions: this node has {} but the cluster at `{}` has {}; every node of a cluster must agree",
                mine.partitions, c.prefix, theirs.partitions
            ));
        }
        if theirs.mode != mine.mode {
            problems.push(format!(
                "pipeline.mode: this node has `{}` but the cluster at `{}` has `{}`; every node of a cluster must agree",
                mine.mode, c.prefix, theirs.mode
            ));
        }
        if !problems.is_empty() {
            return Err(JoinError::Mismatch(problems.join("\n")));
        }
        let ownership = engine.shared().ownership.clone();
        // A member key under this id means this node's earlier life (crashed: its lease
        // runs out within the TTL), or another running node with the same id. Wait for the
        // key to go. If it stays: the same incarnation is a copy of this volume running
        // elsewhere (refuse); another incarnation owns the id now, so this one retires.
        let node = ownership.node().to_string();
        let incarnation = ownership.incarnation().to_string();
        let until = std::time::Instant::now() + ttl + Duration::from_secs(2);
        let mut announced = false;
        let mut retire_at_start = None;
        loop {
            match store.member(&node).await {
                Ok(None) => break,
                Ok(Some(m)) if std::time::Instant::now() >= until => {
                    if m.incarnation == incarnation {
                        return Err(JoinError::Mismatch(format!(
                            "cluster.node: another running node uses the id `{node}` in `{}` (its member key outlived the lease TTL); give every node its own id",
                            c.prefix
                        )));
                    }
                    retire_at_start = Some(taken_message(&node, &incarnation, &m.incarnation));
                    break;
                }
                Ok(Some(_)) => {
                    if !announced {
                        tracing::info!(node = %node, "a member with this id is registered (an earlier run?); waiting for its lease to run out");
                        announced = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the members from etcd; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Arc::new(Controller {
            store,
            node: ownership.node().to_string(),
            ownership,
            engine,
            advertise,
            partitions: settings.pipeline.partitions as u32,
            ttl,
            grace: Duration::from_millis(settings.server.shutdown_grace_ms),
            lease: AtomicI64::new(0),
            releasing: Mutex::new(HashSet::new()),
            leaving: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            transition: tokio::sync::Mutex::new(()),
            incarnation,
            peer_timeout: c.peer_timeout(),
            watch: Mutex::new(Watch::default()),
            marked: Mutex::new(BTreeSet::new()),
            cut_since: Mutex::new(HashMap::new()),
            retire_at_start: Mutex::new(retire_at_start),
            exit: tokio::sync::watch::channel(None).0,
        }))
    }

    /// Resolves with the reason once this node retired (its id belongs to another
    /// incarnation): it has handed over what it could and must exit 2.
    pub async fn retired(&self) -> String {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Run the lease keeper, the reconcile loop and the peer probes in the background (or,
    /// when another incarnation holds the id, only the retirement).
    pub fn spawn(self: &Arc<Self>) {
        if let Some(why) = self.retire_at_start.lock().take() {
            let me = self.clone();
            actix_rt::spawn(async move { me.retire(why).await });
            return;
        }
        let me = self.clone();
        actix_rt::spawn(async move { me.keep_lease().await });
        let me = self.clone();
        actix_rt::spawn(async move { me.reconcile_loop().await });
        let me = self.clone();
        actix_rt::spawn(async move { me.probe_loop().await });
    }

    /// This node's id belongs to another live incarnation: admit nothing, own nothing,
    /// hand every record held here to the partitions' current owners (as the view in etcd
    /// names them), then tell `node::run` to exit 2 with `why`.
    async fn retire(self: Arc<Self>, why: String) {
        tracing::error!(node = %self.node, incarnation = %self.incarnation, "{why}");
        self.stopped.store(true, Ordering::Release);
        self.ownership.retire();
        {
            let _held = self.transition.lock().await;
            if let Err(e) = self.engine.lose_everything().await {
                tracing::error!(error = %e, "could not drop the partitions cleanly");
            }
        }
        let until = Instant::now() + self.grace + HANDOVER_SHIP_LIMIT * 2;
        let shared = self.engine.shared().clone();
        // Other nodes may still ask about batches they sent this incarnation before it froze
        // (only it can answer): stay until none has come for RETIRE_QUIET.
        let mut seen = shared.imports_seen.load(Ordering::Acquire);
        let mut quiet_since = Instant::now();
        loop {
            match self.store.load(self.partitions).await {
                Ok(view) => self.publish(&view, &BTreeSet::new()),
                Err(e) => tracing::debug!(error = %e, "cannot read the cluster from etcd"),
            }
            let held = shared.staged();
            let now_seen = shared.imports_seen.load(Ordering::Acquire);
            if now_seen != seen {
                seen = now_seen;
                quiet_since = Instant::now();
            }
            let quiet = quiet_since.elapsed() >= RETIRE_QUIET;
            if (held == 0 && quiet) || Instant::now() >= until {
                if held > 0 {
                    tracing::warn!(
                        held,
                        "records could not be handed over in time; they stay in this node's checkpoint.dir (start it again on it to hand them over)"
                    );
                } else {
                    tracing::info!("every record held here was handed to its owner");
                }
                break;
            }
            tokio::time::sleep(FAST_POLL).await;
        }
        self.exit.send_replace(Some(why));
    }

    fn member(&self) -> Member {
        Member {
            node: self.node.clone(),
            advertise: self.advertise.clone(),
            state: if self.leaving.load(Ordering::Acquire) {
                "leaving".into()
            } else {
                "active".into()
            },
            incarnation: self.incarnation.clone(),
        }
    }

    /// The part of a lease's TTL this node never uses: it fences itself this long before
    /// the server could expire the lease.
    fn margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(200))
    }

    async fn keep_lease(self: Arc<Self>) {
        let every = self.ttl / 3;
        let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> =
            None;
        while !self.stopped.load(Ordering::Acquire) {
            let lease = self.lease.load(Ordering::Acquire);
            if lease == 0 {
                let sent = Instant::now();
                match self.store.grant(self.ttl.as_secs() as i64).await {
                    Ok(id) => match self.store.register(&self.member(), id).await {
                        Ok(Registration::Registered) => {
                            self.ownership
                                .set_lease_until(sent + self.ttl - self.margin());
                            self.lease.store(id, Ordering::Release);
                            keeper = None;
                            tracing::info!(node = %self.node, lease = id, "joined the cluster");
                        }
                        Ok(Registration::Busy) => {
                            tracing::info!(node = %self.node, "this node's earlier member key is still registered; waiting for its lease to run out");
                            let _ = self.store.revoke(id).await;
                        }
                        Ok(Registration::Taken { incarnation }) => {
                            // Frozen past the lease and replaced: never rejoin under this id.
                            let _ = self.store.revoke(id).await;
                            let why = taken_message(&self.node, &self.incarnation, &incarnation);
                            self.clone().retire(why).await;
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register as a member; retrying");
                            let _ = self.store.revoke(id).await;
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "cannot get an etcd lease; retrying"),
                }
                tokio::time::sleep(every.min(Duration::from_millis(500))).await;
                continue;
            }
            let sent = Instant::now();
            let round = async {
                if keeper.is_none() {
                    let mut c = self.store.client();
                    keeper = Some(c.lease_keep_alive(lease).await?);
                }
                let Some((k, stream)) = keeper.as_mut() else {
                    return Ok(None);
                };
                k.keep_alive().await?;
                Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
            };
            let result = match tokio::time::timeout(every, round).await {
                // etcd answers an unknown lease with an error, not a zero TTL.
                Ok(Err(e)) if e.to_string().contains("lease not found") => Ok(Ok(Some(0))),
                other => other,
            };
            match result {
                Ok(Ok(Some(ttl))) if ttl > 0 => {
                    let granted = Duration::from_secs(ttl as u64);
                    self.ownership
                        .set_lease_until(sent + granted.saturating_sub(self.margin()));
                }
                Ok(Ok(Some(_))) => {
                    tracing::error!(
                        lease,
                        "etcd says the lease expired: this node lost its partitions"
                    );
                    self.lease.store(0, Ordering::Release);
                    self.ownership.set_lease_until(Instant::now());
                    keeper = None;
                    let _held = self.transition.lock().await;
                    if let Err(e) = self.engine.lose_everything().await {
                        tracing::error!(error = %e, "could not drop the lost partitions cleanly");
                    }
                    self.engine
                        .shared()
                        .metrics
                        .cluster_handovers
                        .with_label_values(&["lost"])
                        .inc();
                    continue;
                }
                other => {
                    let why = match other {
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".into(),
                        _ => "the keep-alive stream ended".into(),
                    };
                    self.engine.shared().metrics.lease_renew_failures.inc();
                    if !self.ownership.lease_live() {
                        tracing::warn!(%why, "lease not renewed; fenced (503, no writes) until etcd answers");
                    } else {
                        tracing::warn!(%why, "lease renewal failed");
                    }
                    keeper = None;
                    // A dead member's endpoint fails fast; another attempt usually lands
                    // on a live one.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let spent = sent.elapsed();
            tokio::time::sleep(every.saturating_sub(spent)).await;
        }
    }

    async fn reconcile_loop(self: Arc<Self>) {
        while !self.stopped.load(Ordering::Acquire) {
            let moving = match self.reconcile().await {
                Ok(moving) => moving,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the cluster from etcd");
                    false
                }
            };
            let busy = moving || self.ownership.hurried() || !self.releasing.lock().is_empty();
            tokio::time::sleep(if busy { FAST_POLL } else { POLL }).await;
        }
    }

    /// One pass: read the view, publish it, and act on this node's part of the assignment.
    /// Answers whether a partition has no owner (something is moving).
    async fn reconcile(self: &Arc<Self>) -> Result<bool, StoreError> {
        let view = self.store.load(self.partitions).await?;
        let lease = self.lease.load(Ordering::Acquire);
        let active_members: BTreeSet<String> = view
            .members
            .values()
            .filter(|m| m.state == "active")
            .map(|m| m.node.clone())
            .collect();
        let cut = reach::cut_off(&active_members, &view.unreachable);
        let condemned = self.condemned(&cut);
        self.publish(&view, &cut);
        let moving = view.owners.iter().any(Option::is_none);
        if lease == 0 || !self.ownership.lease_live() {
            return Ok(moving);
        }
        let leaving = self.leaving.load(Ordering::Acquire);
        // A member most others cannot reach takes no part in the assignment: once the
        // verdict has stood for DEPOSE_AFTER, its partitions go to the others. Itself, it
        // stops serving them as soon as it reads the verdict.
        let cut_off_here = cut.contains(&self.node);
        let active: Vec<String> = active_members
            .iter()
            .filter(|m| !(condemned.contains(*m) || (cut_off_here && **m == self.node)))
            .cloned()
            .collect();
        let current: Vec<Option<String>> = view
            .owners
            .iter()
            .map(|o| {
                o.as_ref()
                    .filter(|(o, _)| active.contains(&o.node))
                    .map(|(o, _)| o.node.clone())
            })
            .collect();
        let target = assign(&active, &current);
        for p in 0..self.partitions {
            let i = p as usize;
            let busy = self.releasing.lock().contains(&p);
            let local = self.ownership.active_epoch(p);
            match &view.owners[i] {
                Some((o, l)) if o.node == self.node && *l == lease => {
                    if busy {
                        continue;
                    }
                    if cut_off_here {
                        if local > 0 {
                            tracing::warn!(
                                partition = p,
                                "most other members cannot reach this node: giving the partition up"
                            );
                        }
                        self.drop_partition(p).await;
                        let _ = self.store.release(p, o.epoch).await;
                        continue;
                    }
                    let to = target[i].clone().filter(|t| *t != self.node);
                    if local == 0 {
                        // Acquired but not activated (activation failed earlier): retry.
                        self.activate(p, o.epoch, lease).await;
                    } else if let Some(to) = to {
                        let me = self.clone();
                        let epoch = o.epoch;
                        self.releasing.lock().insert(p);
                        actix_rt::spawn(async move {
                            me.release(p, epoch, to).await;
                            me.releasing.lock().remove(&p);
                        });
                    }
                }
                Some((o, _)) if o.node == self.node => {
                    // A key of this node's earlier life (before a restart): its lease is
                    // dead, so nothing uses it; free the partition now instead of waiting.
                    let _ = self.store.release(p, o.epoch).await;
                }
                Some((o, _))
                    if condemned.contains(&o.node)
                        && target[i].as_deref() == Some(self.node.as_str())
                        && !leaving =>
                {
                    // Its owner is cut off from most members (its lease lives on): take
                    // the partition by a transaction at its epoch; a new epoch follows.
                    tracing::warn!(partition = p, owner = %o.node, epoch = o.epoch,
                        "the owner is unreachable from most members: moving the partition");
                    if let Ok(true) = self.store.release(p, o.epoch).await {
                        self.engine
                            .shared()
                            .metrics
                            .cluster_handovers
                            .with_label_values(&["deposed"])
                            .inc();
                        self.acquire(p, lease).await;
                    }
                }
                owner => {
                    if local > 0 && !busy {
                        // The partition is active here but its key is gone or someone
                        // else's: stop at once, its records go to the owner.
                        tracing::warn!(partition = p, owner = ?owner, "partition no longer owned here");
                        self.drop_partition(p).await;
                    } else if owner.is_none()
                        && !leaving
                        && target[i].as_deref() == Some(self.node.as_str())
                    {
                        self.acquire(p, lease).await;
                    }
                }
            }
        }
        Ok(moving)
    }

    /// Of the members judged cut off now, those whose verdict has stood for
    /// [`DEPOSE_AFTER`] here.
    fn condemned(&self, cut: &BTreeSet<String>) -> BTreeSet<String> {
        let now = Instant::now();
        let mut since = self.cut_since.lock();
        since.retain(|n, _| cut.contains(n));
        for n in cut {
            since.entry(n.clone()).or_insert(now);
        }
        since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= DEPOSE_AFTER)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Publish the view (members judged cut off show as `unreachable`).
    fn publish(&self, view: &View, cut: &BTreeSet<String>) {
        let owners: Vec<Option<Owner>> = view
            .owners
            .iter()
            .map(|o| o.as_ref().map(|(o, _)| o.clone()))
            .collect();
        let mut members = view.members.clone();
        for (name, m) in members.iter_mut() {
            if cut.contains(name) {
                m.state = "unreachable".into();
            }
        }
        let m = &self.engine.shared().metrics;
        m.cluster_members.set(view.members.len() as i64);
        m.cluster_owned_partitions
            .set(self.ownership.active_partitions().len() as i64);
        self.ownership.set_view(members, owners);
    }

    /// Probe every other member over HTTP (`GET /healthz` at its advertised URL, the way
    /// forwarded records travel) and say in etcd which ones have not answered for the peer
    /// timeout; take it back once they answer.
    async fn probe_loop(self: Arc<Self>) {
        let timeout =
            (self.peer_timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let client = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .finish();
        let metric = self
            .engine
            .shared()
            .metrics
            .cluster_peer_unreachable
            .clone();
        while !self.stopped.load(Ordering::Acquire) {
            let started = Instant::now();
            let (members, _) = self.ownership.view();
            let peers: Vec<(String, String)> = members
                .iter()
                .filter(|m| m.node != self.node)
                .map(|m| (m.node.clone(), m.advertise.clone()))
                .collect();
            let probes = peers.iter().map(|(node, base)| {
                let url = format!("{}/healthz", base.trim_end_matches('/'));
                let req = client.get(url);
                async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, req.send()).await,
                        Ok(Ok(res)) if res.status().is_success()
                    );
                    (node.clone(), ok)
                }
            });
            let results = futures_util::future::join_all(probes).await;
            let now = Instant::now();
            let names: BTreeSet<String> = peers.iter().map(|(n, _)| n.clone()).collect();
            let lease = self.lease.load(Ordering::Acquire);
            {
                let mut w = self.watch.lock();
                w.retain(&names);
                for (node, ok) in &results {
                    w.observe(node, *ok, now);
                    if !ok {
                        self.ownership.mark_unreachable(node);
                    }
                }
            }
            for (node, _) in &results {
                let overdue = self.watch.lock().overdue(node, now, self.peer_timeout);
                let marked = self.marked.lock().contains(node);
                if overdue && !marked && lease != 0 {
                    tracing::warn!(peer = %node, timeout_ms = self.peer_timeout.as_millis() as u64,
                        "peer not reached over HTTP for the peer timeout");
                    if self
                        .store
                        .mark_unreachable(node, &self.node, lease)
                        .await
                        .is_ok()
                    {
                        self.marked.lock().insert(node.clone());
                        metric.with_label_values(&[node]).set(1);
                    }
                } else if !overdue && marked {
                    tracing::info!(peer = %node, "peer reached again");
                    if self.store.clear_unreachable(node, &self.node).await.is_ok() {
                        self.marked.lock().remove(node);
                        metric.with_label_values(&[node]).set(0);
                    }
                }
            }
            // Marks about members that left go with them (and with this node's lease).
            let gone: Vec<String> = self
                .marked
                .lock()
                .iter()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect();
            for node in gone {
                let _ = self.store.clear_unreachable(&node, &self.node).await;
                self.marked.lock().remove(&node);
                metric.with_label_values(&[&node]).set(0);
            }
            tokio::time::sleep(PROBE_EVERY.saturating_sub(started.elapsed())).await;
        }
    }

    async fn acquire(&self, partition: u32, lease: i64) {
        let epoch = match self.store.acquire(partition, &self.node, lease).await {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot take the partition");
                return;
            }
        };
        self.activate(partition, epoch, lease).await;
    }

    /// Serve `partition` at `epoch`, taken under `lease` — unless that lease is gone by now.
    async fn activate(&self, partition: u32, epoch: u64, lease: i64) {
        let _held = self.transition.lock().await;
        if self.lease.load(Ordering::Acquire) != lease || !self.ownership.lease_live() {
            return;
        }
        let mut floor = None;
        for _ in 0..5 {
            match self.store.lease_seqs(partition).await {
                Ok(f) => {
                    floor = Some(f);
                    break;
                }
                Err(e) => tracing::debug!(partition, error = %e, "seq block lease failed"),
            }
        }
        let Some(floor) = floor else {
            tracing::warn!(partition, "no seq block leased yet; will retry");
            return;
        };
        match self.engine.activate(partition, epoch, floor).await {
            Ok(reissued) => {
                self.engine
                    .shared()
                    .metrics
                    .cluster_handovers
                    .with_label_values(&["acquired"])
                    .inc();
                tracing::info!(
                    partition,
                    epoch,
                    seq_floor = floor,
                    reissued,
                    "partition acquired"
                );
            }
            Err(e) => tracing::error!(partition, error = %e, "cannot activate the partition"),
        }
    }

    /// Graceful handover of `partition` (owned at `epoch`) to `to`.
    async fn release(&self, partition: u32, epoch: u64, to: String) {
        let started = Instant::now();
        self.ownership.set_closing(partition);
        let limit = if self.leaving.load(Ordering::Acquire) {
            self.grace
        } else {
            self.grace.min(REBALANCE_DRAIN)
        };
        let stats = &self.engine.shared().partitions[partition as usize];
        let until = Instant::now() + limit;
        while stats.pending() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let handed = self.give_away(partition, Some(to.clone())).await;
        let ship_until = Instant::now() + HANDOVER_SHIP_LIMIT;
        while self.engine.held_for_others(partition).await > 0 && Instant::now() < ship_until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match self.store.release(partition, epoch).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot delete the owner key; it expires with the lease")
            }
        }
        self.engine
            .shared()
            .metrics
            .cluster_handovers
            .with_label_values(&["released"])
            .inc();
        tracing::info!(
            partition,
            epoch,
            to = %to,
            handed,
            ms = started.elapsed().as_millis() as u64,
            "partition handed over"
        );
    }

    /// Stop serving `partition` here and move its pending records to the outbox (for
    /// `to`, else for whoever owns it); answers how many records moved.
    async fn give_away(&self, partition: u32, to: Option<String>) -> usize {
        let _held = self.transition.lock().await;
        // Inactive first: a batch the emitter still holds for the partition (a busy sink)
        // and writes after the flush would be emitted here and, still pending in the
        // journal, exported below too. Stale now, it is dropped; its records go along.
        self.ownership.set_active(partition, 0);
        let _ = self.engine.evict(partition).await;
        if let Err(e) = self.engine.flush().await {
            tracing::warn!(partition, error = %e, "sink flush failed during handover");
        }
        let records = match self.engine.export(Some(partition)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition, error = %e, "cannot read pending records for the handover");
                return 0;
            }
        };
        let n = records.len();
        if n > 0
            && let Err(e) = self.engine.restage(records, to).await
        {
            tracing::error!(partition, error = %e, "cannot stage records for the new owner");
        }
        n
    }

    async fn drop_partition(&self, partition: u32) {
        self.releasing.lock().insert(partition);
        self.give_away(partition, None).await;
        self.releasing.lock().remove(&partition);
    }

    /// Graceful leave: mark this node leaving (the others take its partitions), hand every
    /// partition over while records still arrive (routed as on any node), then refuse
    /// records, ship what waits for other owners, and leave etcd.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
        let lease = self.lease.load(Ordering::Acquire);
        if lease != 0 {
            let _ = self.store.update_member(&self.member(), lease).await;
        }
        let until = Instant::now() + self.grace + HANDOVER_SHIP_LIMIT * 2;
        loop {
            let others = self
                .ownership
                .view()
                .0
                .iter()
                .any(|m| m.node != self.node && m.state == "active");
            let owned = self.ownership.active_partitions().len();
            let busy = !self.releasing.lock().is_empty();
            if owned == 0 && !busy {
                // Handed over: records are refused from here on (503), so what is staged
                // can all be shipped before this node leaves (its volume may go with it).
                self.engine.shared().closed.store(true, Ordering::Release);
            }
            // Records that can still move (parked ones wait for their node either way).
            let mut staged = 0;
            for p in 0..self.partitions {
                staged += self.engine.held_for_others(p).await;
            }
            if (owned == 0 && !busy && staged == 0) || Instant::now() >= until {
                break;
            }
            if !others && !busy {
                tracing::warn!(
                    owned,
                    staged,
                    "no other member to hand partitions to; they stay in this node's checkpoint"
                );
                break;
            }
            if !self.ownership.lease_live() && !busy {
                tracing::warn!(
                    owned,
                    staged,
                    "etcd unreachable: no handover possible; pending records stay in this node's checkpoint"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stopped.store(true, Ordering::Release);
        let _ = self.store.delete_member(&self.node).await;
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            let _ = self.store.revoke(lease).await;
        }
        self.ownership.set_fenced(true);
        tracing::info!("left the cluster");
    }
}

/// The exit message of a node whose id another incarnation holds.
fn taken_message(node: &str, mine: &str, theirs: &str) -> String {
    let name = |i: &str| {
        if i.is_empty() {
            "the first incarnation (a checkpoint.dir from before incarnations)".to_string()
        } else {
            format!("incarnation {i}")
        }
    };
    format!(
        "cluster.node: the id `{node}` belongs to {} now (a node started on another \
         checkpoint.dir while this one, {}, was stopped past its lease); this node does not \
         rejoin: it handed what it held to the owners and exits",
        name(theirs),
        name(mine)
    )
}

/// The cluster as `GET /v1/cluster` and `sluice cluster status` print it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node answering.
    pub node: String,
    /// The members, by name.
    pub members: Vec<Member>,
    /// Each partition's owner as this node sees it.
    pub partitions: Vec<PartitionOwner>,
}

/// A partition's owner in [`ClusterStatus`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PartitionOwner {
    /// Partition number.
    pub id: usize,
    /// The owning node (`null`: none now, e.g. during a failover).
    pub owner: Option<String>,
    /// The owner's epoch of the partition.
    pub epoch: Option<u64>,
}

impl ClusterStatus {
    /// The view from `node` of `members` and `owners` (indexed by partition).
    pub fn new(node: &str, members: &[Member], owners: &[Option<Owner>]) -> ClusterStatus {
        let by_name: BTreeMap<&str, &Member> =
            members.iter().map(|m| (m.node.as_str(), m)).collect();
        ClusterStatus {
            node: node.to_string(),
            members: by_name.into_values().cloned().collect(),
            partitions: owners
                .iter()
                .enumerate()
                .map(|(id, o)| PartitionOwner {
                    id,
                    owner: o.as_ref().map(|o| o.node.clone()),
                    epoch: o.as_ref().map(|o| o.epoch),
                })
                .collect(),
        }
    }
}
