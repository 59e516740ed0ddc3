//! The ingress actor: the one place that admits records. It checks the whole batch
//! against every target partition's backlog bound (all or nothing), assigns ids and
//! per-partition seqs, and forwards one batch per partition. Being a single actor makes
//! admission atomic and keeps each partition's mailbox in seq order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;

use super::admit::Admitted;
use super::job::Job;
use super::partition::{Enqueue, Partition};
use super::reply::Collector;
use super::shared::Shared;

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

/// Admit a batch. With `reply`, each record's envelope goes to that collector (index =
/// position in `records`) instead of the output sink.
#[derive(Message)]
#[rtype(result = "Result<Vec<Arc<str>>, Refused>")]
pub struct Submit {
    pub records: Vec<Admitted>,
    pub reply: Option<Arc<Collector>>,
}

/// See module docs.
pub struct Ingress {
    partitions: Vec<Addr<Partition>>,
    next_seq: Vec<u64>,
    limit: usize,
    shared: Arc<Shared>,
}

impl Ingress {
    /// An ingress over the partitions; seqs start at `next_seq` (restored state or zeros).
    /// A partition holds at most `limit` records (`capacity + backlog`).
    pub fn new(
        partitions: Vec<Addr<Partition>>,
        next_seq: Vec<u64>,
        limit: usize,
        shared: Arc<Shared>,
    ) -> Self {
        Ingress {
            partitions,
            next_seq,
            limit,
            shared,
        }
    }
}

impl Actor for Ingress {
    type Context = Context<Self>;
}

impl Handler<Submit> for Ingress {
    type Result = Result<Vec<Arc<str>>, Refused>;

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
                    reply: msg.reply.as_ref().map(|c| c.slot(i)),
                },
            ));
        }
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
        self.shared.metrics.records_accepted.inc_by(total as u64);
        Ok(ids)
    }
}
