//! The emitter actor: writes the partitions' batches to the output and dead-letter sinks,
//! flushes them at least every `checkpoint.interval_ms`, and counts a record as emitted
//! only once its sink took it. A failing sink keeps its batches and retries them in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use super::outcome::OutcomeKind;
use super::ownership::EmitCheck;
use super::shared::Shared;
use crate::durability::codec::Entry;
use crate::durability::journal::JournalHandle;
use crate::sink::Sink;

/// Serialized envelopes of one partition, in release order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitBatch {
    pub partition: u32,
    /// Ownership epoch the records were rendered under; a batch whose epoch is no longer
    /// this node's for the partition is refused (cluster fencing).
    pub epoch: u64,
    /// NDJSON lines for the output sink.
    pub output: Vec<u8>,
    pub output_records: u64,
    /// NDJSON lines for the dead-letter sink.
    pub dead: Vec<u8>,
    pub dead_records: u64,
    /// Records answered to a `/v1/enrich` caller (no bytes to write).
    pub replied: u64,
    /// Records per outcome, indexed by `OutcomeKind::index`.
    pub outcomes: [u64; 4],
    /// (partition, seq) of the journaled records in `output` and `dead`: committed as
    /// terminal once the sinks are durable.
    pub marks: Vec<(u32, u64)>,
}

impl EmitBatch {
    /// An empty batch for `partition` under `epoch`.
    pub fn new(partition: u32, epoch: u64) -> Self {
        EmitBatch {
            partition,
            epoch,
            output: Vec::new(),
            output_records: 0,
            dead: Vec::new(),
            dead_records: 0,
            replied: 0,
            outcomes: [0; 4],
            marks: Vec::new(),
        }
    }
}

/// Flush both sinks now (and, with a journal, make them durable and commit what they
/// hold); answers once done (or with the error).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Flush;

/// See module docs.
pub struct Emitter {
    output: Box<dyn Sink>,
    dead: Box<dyn Sink>,
    shared: Arc<Shared>,
    flush_every: Duration,
    stalled: VecDeque<EmitBatch>,
    journal: Option<JournalHandle>,
    /// Journaled records written to the sinks since the last commit.
    uncommitted: Vec<(u32, u64)>,
    /// Sink positions of the last commit (nothing to commit while unchanged).
    committed_at: Option<(u64, u64)>,
}

impl Emitter {
    /// An emitter over the two sinks.
    pub fn new(
        output: Box<dyn Sink>,
        dead: Box<dyn Sink>,
        shared: Arc<Shared>,
        flush_every: Duration,
        journal: Option<JournalHandle>,
    ) -> Self {
        Emitter {
            output,
            dead,
            shared,
            flush_every,
            stalled: VecDeque::new(),
            journal,
            uncommitted: Vec::new(),
            committed_at: None,
        }
    }

    /// Write one batch; on failure (false) `b` keeps what was not written.
    fn write(&mut self, b: &mut EmitBatch) -> bool {
        let records = b.output_records + b.dead_records;
        let check = if records > 0 {
            self.shared.ownership.emit_check(b.partition, b.epoch)
        } else {
            EmitCheck::Yes
        };
        if check == EmitCheck::Wait {
            // Fenced (lease not renewed): hold the batch; it is written once the lease is
            // renewed, or dropped if the lease turns out lost.
            return false;
        }
        if check == EmitCheck::Stale {
            // Fenced: this node no longer owns the partition at this epoch (or its lease
            // is not live). The records stay pending in the journal and go to the owner.
            tracing::warn!(
                partition = b.partition,
                epoch = b.epoch,
                records,
                "refusing to write under a stale epoch"
            );
            self.shared.metrics.fencing_refusals.inc_by(records);
            if let Some(stats) = self.shared.partitions.get(b.partition as usize) {
                stats.hand_off(records);
            }
            b.output.clear();
            b.dead.clear();
            b.output_records = 0;
            b.dead_records = 0;
            b.marks.clear();
        }
        if !b.output.is_empty() {
            if let Err(e) = self.output.write(&b.output) {
                tracing::error!(error = %e, "output sink write failed; will retry");
                self.shared.metrics.sink_errors.inc();
                return false;
            }
            b.output.clear();
        }
        if !b.dead.is_empty() {
            if let Err(e) = self.dead.write(&b.dead) {
                tracing::error!(error = %e, "dead-letter sink write failed; will retry");
                self.shared.metrics.sink_errors.inc();
                return false;
            }
            b.dead.clear();
        }
        let done = b.output_records + b.dead_records + b.replied;
        let m = &self.shared.metrics;
        for kind in OutcomeKind::ALL {
            let n = b.outcomes[kind.index()];
            if n > 0 {
                m.records_emitted
                    .with_label_values(&[kind.as_str()])
                    .inc_by(n);
            }
        }
        m.dead_letters.inc_by(b.dead_records);
        if let Some(stats) = self.shared.partitions.get(b.partition as usize) {
            stats.emitted.fetch_add(done, Ordering::AcqRel);
            stats.held.fetch_sub(done as usize, Ordering::AcqRel);
        }
        if self.journal.is_some() {
            self.uncommitted.extend_from_slice(&b.marks);
        }
        true
    }

    fn retry_stalled(&mut self) {
        while let Some(mut b) = self.stalled.pop_front() {
            if !self.write(&mut b) {
                self.stalled.push_front(b);
                return;
            }
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        // Fenced with something written since the last commit: commit nothing. If the
        // lease turns out lost, everything after the last commit is cut away (and handed
        // to the new owners); if it is renewed, this commit happens next tick. (With
        // nothing written — a fresh start before the first lease — committing is harmless.)
        let own = &self.shared.ownership;
        let written = self.committed_at != Some((self.output.position(), self.dead.position()))
            || !self.uncommitted.is_empty();
        if !own.lease_live() && own.is_clustered() && written && self.committed_at.is_some() {
            return Err("fenced: the etcd lease is not live".into());
        }
        self.retry_stalled();
        let mut result = Ok(());
        let durable = self.journal.is_some();
        for sink in [&mut self.output, &mut self.dead] {
            let r = if durable { sink.sync() } else { sink.flush() };
            if let Err(e) = r {
                self.shared.metrics.sink_errors.inc();
                tracing::error!(error = %e, "sink flush failed; will retry");
                result = Err(e.to_string());
            }
        }
        // Commit only what the sinks now hold durably: a restore truncates each file back
        // to the committed position and re-emits everything not committed.
        let at = (self.output.position(), self.dead.position());
        if result.is_ok()
            && (self.committed_at != Some(at) || !self.uncommitted.is_empty())
            && let Some(j) = &self.journal
        {
            j.write(vec![Entry::Committed {
                marks: std::mem::take(&mut self.uncommitted),
                output: at.0,
                dead_letter: at.1,
            }]);
            self.committed_at = Some(at);
        }
        if !self.stalled.is_empty() && result.is_ok() {
            result = Err(format!(
                "{} batch(es) wait for a failing sink",
                self.stalled.len()
            ));
        }
        result
    }
}

impl Actor for Emitter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.flush_every, |act, _| {
            let _ = act.flush();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.flush();
    }
}

impl Handler<EmitBatch> for Emitter {
    type Result = ();

    fn handle(&mut self, mut b: EmitBatch, _: &mut Self::Context) {
        if !self.stalled.is_empty() {
            self.stalled.push_back(b);
            self.retry_stalled();
            return;
        }
        if !self.write(&mut b) {
            self.stalled.push_back(b);
        }
    }
}

/// Cluster: the node lost its lease. Drop what waits for a sink and cut the sinks back to
/// the last commit: every record after it is still pending in the journal and goes to the
/// partition's new owner, so nothing written under the lost epochs remains.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reset;

impl Handler<Reset> for Emitter {
    type Result = Result<(), String>;

    fn handle(&mut self, _: Reset, _: &mut Self::Context) -> Self::Result {
        for b in self.stalled.drain(..) {
            let n = b.output_records + b.dead_records;
            if let Some(stats) = self.shared.partitions.get(b.partition as usize) {
                stats.hand_off(n);
            }
        }
        self.uncommitted.clear();
        if let Some((output, dead_letter)) = self.committed_at {
            self.output.truncate(output).map_err(|e| e.to_string())?;
            self.dead.truncate(dead_letter).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Cut the sinks back to their committed lengths (restore, before anything is emitted).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Truncate {
    pub output: u64,
    pub dead_letter: u64,
}

impl Handler<Truncate> for Emitter {
    type Result = Result<(), String>;

    fn handle(&mut self, t: Truncate, _: &mut Self::Context) -> Self::Result {
        self.output.truncate(t.output).map_err(|e| e.to_string())?;
        self.dead
            .truncate(t.dead_letter)
            .map_err(|e| e.to_string())?;
        self.committed_at = Some((self.output.position(), self.dead.position()));
        Ok(())
    }
}

impl Handler<Flush> for Emitter {
    type Result = Result<(), String>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        self.flush()
    }
}
