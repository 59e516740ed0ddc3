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
//!   go to the new owners once they exist.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::assign::assign;
use super::etcd::{Meta, Store, StoreError, View};
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
        // A member key under this id means either this node's earlier life (crashed: its
        // lease runs out within the TTL) or another running node with the same id, which
        // would fight over the same keys: wait for the key to go, refuse if it stays.
        let node = ownership.node().to_string();
        let until = std::time::Instant::now() + ttl + Duration::from_secs(2);
        let mut announced = false;
        loop {
            match store.member_exists(&node).await {
                Ok(false) => break,
                Ok(true) if std::time::Instant::now() >= until => {
                    return Err(JoinError::Mismatch(format!(
                        "cluster.node: another running node uses the id `{node}` in `{}` (its member key outlived the lease TTL); give every node its own id",
                        c.prefix
                    )));
                }
                Ok(true) => {
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
        }))
    }

    /// Run the lease keeper and the reconcile loop in the background.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        actix_rt::spawn(async move { me.keep_lease().await });
        let me = self.clone();
        actix_rt::spawn(async move { me.reconcile_loop().await });
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
                    Ok(id) => match self.store.put_member(&self.member(), id).await {
                        Ok(()) => {
                            self.ownership
                                .set_lease_until(sent + self.ttl - self.margin());
                            self.lease.store(id, Ordering::Release);
                            keeper = None;
                            tracing::info!(node = %self.node, lease = id, "joined the cluster");
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
        self.publish(&view);
        let moving = view.owners.iter().any(Option::is_none);
        if lease == 0 || !self.ownership.lease_live() {
            return Ok(moving);
        }
        let leaving = self.leaving.load(Ordering::Acquire);
        let active: Vec<String> = view
            .members
            .values()
            .filter(|m| m.state == "active")
            .map(|m| m.node.clone())
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

    fn publish(&self, view: &View) {
        let owners: Vec<Option<Owner>> = view
            .owners
            .iter()
            .map(|o| o.as_ref().map(|(o, _)| o.clone()))
            .collect();
        let m = &self.engine.shared().metrics;
        m.cluster_members.set(view.members.len() as i64);
        m.cluster_owned_partitions
            .set(self.ownership.active_partitions().len() as i64);
        self.ownership.set_view(view.members.clone(), owners);
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
        let _ = self.engine.evict(partition).await;
        if let Err(e) = self.engine.flush().await {
            tracing::warn!(partition, error = %e, "sink flush failed during handover");
        }
        self.ownership.set_active(partition, 0);
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
            let _ = self.store.put_member(&self.member(), lease).await;
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
