//! State shared between the HTTP edge, the ingress and the partitions: counters that the
//! status endpoint and the ingress' admission check read without asking any actor.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::sync::Arc;

use super::ownership::Ownership;
use crate::metrics::Metrics;

/// Live counters of one partition.
#[derive(Default)]
pub struct PartitionStats {
    /// Records accepted into this partition (all time, this process).
    pub accepted: AtomicU64,
    /// Records that reached their sink or their `/v1/enrich` caller.
    pub emitted: AtomicU64,
    /// Records in the in-flight queue.
    pub in_flight: AtomicUsize,
    /// Records admitted by the ingress but not yet in the in-flight queue (mailbox and
    /// backlog).
    pub backlog: AtomicUsize,
    /// Records admitted and not yet taken by their sink (backlog, in flight, waiting for
    /// the emitter): the number the ingress bounds by `capacity + backlog`.
    pub held: AtomicUsize,
    /// Records this node accepted and gave away (handover, lost ownership): no longer
    /// pending here.
    pub handed: AtomicU64,
    /// Cluster: records held here for this partition's owner elsewhere, not yet taken.
    pub staged: AtomicUsize,
}

impl PartitionStats {
    /// `n` records left this node without an outcome here (evicted, or refused as stale):
    /// no longer held or pending here; the journal hands them to their owner.
    pub fn hand_off(&self, n: u64) {
        self.held.fetch_sub(n as usize, Ordering::AcqRel);
        self.handed.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` records reached their sink: no longer held. Saturating: a sink may still deliver
    /// a record after it was handed off (at least once), which must not wrap the counter.
    pub fn delivered(&self, n: u64) {
        self.emitted.fetch_add(n, Ordering::AcqRel);
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n as usize))
            });
    }

    /// Accepted but not yet terminal.
    pub fn pending(&self) -> u64 {
        let accepted = self.accepted.load(Ordering::Acquire);
        let emitted = self.emitted.load(Ordering::Acquire);
        let handed = self.handed.load(Ordering::Acquire);
        accepted.saturating_sub(emitted).saturating_sub(handed)
    }
}

/// Everything shared across threads.
pub struct Shared {
    /// One entry per partition, indexed by partition id.
    pub partitions: Vec<PartitionStats>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Restore finished and backend reachable; POSTs get 503 until then.
    pub ready: AtomicBool,
    /// Set on SIGTERM: `/readyz` answers 503; a standalone node refuses records (503), a
    /// cluster member still routes them while it hands its partitions over.
    pub draining: AtomicBool,
    /// Set at the very end of a stop, before the last shipment of staged records: every
    /// record request is refused (503), so nothing acknowledged stays behind.
    pub closed: AtomicBool,
    /// Batches other nodes sent or asked about here (`POST /internal/v1/import`): a retiring
    /// node stays until they have stopped coming, so every question about a batch in doubt
    /// is answered by the incarnation that may hold it.
    pub imports_seen: std::sync::atomic::AtomicU64,
    /// Who owns which partition (a standalone node owns all of them).
    pub ownership: Arc<Ownership>,
    /// The newest durable snapshot, for `/v1/status`.
    pub last_checkpoint: crate::durability::journal::CheckpointSlot,
    /// What is wrong with the sinks, one line per problem (empty: healthy); set by the
    /// emitter, shown by `/readyz` and `/v1/status`.
    pub sink_problems: parking_lot::Mutex<Vec<String>>,
    /// Why the journal cannot write now (set by the journal thread): `/readyz` answers 503
    /// and the ingress refuses journaled records while it is set.
    pub journal_health: crate::durability::journal::JournalHealth,
}

impl Shared {
    /// Fresh counters for `partitions` partitions.
    pub fn new(partitions: usize, metrics: Metrics, ownership: Arc<Ownership>) -> Self {
        Shared {
            ownership,
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            imports_seen: std::sync::atomic::AtomicU64::new(0),
            last_checkpoint: Default::default(),
            sink_problems: Default::default(),
            journal_health: Default::default(),
        }
    }

    /// Accepted but not yet terminal, all partitions.
    pub fn pending(&self) -> u64 {
        self.partitions.iter().map(PartitionStats::pending).sum()
    }

    /// Records held here for other nodes' partitions, not yet taken by their owners.
    pub fn staged(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.staged.load(Ordering::Acquire) as u64)
            .sum()
    }

    /// Why record requests are refused now (503), if they are: not restored yet, or
    /// stopping — a cluster member keeps routing them until [`Shared::closed`], since
    /// Kubernetes still sends it traffic for a while after SIGTERM.
    pub fn refusing_records(&self) -> Option<&'static str> {
        let stopping = self.closed.load(Ordering::Acquire)
            || (self.draining.load(Ordering::Acquire) && !self.ownership.is_clustered());
        if stopping {
            Some("the node is shutting down")
        } else if !self.ready.load(Ordering::Acquire) {
            Some("the node is not ready yet")
        } else {
            None
        }
    }

    /// Whether requests may be accepted.
    pub fn accepting(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}
