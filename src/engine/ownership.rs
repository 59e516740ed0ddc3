//! The node's view of who owns what, shared by the HTTP edge (routing), the ingress
//! (admission), the emitter (fencing) and `/v1/cluster`. The cluster controller writes it
//! from etcd; everyone else only reads.
//!
//! A standalone node ([`Ownership::standalone`]) owns every partition at epoch 0 with a
//! lease that never runs out, so the engine has one code path for both modes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use serde::Serialize;

/// A member as `/v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub node: String,
    pub advertise: String,
    /// `joining`, `active`, `leaving`, or (in `/v1/cluster`) `unreachable`: a majority of
    /// the other members cannot reach it over HTTP.
    pub state: String,
    /// Which life of the node id this is (README "Cluster", *Incarnations*): a node that
    /// starts on an empty `checkpoint.dir` is a new incarnation. Empty for the first
    /// incarnation and for members written by earlier versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
}

/// The owner of a partition: a node and the epoch (the create revision of its owner key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub node: String,
    pub epoch: u64,
}

/// How long a refusal by a partition's owner sends its records to 503 (the view catches up
/// with the new owner within a poll or two).
const REFUSED_FOR: std::time::Duration = std::time::Duration::from_millis(300);

/// How long a node that refused a connection is routed around.
const UNREACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The answer to "may this batch be written now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitCheck {
    Yes,
    /// The lease is not live: hold the batch (fenced) until it is, or until it is lost.
    Wait,
    /// Not the owner at that epoch any more: never write it.
    Stale,
}

/// Where a partition's records go from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Owned and admitting here, at this epoch.
    Local(u64),
    /// Owned by another node (its id, base URL and epoch).
    Remote {
        node: String,
        advertise: String,
        epoch: u64,
    },
    /// No owner that can take records now (failover or handover in progress).
    Unavailable(String),
}

#[derive(Default)]
struct Table {
    members: BTreeMap<String, Member>,
    owners: Vec<Option<Owner>>,
    /// Per partition: the epoch this node admits and emits under (0 = not here).
    active: Vec<u64>,
    /// Per partition: active here but closed to new records (handing over).
    closing: Vec<bool>,
    /// Per partition: refused by its owner recently (handing over) until this instant;
    /// cleared when the owner changes.
    refused: Vec<Option<Instant>>,
    /// The view was loaded from etcd at least once.
    known: bool,
    /// Nodes that refused connections recently, until when: their partitions answer 503
    /// (failover in progress) instead of piling records up for a dead owner.
    unreachable: BTreeMap<String, Instant>,
}

/// See module docs.
pub struct Ownership {
    node: String,
    /// This node's incarnation (see [`Member::incarnation`]).
    incarnation: String,
    clustered: bool,
    /// The node id belongs to a live member of another incarnation: this node only hands
    /// what it holds to the owners, then exits (it admits nothing and owns nothing).
    retired: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` until which the lease is surely valid on the server.
    lease_until_ms: AtomicU64,
    /// Set on shutdown or while fenced: admit nothing.
    fenced: AtomicBool,
    /// Until then (ms since `started`) the controller re-reads etcd often: a handover is
    /// under way and the new owner should be seen at once.
    hurry_until_ms: AtomicU64,
    table: RwLock<Table>,
}

impl Ownership {
    /// A standalone node: owns every partition, forever.
    pub fn standalone(node: &str, partitions: u32) -> Self {
        Ownership {
            node: node.to_string(),
            incarnation: String::new(),
            clustered: false,
            retired: AtomicBool::new(false),
            started: Instant::now(),
            lease_until_ms: AtomicU64::new(u64::MAX),
            fenced: AtomicBool::new(false),
            hurry_until_ms: AtomicU64::new(0),
            table: RwLock::new(Table {
                members: BTreeMap::new(),
                owners: (0..partitions)
                    .map(|_| {
                        Some(Owner {
                            node: node.to_string(),
                            epoch: 0,
                        })
                    })
                    .collect(),
                active: vec![0; partitions as usize],
                closing: vec![false; partitions as usize],
                refused: vec![None; partitions as usize],
                known: true,
                unreachable: BTreeMap::new(),
            }),
        }
    }

    /// A cluster member that owns nothing until the controller says so.
    pub fn clustered(node: &str, incarnation: &str, partitions: u32) -> Self {
        Ownership {
            node: node.to_string(),
            incarnation: incarnation.to_string(),
            clustered: true,
            retired: AtomicBool::new(false),
            started: Instant::now(),
            lease_until_ms: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            hurry_until_ms: AtomicU64::new(0),
            table: RwLock::new(Table {
                members: BTreeMap::new(),
                owners: vec![None; partitions as usize],
                active: vec![0; partitions as usize],
                closing: vec![false; partitions as usize],
                refused: vec![None; partitions as usize],
                known: false,
                unreachable: BTreeMap::new(),
            }),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's incarnation (empty: the first, or standalone).
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// The node id belongs to another live incarnation: admit nothing from now on, and
    /// route what this node still holds to the partitions' owners (even those named like
    /// this node: they are the other incarnation).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
        let mut t = self.table.write();
        t.active.iter_mut().for_each(|a| *a = 0);
    }

    /// Whether [`Ownership::retire`] was called.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Whether the node runs in a cluster.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The lease is surely valid on the etcd server until `instant`.
    pub fn set_lease_until(&self, instant: Instant) {
        let ms = instant.saturating_duration_since(self.started).as_millis() as u64;
        self.lease_until_ms.store(ms, Ordering::Release);
    }

    /// Whether the lease is valid now (always, standalone).
    pub fn lease_live(&self) -> bool {
        !self.clustered || self.now_ms() < self.lease_until_ms.load(Ordering::Acquire)
    }

    /// A handover is under way (records handed over arrived, or an owner refused):
    /// watch etcd closely for the next second.
    pub fn hurry(&self) {
        self.hurry_until_ms
            .store(self.now_ms() + 1000, Ordering::Release);
    }

    /// Whether [`Ownership::hurry`] was called within the last second.
    pub fn hurried(&self) -> bool {
        self.now_ms() < self.hurry_until_ms.load(Ordering::Acquire)
    }

    /// Stop admitting anything (shutdown, lost lease).
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::Release);
    }

    /// Whether this cluster member refuses every record now: its lease is not live (etcd
    /// unreachable: it has fenced itself) or it left the cluster. Never, standalone.
    pub fn is_fenced(&self) -> bool {
        self.clustered && (self.fenced.load(Ordering::Acquire) || !self.lease_live())
    }

    /// Whether the node may write for `partition` under `epoch` now: it is the active
    /// owner at that epoch and its lease is live. The emitter asks before every write.
    pub fn may_emit(&self, partition: u32, epoch: u64) -> bool {
        self.emit_check(partition, epoch) == EmitCheck::Yes
    }

    /// [`Ownership::may_emit`] with the reason when not: a stale epoch is final, a lease
    /// that is not live (etcd unreachable) may come back.
    pub fn emit_check(&self, partition: u32, epoch: u64) -> EmitCheck {
        if !self.clustered {
            return EmitCheck::Yes;
        }
        let current = self.table.read().active.get(partition as usize).copied();
        if epoch == 0 || current != Some(epoch) {
            EmitCheck::Stale
        } else if !self.lease_live() {
            EmitCheck::Wait
        } else {
            EmitCheck::Yes
        }
    }

    /// The epoch `partition` is active here under (0 = not active here).
    pub fn active_epoch(&self, partition: u32) -> u64 {
        if !self.clustered {
            return 0;
        }
        self.table
            .read()
            .active
            .get(partition as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Mark `partition` active here under `epoch` (0: not active); opens admission.
    pub fn set_active(&self, partition: u32, epoch: u64) {
        let mut t = self.table.write();
        if let Some(a) = t.active.get_mut(partition as usize) {
            *a = epoch;
        }
        if let Some(c) = t.closing.get_mut(partition as usize) {
            *c = false;
        }
    }

    /// Stop admitting records of `partition` while it stays active (its in-flight records
    /// still finish and are written): the first step of a handover.
    pub fn set_closing(&self, partition: u32) {
        if let Some(c) = self.table.write().closing.get_mut(partition as usize) {
            *c = true;
        }
    }

    /// Partitions active here.
    pub fn active_partitions(&self) -> Vec<(u32, u64)> {
        self.table
            .read()
            .active
            .iter()
            .enumerate()
            .filter(|(_, e)| **e > 0)
            .map(|(p, e)| (p as u32, *e))
            .collect()
    }

    /// Replace the members and owners with a fresh view from etcd.
    pub fn set_view(&self, members: BTreeMap<String, Member>, owners: Vec<Option<Owner>>) {
        let mut t = self.table.write();
        for (p, o) in owners.iter().enumerate() {
            if t.owners.get(p) != Some(o)
                && let Some(r) = t.refused.get_mut(p)
            {
                *r = None;
            }
        }
        t.members = members;
        t.owners = owners;
        t.known = true;
    }

    /// The owner refused records of `partition` (it is handing it over): answer 503 for it
    /// until the owner changes, for a short while at most.
    pub fn mark_refused(&self, partition: u32) {
        if let Some(r) = self.table.write().refused.get_mut(partition as usize) {
            *r = Some(Instant::now() + REFUSED_FOR);
        }
        self.hurry();
    }

    /// `node` refused a connection: route around it (503) for a second, or until it leaves
    /// the view.
    pub fn mark_unreachable(&self, node: &str) {
        self.table
            .write()
            .unreachable
            .insert(node.to_string(), Instant::now() + UNREACHABLE_FOR);
        self.hurry();
    }

    /// Whether the view was loaded from etcd at least once.
    pub fn known(&self) -> bool {
        self.table.read().known
    }

    /// A member as last seen (its advertised URL), if it is one.
    pub fn member(&self, node: &str) -> Option<Member> {
        self.table.read().members.get(node).cloned()
    }

    /// Members and owners as last seen.
    pub fn view(&self) -> (Vec<Member>, Vec<Option<Owner>>) {
        let t = self.table.read();
        (t.members.values().cloned().collect(), t.owners.clone())
    }

    /// Where records of `partition` go from here (admission: what a request may do now).
    pub fn route(&self, partition: u32) -> Route {
        if !self.clustered {
            return Route::Local(0);
        }
        if self.retired() {
            return Route::Unavailable(format!(
                "this node's id `{}` belongs to another incarnation now; this node is handing \
                 over what it holds and exiting",
                self.node
            ));
        }
        if self.is_fenced() {
            return Route::Unavailable(
                "this node cannot reach etcd (lease not renewed); it has fenced itself".into(),
            );
        }
        let t = self.table.read();
        let p = partition as usize;
        if let Some(e) = t.active.get(p).copied().filter(|e| *e > 0) {
            if t.closing.get(p).copied().unwrap_or(false) {
                return Route::Unavailable(format!(
                    "partition {partition} is being handed over to another node"
                ));
            }
            return Route::Local(e);
        }
        match t.owners.get(p).cloned().flatten() {
            Some(o) if o.node == self.node => Route::Unavailable(format!(
                "partition {partition} is moving to or from this node"
            )),
            Some(_)
                if t.refused
                    .get(p)
                    .copied()
                    .flatten()
                    .is_some_and(|until| until > Instant::now()) =>
            {
                Route::Unavailable(format!("partition {partition} is being handed over"))
            }
            owner => Self::remote(&t, partition, owner),
        }
    }

    /// Where the outbox sends what this node holds for `partition`: [`Ownership::route`],
    /// except that a retired node still delivers to the owners — even to one named like
    /// itself, which is the other incarnation — without a lease of its own (the owner
    /// checks the epoch; nothing is emitted here).
    pub fn delivery_route(&self, partition: u32) -> Route {
        if !self.retired() {
            return self.route(partition);
        }
        let t = self.table.read();
        let owner = t.owners.get(partition as usize).cloned().flatten();
        if self.owned_by_my_other_incarnation(&t, partition) {
            // The other incarnation under this id: its name may resolve to this very
            // process (a pod's own name is in its /etc/hosts), so the records go through
            // another member instead (see `relay`).
            return Route::Unavailable(format!(
                "partition {partition} is owned by this id's other incarnation: relayed"
            ));
        }
        Self::remote(&t, partition, owner)
    }

    /// Retired, and `partition` is owned under this node's id: by its other incarnation.
    fn owned_by_my_other_incarnation(&self, t: &Table, partition: u32) -> bool {
        self.retired()
            && t.owners
                .get(partition as usize)
                .and_then(Option::as_ref)
                .is_some_and(|o| o.node == self.node)
    }

    /// A retired node's relay for `partition` when this id's other incarnation owns it:
    /// another active member, which takes the records as a handover and forwards them to
    /// the owner by a name that reaches it.
    pub fn relay(&self, partition: u32) -> Option<String> {
        if !self.retired() {
            return None;
        }
        let t = self.table.read();
        if !self.owned_by_my_other_incarnation(&t, partition) {
            return None;
        }
        t.members
            .values()
            .find(|m| m.node != self.node && m.state == "active")
            .map(|m| m.node.clone())
    }

    /// An owner elsewhere (reachable or not: records for an owner that does not answer are
    /// staged here and delivered later), or nobody.
    fn remote(t: &Table, partition: u32, owner: Option<Owner>) -> Route {
        let Some(o) = owner else {
            return Route::Unavailable(format!(
                "partition {partition} has no owner right now (failover or handover in progress)"
            ));
        };
        match t.members.get(&o.node) {
            Some(m) => Route::Remote {
                node: o.node.clone(),
                advertise: m.advertise.clone(),
                epoch: o.epoch,
            },
            None => Route::Unavailable(format!(
                "partition {partition}'s owner {} left the cluster",
                o.node
            )),
        }
    }

    /// Whether `node` refused or did not answer a connection within the last second (the
    /// HTTP edge does not wait for its answer then: the records are staged here).
    pub fn unreachable_now(&self, node: &str) -> bool {
        self.table
            .read()
            .unreachable
            .get(node)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_b() -> BTreeMap<String, Member> {
        let mut members = BTreeMap::new();
        members.insert(
            "b".to_string(),
            Member {
                node: "b".into(),
                advertise: "http://b".into(),
                state: "active".into(),
                incarnation: String::new(),
            },
        );
        members
    }

    #[test]
    fn standalone_owns_everything_forever() {
        let o = Ownership::standalone("a", 3);
        assert_eq!(o.route(2), Route::Local(0));
        assert!(o.may_emit(1, 0));
        assert!(o.lease_live());
    }

    #[test]
    fn stale_epochs_and_dead_leases_may_not_emit() {
        let o = Ownership::clustered("a", "", 2);
        o.set_lease_until(Instant::now() + std::time::Duration::from_secs(5));
        o.set_active(0, 7);
        assert!(o.may_emit(0, 7));
        assert!(!o.may_emit(0, 6), "a lower epoch is refused");
        assert!(!o.may_emit(1, 7), "not owned here");
        o.set_lease_until(Instant::now());
        assert!(!o.may_emit(0, 7), "no live lease, no write");
        assert!(matches!(o.route(0), Route::Unavailable(_)));
    }

    #[test]
    fn routes_follow_the_view() {
        let o = Ownership::clustered("a", "", 2);
        o.set_lease_until(Instant::now() + std::time::Duration::from_secs(5));
        let members = member_b();
        o.set_view(
            members,
            vec![
                Some(Owner {
                    node: "b".into(),
                    epoch: 4,
                }),
                None,
            ],
        );
        assert!(matches!(o.route(0), Route::Remote { epoch: 4, .. }));
        assert!(matches!(o.route(1), Route::Unavailable(_)));
        o.mark_refused(0);
        assert!(matches!(o.route(0), Route::Unavailable(_)));
    }

    #[test]
    fn records_for_an_owner_that_does_not_answer_are_staged_not_refused() {
        let o = Ownership::clustered("a", "", 1);
        o.set_lease_until(Instant::now() + std::time::Duration::from_secs(5));
        let members = member_b();
        let owners = vec![Some(Owner {
            node: "b".into(),
            epoch: 2,
        })];
        o.set_view(members, owners);
        o.mark_unreachable("b");
        assert!(
            matches!(o.route(0), Route::Remote { epoch: 2, .. }),
            "refused, reset or no answer: staged here and acknowledged"
        );
        assert!(
            o.unreachable_now("b"),
            "the edge does not wait for its answer"
        );
        assert!(o.hurried(), "the controller re-reads etcd soon");
        o.table
            .write()
            .unreachable
            .insert("b".into(), Instant::now());
        assert!(!o.unreachable_now("b"));
    }

    #[test]
    fn a_retired_node_admits_nothing_but_delivers_to_the_owners_even_under_its_own_name() {
        let o = Ownership::clustered("a", "00000000000000aa", 2);
        o.set_lease_until(Instant::now() + std::time::Duration::from_secs(5));
        let mut members = member_b();
        members.insert(
            "a".into(),
            Member {
                node: "a".into(),
                advertise: "http://a-replacement".into(),
                state: "active".into(),
                incarnation: "00000000000000bb".into(),
            },
        );
        o.set_active(1, 5);
        o.set_view(
            members,
            vec![
                Some(Owner {
                    node: "a".into(),
                    epoch: 9,
                }),
                Some(Owner {
                    node: "b".into(),
                    epoch: 4,
                }),
            ],
        );
        assert_eq!(o.route(1), Route::Local(5));
        o.retire();
        assert!(
            matches!(o.route(0), Route::Unavailable(_)),
            "admits nothing"
        );
        assert!(matches!(o.route(1), Route::Unavailable(_)), "owns nothing");
        assert_eq!(o.emit_check(1, 5), EmitCheck::Stale, "emits nothing");
        assert!(
            matches!(o.delivery_route(0), Route::Unavailable(_)),
            "the other incarnation owns it: its name may resolve to this process"
        );
        assert_eq!(
            o.relay(0).as_deref(),
            Some("b"),
            "relayed through another member"
        );
        assert_eq!(o.relay(1), None, "b is reached directly");
        o.set_lease_until(Instant::now());
        assert!(
            matches!(o.delivery_route(1), Route::Remote { epoch: 4, .. }),
            "no lease needed to hand records on"
        );
    }

    #[test]
    fn a_closing_partition_refuses_records_but_still_emits() {
        let o = Ownership::clustered("a", "", 1);
        o.set_lease_until(Instant::now() + std::time::Duration::from_secs(5));
        o.set_active(0, 3);
        assert_eq!(o.route(0), Route::Local(3));
        o.set_closing(0);
        assert!(
            matches!(o.route(0), Route::Unavailable(_)),
            "no new records"
        );
        assert!(o.may_emit(0, 3), "in-flight records still finish");
        o.set_active(0, 0);
        assert_eq!(o.emit_check(0, 3), EmitCheck::Stale);
        o.set_active(0, 9);
        assert_eq!(o.route(0), Route::Local(9), "a new tenure opens admission");
    }
}
