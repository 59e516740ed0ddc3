//! The one record type that crosses every boundary: validated at ingest, queued in a
//! partition, journaled, staged for another node, forwarded, restored after a crash, handed
//! over. Its texts are shared (`Arc<str>`), so passing a record from one stage to the next
//! copies no bytes. A leaf module: it depends on nothing of the service but the envelope
//! types.

use std::sync::Arc;

use crate::envelope::OutcomeKind;

/// An accepted (or about to be accepted) record and what survives about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `hash(canonical) % partitions`.
    pub partition: u32,
    /// The partition's seq once admitted; while staged for another node, this node's stage
    /// number for the partition.
    pub seq: u64,
    /// Wall-clock ms of acceptance (0 for `/v1/enrich`, which is not journaled).
    pub accepted_ms: u64,
    /// Wall-clock ms of the first attempt; 0 until it starts. Kept across restores and
    /// handovers, so the record's deadline keeps running.
    pub first_attempt_ms: u64,
    /// Attempts started so far.
    pub attempts: u32,
    /// The lookup result can be appended as a new top-level member (fast merge).
    pub splice: bool,
    /// The client's id, or the one the ingress generated; empty until then (a client's id
    /// is never empty: that is a 422).
    pub id: Arc<str>,
    /// The key's JSON text as it appears in the record (echoed in the envelope).
    pub key: Arc<str>,
    /// The key's canonical text: the lookup key and the input of the partition hash.
    pub canonical: Arc<str>,
    /// The record's JSON text on one line.
    pub text: Arc<str>,
    /// Set once its envelope was about to go to an at-least-once sink: from then on the
    /// record is only ever emitted as exactly this envelope (a restore or a new owner sends
    /// it again instead of looking it up again, so its outcome cannot change).
    pub decided: Option<Decided>,
    /// Pipelines of several steps: what each step has done so far (attempts begun, result
    /// if it finished), by step index; empty in the single-lookup form (`attempts` counts
    /// its one step). Restores and handovers resume from here: a finished step is not
    /// looked up again.
    pub steps: Vec<StepMark>,
}

/// One pipeline step's durable progress within a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepMark {
    /// Attempts begun (each one journaled before it is issued).
    pub attempts: u32,
    /// Set once the step finished with a result the record goes on with.
    pub done: Option<StepDone>,
}

/// How a step finished, when the record goes on after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDone {
    /// The row (JSON text) merged at the step's `into`.
    Found(Arc<str>),
    /// No row: `null` at `into`.
    Miss,
    /// Not run (a bind read `null` or a source step missed with `skip_dependents`).
    Skipped,
}

/// A record's final envelope, fixed before an at-least-once sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Bound for the dead-letter sink (else the output sink).
    pub dead_letter: bool,
    pub outcome: OutcomeKind,
    /// The envelope's JSON text (no newline).
    pub envelope: Arc<str>,
}
