//! The enrichment engine: ingress → partitions → emitter, as actix actors.
//!
//! Pure logic lives in `queue` (ordering, capacity, deadlines), `retry` (backoff schedule),
//! `admit` (per-record validation and routing), `admission` (the all-or-nothing check of a
//! batch), `outbox` (the forwarding protocol and the import watermarks), `hash` (stable
//! partitioning) and `outcome` (routing and the envelope); the actors in `ingress`,
//! `partition`, `emitter` and `forwarder` only move data between them.

pub mod admission;
pub mod admit;
pub mod emitter;
pub mod forwarder;
pub mod hash;
pub mod ingress;
pub mod job;
pub mod outbox;
pub mod outcome;
pub mod ownership;
pub mod partition;
pub mod pipeline;
pub mod queue;
pub mod reply;
pub mod retry;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::Arbiter;

use self::admission::{Overloaded, Refusal};
use self::admit::{Admitted, RecordRules};
use self::emitter::{Emitter, EmitterError, Flush, Reopen, Reset, Truncate};
use self::ingress::{
    Activate, Dormant, EvictPartition, Held, Import, ImportAck, ImportRefused, Ingress,
    IngressJournal, Refused, Restage, Restore, Submit,
};
use self::outcome::OutcomeRules;
use self::ownership::Ownership;
use self::partition::{Partition, PartitionConfig};
use self::reply::Collector;
use self::retry::RetryPolicy;
use self::shared::Shared;
use crate::durability::journal::{CheckpointInfo, JournalError, JournalHandle};
use crate::durability::state::State;
use crate::metrics::Metrics;
use crate::settings::{Ack, Settings};
use crate::sink::{Sink, SinkError};
use pipeline::Pipeline;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("config: {0}")]
    Pointer(#[from] crate::pointer::PointerError),
    #[error("the ingress is gone (engine stopped)")]
    Stopped,
    #[error("pipeline: {0}")]
    Pipeline(#[from] pipeline::PipelineError),
}

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A backlog was full; nothing was accepted and the records are handed back.
    #[error("{reason}")]
    Overloaded {
        reason: Overloaded,
        records: Vec<Admitted>,
    },
    #[error("the engine is stopped")]
    Stopped,
    /// A target partition has no owner that can take records now; nothing was accepted.
    #[error("{0}")]
    Unavailable(String),
    /// The records were accepted but could not be made durable.
    #[error("could not make the records durable: {0}")]
    Journal(JournalError),
}

impl From<Refused> for SubmitError {
    fn from(r: Refused) -> Self {
        match r.reason {
            Refusal::Overloaded(reason) => SubmitError::Overloaded {
                reason,
                records: r.records,
            },
            Refusal::Unavailable(why) => SubmitError::Unavailable(why),
        }
    }
}

/// How long a `/v1/records` answer waits for remote owners to take forwarded records
/// (the records are durable here already; past this the 202 goes out anyway).
const FORWARD_WAIT: Duration = Duration::from_secs(2);

/// Why an import from another node was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Refused(ImportRefused),
    #[error("the engine is stopped")]
    Stopped,
    #[error("could not make the records durable: {0}")]
    Journal(JournalError),
}

/// Why an operation of the running engine (flush, checkpoint, cutting the sinks back,
/// handover, a lost lease) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The etcd lease is not live and something was written since the last commit: nothing
    /// is committed while fenced (retry once the lease is renewed).
    #[error("fenced: the etcd lease is not live")]
    Fenced,
    /// A sink could not be cut back to its committed length.
    #[error(transparent)]
    Sink(SinkError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An actor of the engine is gone (the engine is stopping).
    #[error("the {0} is gone")]
    Gone(&'static str),
}

impl From<EmitterError> for OpError {
    fn from(e: EmitterError) -> Self {
        match e {
            EmitterError::Fenced => OpError::Fenced,
            EmitterError::Sink(e) => OpError::Sink(e),
        }
    }
}

/// A running engine: the handle the HTTP edge and `sluice enrich` use.
pub struct Engine {
    ingress: Addr<Ingress>,
    emitter: Addr<Emitter>,
    shared: Arc<Shared>,
    rules: RecordRules,
    arbiters: Vec<Arbiter>,
    journal: Option<JournalHandle>,
    pipeline: Arc<Pipeline>,
}

impl Engine {
    /// Start the actors: one arbiter (thread) per `pipeline.threads` for the partitions,
    /// one for the emitter, one for the ingress. Must run inside an actix `System`. With a
    /// journal, accepted records, attempts and sink commits are journaled. The engine
    /// starts not ready: call [`Engine::set_ready`] (after [`Engine::restore`]).
    pub fn start(
        settings: &Settings,
        pipeline: Arc<Pipeline>,
        output: Box<dyn Sink>,
        dead_letter: Box<dyn Sink>,
        journal: Option<JournalHandle>,
    ) -> Result<Engine, EngineError> {
        let ownership = Arc::new(Ownership::standalone(
            &settings.node_id(),
            settings.pipeline.partitions as u32,
        ));
        Self::start_with(settings, pipeline, output, dead_letter, journal, ownership)
    }

    /// [`Engine::start`] with a given ownership table (cluster mode: owns nothing until
    /// the controller activates partitions).
    pub fn start_with(
        settings: &Settings,
        pipeline: Arc<Pipeline>,
        output: Box<dyn Sink>,
        dead_letter: Box<dyn Sink>,
        journal: Option<JournalHandle>,
        ownership: Arc<Ownership>,
    ) -> Result<Engine, EngineError> {
        let partitions = settings.pipeline.partitions as usize;
        let shared = Arc::new(Shared::new(partitions, Metrics::new()?, ownership));
        let rules = RecordRules::from_settings(settings)?.with_pipeline(pipeline.clone());
        let outcome_rules = Arc::new(OutcomeRules::from_settings(settings)?);
        let policy = RetryPolicy::from_settings(&settings.retry);

        let emitter_arbiter = Arbiter::new();
        let flush_every = Duration::from_millis(settings.checkpoint.interval_ms.max(1));
        let emitter = {
            let shared = shared.clone();
            let journal = journal.clone();
            Emitter::start_in_arbiter(&emitter_arbiter.handle(), move |_| {
                Emitter::new(output, dead_letter, shared, flush_every, journal)
            })
        };

        let workers: Vec<Arbiter> = (0..settings.partition_threads().min(partitions).max(1))
            .map(|_| Arbiter::new())
            .collect();
        let mut addrs = Vec::with_capacity(partitions);
        for id in 0..partitions {
            let cfg = PartitionConfig {
                id: id as u32,
                capacity: settings.pipeline.capacity as usize,
                mode: settings.pipeline.mode,
                timeout: Duration::from_millis(settings.pipeline.timeout_ms),
                policy: policy.clone(),
                rules: outcome_rules.clone(),
                journal: journal.clone(),
            };
            let (pipeline, emitter, shared) = (pipeline.clone(), emitter.clone(), shared.clone());
            addrs.push(Partition::start_in_arbiter(
                &workers[id % workers.len()].handle(),
                move |_| Partition::new(cfg, pipeline, emitter, shared),
            ));
        }

        let ingress_arbiter = Arbiter::new();
        let ingress = {
            let shared = shared.clone();
            let limit = (settings.pipeline.capacity + settings.pipeline.backlog) as usize;
            let ingress_journal = journal.clone().map(|handle| IngressJournal {
                handle,
                durable: settings.checkpoint.ack == Ack::Durable,
            });
            let token = settings.server.auth_tokens.first().cloned();
            let max_staged = settings.cluster.max_staged_records as usize;
            // Five leases: a node frozen past its lease that wakes within them still answers.
            let incarnation_wait =
                Duration::from_millis(settings.cluster.lease_ttl_ms.saturating_mul(5));
            Ingress::start_in_arbiter(&ingress_arbiter.handle(), move |_| {
                Ingress::new(
                    addrs,
                    vec![0; partitions],
                    limit,
                    shared,
                    ingress_journal,
                    token,
                )
                .with_max_staged(max_staged)
                .with_incarnation_wait(incarnation_wait)
            })
        };

        let mut arbiters = workers;
        arbiters.push(emitter_arbiter);
        arbiters.push(ingress_arbiter);
        Ok(Engine {
            ingress,
            emitter,
            shared,
            rules,
            arbiters,
            journal,
            pipeline,
        })
    }

    /// The pipeline's steps and their backends (readiness, coalescing counts).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Accept requests from now on (`/readyz` turns 200).
    pub fn set_ready(&self) {
        self.shared.ready.store(true, Ordering::Release);
    }

    /// Cut the file sinks back to the lengths the journal committed (of the files it names).
    pub async fn truncate_sinks(&self, state: &State) -> Result<(), OpError> {
        self.emitter
            .send(Truncate {
                output: state.output_offset,
                dead_letter: state.dead_letter_offset,
                output_file: state.output_file,
                dead_letter_file: state.dead_letter_file,
            })
            .await
            .map_err(|_| OpError::Gone("emitter"))?
            .map_err(OpError::from)
    }

    /// Continue from restored state: re-issue its pending records (standalone) or keep
    /// them until their partitions are placed (cluster); returns how many.
    pub async fn restore(&self, state: State) -> Result<usize, EngineError> {
        let clustered = self.shared.ownership.is_clustered();
        let n = self
            .ingress
            .send(Restore { state, clustered })
            .await
            .map_err(|_| EngineError::Stopped)?;
        self.shared.metrics.restored_records.set(n as i64);
        Ok(n)
    }

    /// Cluster: serve `partition` from now on under `epoch`, seqs from `seq_floor` up.
    pub async fn activate(
        &self,
        partition: u32,
        epoch: u64,
        seq_floor: u64,
    ) -> Result<usize, EngineError> {
        self.ingress
            .send(Activate {
                partition,
                epoch,
                seq_floor,
            })
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Cluster: drop the partition's records from its actor (they stay in the journal).
    pub async fn evict(&self, partition: u32) -> Result<usize, EngineError> {
        self.ingress
            .send(EvictPartition(partition))
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Cluster: the journal's pending records of `partition` (all: `None`).
    pub async fn export(
        &self,
        partition: Option<u32>,
    ) -> Result<Vec<Arc<crate::record::Record>>, OpError> {
        match &self.journal {
            Some(j) => Ok(j.export(partition).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Cluster: move pending records into the outbox (for `handover_to`, else the owner);
    /// answers once that is durable.
    pub async fn restage(
        &self,
        records: Vec<Arc<crate::record::Record>>,
        handover_to: Option<String>,
    ) -> Result<(), OpError> {
        let rx = self
            .ingress
            .send(Restage {
                records,
                handover_to,
            })
            .await
            .map_err(|_| OpError::Gone("ingress"))?;
        Ok(rx.await.map_err(|_| JournalError::Stopped)??)
    }

    /// Cluster: records held here for `partition`'s owner elsewhere (outbox and dormant).
    pub async fn held_for_others(&self, partition: u32) -> usize {
        self.ingress.send(Held(partition)).await.unwrap_or(0)
    }

    /// Cluster: after a lost lease, drop what waits for the sinks, cut them back to the
    /// last commit, and keep every pending record dormant for the new owners.
    pub async fn lose_everything(&self) -> Result<(), OpError> {
        // Inactive first, so whatever a partition still renders is refused as stale; then
        // every partition actor emptied (they are all in the journal's pending records).
        let partitions = self.shared.partitions.len() as u32;
        for p in 0..partitions {
            self.shared.ownership.set_active(p, 0);
        }
        for p in 0..partitions {
            let _ = self.evict(p).await;
        }
        self.emitter
            .send(Reset)
            .await
            .map_err(|_| OpError::Gone("emitter"))??;
        let records = self.export(None).await?;
        self.ingress
            .send(Dormant(records))
            .await
            .map_err(|_| OpError::Gone("ingress"))
    }

    /// Cluster: take records another node sends (see `engine/ingress.rs`); answers once
    /// they are durable here.
    pub async fn import(&self, msg: Import) -> Result<usize, ImportError> {
        self.shared.imports_seen.fetch_add(1, Ordering::AcqRel);
        let ImportAck { accepted, durable } = self
            .ingress
            .send(msg)
            .await
            .map_err(|_| ImportError::Stopped)?
            .map_err(ImportError::Refused)?;
        durable
            .await
            .map_err(|_| ImportError::Journal(JournalError::Stopped))?
            .map_err(ImportError::Journal)?;
        Ok(accepted)
    }

    /// Take a snapshot now (after committing what the sinks hold); answers once durable.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointInfo>, OpError> {
        let Some(j) = &self.journal else {
            return Ok(None);
        };
        self.flush().await?;
        Ok(Some(j.checkpoint().await?))
    }

    /// Counters, metrics and readiness.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The per-record validation rules (key, id, into, partitions).
    pub fn rules(&self) -> &RecordRules {
        &self.rules
    }

    /// Admit records for the output sink; answers with their ids once admitted.
    /// With `checkpoint.ack = "durable"` it answers only once they are fsynced.
    pub async fn submit(&self, records: Vec<Admitted>) -> Result<Vec<Arc<str>>, SubmitError> {
        let admission = self
            .ingress
            .send(Submit {
                records,
                reply: None,
            })
            .await
            .map_err(|_| SubmitError::Stopped)??;
        if let Some(durable) = admission.durable {
            durable
                .await
                .map_err(|_| SubmitError::Journal(JournalError::Stopped))?
                .map_err(SubmitError::Journal)?;
        }
        if !admission.forwarded.is_empty() {
            // Durable here already; waiting for the owners keeps per-key order for a client
            // that sends its next request to another node after this answer.
            let all = futures_util::future::join_all(admission.forwarded);
            let _ = tokio::time::timeout(FORWARD_WAIT, all).await;
        }
        Ok(admission.ids)
    }

    /// Enrich records synchronously: answers with their envelopes in request order.
    pub async fn enrich(
        &self,
        records: Vec<Admitted>,
    ) -> Result<Vec<reply::Envelope>, SubmitError> {
        let (collector, rx) = Collector::new(records.len());
        self.ingress
            .send(Submit {
                records,
                reply: Some(collector),
            })
            .await
            .map_err(|_| SubmitError::Stopped)??;
        rx.await.map_err(|_| SubmitError::Stopped)
    }

    /// Reopen the file sinks (SIGHUP, log rotation).
    pub fn reopen_sinks(&self) {
        self.emitter.do_send(Reopen);
    }

    /// Flush the sinks now.
    pub async fn flush(&self) -> Result<(), OpError> {
        Ok(self
            .emitter
            .send(Flush)
            .await
            .map_err(|_| OpError::Gone("emitter"))??)
    }

    /// Wait until nothing is pending (or `limit` passes); true when quiescent.
    pub async fn drain(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while self.shared.pending() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Stop the actor threads (after a final flush, which the caller awaits first).
    pub fn stop(self) {
        for a in &self.arbiters {
            a.stop();
        }
        for a in self.arbiters {
            let _ = a.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_emitter_is_a_fenced_engine_and_says_so() {
        let e = OpError::from(EmitterError::Fenced);
        assert!(matches!(e, OpError::Fenced));
        assert_eq!(e.to_string(), "fenced: the etcd lease is not live");
        let stopped = OpError::from(JournalError::Stopped);
        assert!(matches!(stopped, OpError::Journal(JournalError::Stopped)));
        assert_eq!(OpError::Gone("emitter").to_string(), "the emitter is gone");
    }
}
