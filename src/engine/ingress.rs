//! The ingress actor: the one place that admits records. It checks the whole batch
//! against every target partition's backlog bound (all or nothing), assigns ids and
//! per-partition seqs, and forwards one batch per partition. Being a single actor makes
//! admission atomic and keeps each partition's mailbox in seq order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;

use tokio::sync::oneshot;

use super::admit::Admitted;
use super::job::Job;
use super::partition::{Enqueue, Partition};
use super::reply::Collector;
use super::shared::Shared;
use crate::durability::codec::{AcceptedRecord, Entry};
use crate::durability::journal::{JournalHandle, unix_ms};
use crate::durability::state::{LEASE, State};

/// Refusal: a partition's backlog cannot take its share of the batch. Nothing was accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "partition {partition} cannot take {wanted} more record(s): it holds {held} of {limit} \
     (pipeline.capacity + pipeline.backlog)"
)]
pub struct Overloaded {
    pub partition: u32,
    pub wanted: usize,
    pub held: usize,
    pub limit: usize,
}

impl Overloaded {
    /// Whether the batch could be accepted once the partition drained; if not, retrying
    /// the same batch is pointless and it must be split.
    pub fn can_ever_fit(&self) -> bool {
        self.wanted <= self.limit
    }
}

/// A refused batch: why, and the records handed back untouched.
#[derive(Debug)]
pub struct Refused {
    pub reason: Overloaded,
    pub records: Vec<Admitted>,
}

/// An admitted batch: the ids, and (with `checkpoint.ack = "durable"`) the receiver that
/// fires once the batch is in the journal and fsynced.
pub struct Admission {
    pub ids: Vec<Arc<str>>,
    pub durable: Option<oneshot::Receiver<Result<(), String>>>,
}

/// Admit a batch. With `reply`, each record's envelope goes to that collector (index =
/// position in `records`) instead of the output sink, and nothing is journaled.
#[derive(Message)]
#[rtype(result = "Result<Admission, Refused>")]
pub struct Submit {
    pub records: Vec<Admitted>,
    pub reply: Option<Arc<Collector>>,
}

/// Continue from restored state: seqs and the pending records to re-issue (in seq order).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Restore(pub State);

/// Journal settings of the ingress.
pub struct IngressJournal {
    pub handle: JournalHandle,
    /// Wait for the fsync before acknowledging (`checkpoint.ack = "durable"`).
    pub durable: bool,
}

/// See module docs.
pub struct Ingress {
    partitions: Vec<Addr<Partition>>,
    next_seq: Vec<u64>,
    /// Per partition: seqs below this are covered by a journaled lease.
    lease_upto: Vec<u64>,
    limit: usize,
    shared: Arc<Shared>,
    journal: Option<IngressJournal>,
}

impl Ingress {
    /// An ingress over the partitions; seqs start at `next_seq` (restored state or zeros).
    /// A partition holds at most `limit` records (`capacity + backlog`).
    pub fn new(
        partitions: Vec<Addr<Partition>>,
        next_seq: Vec<u64>,
        limit: usize,
        shared: Arc<Shared>,
        journal: Option<IngressJournal>,
    ) -> Self {
        Ingress {
            lease_upto: vec![0; partitions.len()],
            partitions,
            next_seq,
            limit,
            shared,
            journal,
        }
    }

    /// Leases to journal so that the next `wanted` seqs of each partition are covered.
    fn leases(&mut self, counts: &[usize]) -> Vec<Entry> {
        let mut out = Vec::new();
        for (p, n) in counts.iter().enumerate() {
            let need = self.next_seq[p] + *n as u64;
            if self.journal.is_some() && need + LEASE / 2 > self.lease_upto[p] {
                self.lease_upto[p] = need + LEASE;
                out.push(Entry::SeqLease {
                    partition: p as u32,
                    upto: self.lease_upto[p],
                });
            }
        }
        out
    }
}

impl Actor for Ingress {
    type Context = Context<Self>;
}

impl Handler<Submit> for Ingress {
    type Result = Result<Admission, Refused>;

    fn handle(&mut self, msg: Submit, _: &mut Self::Context) -> Self::Result {
        let n = self.partitions.len();
        let mut counts = vec![0usize; n];
        for r in &msg.records {
            counts[r.partition as usize % n] += 1;
        }
        for (p, wanted) in counts.iter().enumerate() {
            let held = self.shared.partitions[p].held.load(Ordering::Acquire);
            if *wanted > 0 && held + wanted > self.limit {
                self.shared
                    .metrics
                    .records_refused
                    .inc_by(msg.records.len() as u64);
                return Err(Refused {
                    reason: Overloaded {
                        partition: p as u32,
                        wanted: *wanted,
                        held,
                        limit: self.limit,
                    },
                    records: msg.records,
                });
            }
        }
        let now = Instant::now();
        let total = msg.records.len();
        let journaled = msg.reply.is_none() && self.journal.is_some();
        let mut entries = self.leases(&counts);
        let now_ms = if journaled { unix_ms() } else { 0 };
        let mut batches: Vec<Vec<(u64, Job)>> =
            counts.iter().map(|c| Vec::with_capacity(*c)).collect();
        let mut ids = Vec::with_capacity(total);
        for (i, a) in msg.records.into_iter().enumerate() {
            let p = a.partition as usize % n;
            let seq = self.next_seq[p];
            self.next_seq[p] += 1;
            let id =
                a.id.unwrap_or_else(|| Arc::from(format!("p{p}-{seq}").as_str()));
            ids.push(id.clone());
            if journaled {
                entries.push(Entry::Accepted(AcceptedRecord {
                    partition: p as u32,
                    seq,
                    accepted_ms: now_ms,
                    first_attempt_ms: 0,
                    attempts: 0,
                    splice: a.splice,
                    id: id.to_string(),
                    key: a.key.to_string(),
                    canonical: a.canonical.to_string(),
                    record: a.record.to_string(),
                }));
            }
            batches[p].push((
                seq,
                Job {
                    id,
                    key: a.key,
                    canonical: a.canonical,
                    record: a.record,
                    splice: a.splice,
                    accepted_at: now,
                    attempts: 0,
                    first_attempt_ms: 0,
                    journaled,
                    reply: msg.reply.as_ref().map(|c| c.slot(i)),
                },
            ));
        }
        // Journal first: the channel is FIFO, so the partitions' later entries about these
        // records (started, committed) always follow their acceptance in the journal.
        let durable = match &self.journal {
            Some(j) if j.durable && journaled => Some(j.handle.write_durable(entries)),
            Some(j) => {
                j.handle.write(entries);
                None
            }
            None => None,
        };
        self.dispatch(batches);
        self.shared.metrics.records_accepted.inc_by(total as u64);
        Ok(Admission { ids, durable })
    }
}

impl Ingress {
    fn dispatch(&mut self, batches: Vec<Vec<(u64, Job)>>) {
        for (p, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let stats = &self.shared.partitions[p];
            stats.backlog.fetch_add(batch.len(), Ordering::AcqRel);
            stats.held.fetch_add(batch.len(), Ordering::AcqRel);
            stats
                .accepted
                .fetch_add(batch.len() as u64, Ordering::AcqRel);
            self.partitions[p].do_send(Enqueue(batch));
        }
    }
}

impl Handler<Restore> for Ingress {
    type Result = usize;

    /// Re-issue every pending record, in seq order per partition, with its attempts and
    /// first-attempt time; continue seqs above everything ever leased.
    fn handle(&mut self, msg: Restore, _: &mut Self::Context) -> usize {
        let state = msg.0;
        let n = self.partitions.len();
        for p in 0..n {
            let next = state.next_seq_of(p as u32).max(self.next_seq[p]);
            self.next_seq[p] = next;
            // The restored lease is already journaled; force a fresh one above it.
            self.lease_upto[p] = next;
        }
        let leases = self.leases(&vec![0; n]);
        if let Some(j) = &self.journal {
            j.handle.write(leases);
        }
        let now = Instant::now();
        let mut batches: Vec<Vec<(u64, Job)>> = (0..n).map(|_| Vec::new()).collect();
        let total = state.pending.len();
        for ((p, seq), r) in state.pending {
            let r = Arc::unwrap_or_clone(r);
            let started = r.first_attempt_ms > 0;
            batches[p as usize % n].push((
                seq,
                Job {
                    id: Arc::from(r.id.as_str()),
                    key: r.key.into_boxed_str(),
                    canonical: Arc::from(r.canonical.as_str()),
                    record: r.record.into_boxed_str(),
                    splice: r.splice,
                    accepted_at: now,
                    // An attempt in flight at the crash counts as made.
                    attempts: r.attempts.max(u32::from(started)),
                    first_attempt_ms: r.first_attempt_ms,
                    journaled: true,
                    reply: None,
                },
            ));
        }
        self.dispatch(batches);
        total
    }
}
