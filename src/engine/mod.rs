//! The enrichment engine: ingress → partitions → emitter, as actix actors.
//!
//! Pure logic lives in `queue` (ordering, capacity, deadlines), `retry` (backoff schedule),
//! `admit` (per-record validation and routing), `hash` (stable partitioning) and
//! `outcome` (routing and the envelope); the actors in `ingress`, `partition` and
//! `emitter` only move data between them.

pub mod admit;
pub mod emitter;
pub mod hash;
pub mod ingress;
pub mod job;
pub mod outcome;
pub mod partition;
pub mod queue;
pub mod reply;
pub mod retry;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::Arbiter;

use self::admit::{Admitted, RecordRules};
use self::emitter::{Emitter, Flush, Truncate};
use self::ingress::{Ingress, IngressJournal, Overloaded, Refused, Restore, Submit};
use self::outcome::OutcomeRules;
use self::partition::{Partition, PartitionConfig};
use self::reply::Collector;
use self::retry::RetryPolicy;
use self::shared::Shared;
use crate::durability::journal::{CheckpointInfo, JournalHandle};
use crate::durability::state::State;
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::settings::{Ack, Settings};
use crate::sink::Sink;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("config: {0}")]
    Pointer(#[from] crate::pointer::PointerError),
    #[error("the ingress is gone (engine stopped)")]
    Stopped,
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
    /// The records were accepted but could not be made durable.
    #[error("could not make the records durable: {0}")]
    Journal(String),
}

impl From<Refused> for SubmitError {
    fn from(r: Refused) -> Self {
        SubmitError::Overloaded {
            reason: r.reason,
            records: r.records,
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
    lookup: Arc<dyn Lookup>,
}

impl Engine {
    /// Start the actors: one arbiter (thread) per `pipeline.threads` for the partitions,
    /// one for the emitter, one for the ingress. Must run inside an actix `System`. With a
    /// journal, accepted records, attempts and sink commits are journaled. The engine
    /// starts not ready: call [`Engine::set_ready`] (after [`Engine::restore`]).
    pub fn start(
        settings: &Settings,
        lookup: Arc<dyn Lookup>,
        output: Box<dyn Sink>,
        dead_letter: Box<dyn Sink>,
        journal: Option<JournalHandle>,
    ) -> Result<Engine, EngineError> {
        let partitions = settings.pipeline.partitions as usize;
        let shared = Arc::new(Shared::new(partitions, Metrics::new()?));
        let rules = RecordRules::from_settings(settings)?.with_lookup(lookup.clone());
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
                attempt_timeout: Duration::from_millis(settings.lookup.attempt_timeout_ms),
                policy: policy.clone(),
                rules: outcome_rules.clone(),
                journal: journal.clone(),
            };
            let (lookup, emitter, shared) = (lookup.clone(), emitter.clone(), shared.clone());
            addrs.push(Partition::start_in_arbiter(
                &workers[id % workers.len()].handle(),
                move |_| Partition::new(cfg, lookup, emitter, shared),
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
            Ingress::start_in_arbiter(&ingress_arbiter.handle(), move |_| {
                Ingress::new(addrs, vec![0; partitions], limit, shared, ingress_journal)
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
            lookup,
        })
    }

    /// The lookup backend (readiness, coalescing counts).
    pub fn lookup(&self) -> &Arc<dyn Lookup> {
        &self.lookup
    }

    /// Accept requests from now on (`/readyz` turns 200).
    pub fn set_ready(&self) {
        self.shared.ready.store(true, Ordering::Release);
    }

    /// Cut the file sinks back to the lengths the journal committed.
    pub async fn truncate_sinks(&self, output: u64, dead_letter: u64) -> Result<(), String> {
        self.emitter
            .send(Truncate {
                output,
                dead_letter,
            })
            .await
            .map_err(|_| "the emitter is gone".to_string())?
    }

    /// Continue from restored state: re-issue its pending records; returns how many.
    pub async fn restore(&self, state: State) -> Result<usize, EngineError> {
        let n = self
            .ingress
            .send(Restore(state))
            .await
            .map_err(|_| EngineError::Stopped)?;
        self.shared.metrics.restored_records.set(n as i64);
        Ok(n)
    }

    /// Take a snapshot now (after committing what the sinks hold); answers once durable.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointInfo>, String> {
        let Some(j) = &self.journal else {
            return Ok(None);
        };
        self.flush().await?;
        j.checkpoint().await.map(Some)
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
                .map_err(|_| SubmitError::Journal("the journal stopped".into()))?
                .map_err(SubmitError::Journal)?;
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

    /// Flush the sinks now.
    pub async fn flush(&self) -> Result<(), String> {
        self.emitter
            .send(Flush)
            .await
            .map_err(|_| "the emitter is gone".to_string())?
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
