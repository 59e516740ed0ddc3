//! The emitter actor: hands the partitions' envelopes to the output and dead-letter sinks,
//! counts a record emitted only once its sink reported it delivered, and commits delivered
//! journaled records as terminal (with the file sinks' durable lengths) at least every
//! `checkpoint.interval_ms`.
//!
//! Where a record goes on each path (README "No sink drops a record"):
//! - a sink that cannot take a batch now (busy, I/O error) keeps nothing: the emitter keeps
//!   the batch, in order, and offers it again; the records stay pending;
//! - before an at-least-once sink (CQL, webhook, stdout) sees a journaled envelope, the
//!   envelope itself is journaled (`Decided`) and made durable, so after a crash the record
//!   is sent again as exactly that envelope — its outcome never changes;
//! - envelopes the output's destination refuses for good go to the dead letter with the
//!   reason; envelopes the dead letter's destination refuses stay pending and are offered
//!   again every second, with `/readyz` naming the sink.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::outcome::OutcomeKind;
use super::ownership::EmitCheck;
use super::shared::Shared;
use crate::durability::codec::Entry;
use crate::durability::journal::{JournalError, JournalHandle};
use crate::envelope::Envelopes;
use crate::record::Decided;
use crate::sink::{Attach, Completion, Guarantee, Refusal, Role, Sink, SinkError};

/// Rendered envelopes of one partition, in release order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitBatch {
    pub partition: u32,
    /// Ownership epoch the records were rendered under; a batch whose epoch is no longer
    /// this node's for the partition is refused (cluster fencing).
    pub epoch: u64,
    /// Envelopes for the output sink.
    pub output: Envelopes,
    /// Envelopes for the dead-letter sink.
    pub dead: Envelopes,
    /// Records answered to a `/v1/enrich` caller (no sink involved).
    pub replied: u64,
    /// Outcomes of the replied records, indexed by `OutcomeKind::index`.
    pub replied_outcomes: [u64; 4],
}

impl EmitBatch {
    /// An empty batch for `partition` under `epoch`.
    pub fn new(partition: u32, epoch: u64) -> Self {
        EmitBatch {
            partition,
            epoch,
            output: Envelopes::new(),
            dead: Envelopes::new(),
            replied: 0,
            replied_outcomes: [0; 4],
        }
    }

    fn records(&self) -> u64 {
        (self.output.len() + self.dead.len()) as u64
    }
}

/// Why the emitter did not flush, commit or cut its sinks back.
#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    /// The etcd lease is not live and something was written since the last commit:
    /// nothing is committed until the lease is renewed (or lost, then it is cut away).
    #[error("fenced: the etcd lease is not live")]
    Fenced,
    /// A sink could not be cut back to its committed length.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Flush both sinks now (and, with a journal, make them durable and commit what they
/// hold); answers once done (or with the error).
#[derive(Message)]
#[rtype(result = "Result<(), EmitterError>")]
pub struct Flush;

/// A sink completed something or has room again.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

/// Envelopes waiting for their sink. `guard`: the (partition, epoch) they were rendered
/// under, checked again right before the sink sees them (ownership may have moved while
/// they waited); `None` for envelopes a sink already had (re-routed to the dead letter).
struct Queued {
    guard: Option<(u32, u64)>,
    batch: Envelopes,
}

/// A batch whose envelopes are being journaled before an at-least-once sink sees them.
struct Deciding {
    id: u64,
    route: usize,
    guard: Option<(u32, u64)>,
    batch: Envelopes,
    /// Set when the journal answered.
    result: Option<Result<(), JournalError>>,
}

const OUTPUT: usize = 0;
const DEAD: usize = 1;
const ROLES: [Role; 2] = [Role::Output, Role::DeadLetter];

/// (device, inode) of the output and dead-letter files (`None`: not a file sink).
type FileIds = (Option<(u64, u64)>, Option<(u64, u64)>);
/// How often envelopes the dead letter's destination refused are offered again.
const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// See module docs.
pub struct Emitter {
    /// Indexed by `OUTPUT` / `DEAD`.
    sinks: [Box<dyn Sink>; 2],
    shared: Arc<Shared>,
    flush_every: Duration,
    journal: Option<JournalHandle>,
    /// Batches held while this node is fenced (cluster), in arrival order.
    fenced: VecDeque<EmitBatch>,
    /// Per sink: envelopes waiting to be taken, in order.
    waiting: [VecDeque<Queued>; 2],
    /// Envelopes being journaled before an at-least-once sink sees them, in order.
    deciding: VecDeque<Deciding>,
    next_decision: u64,
    /// Envelopes the dead letter's destination refused, and since when.
    refused: Option<(Envelopes, String, Instant)>,
    /// Why the dead letter last refused, until it delivers again (keeps `/readyz` at 503
    /// while refused envelopes are offered again).
    refusing: Option<String>,
    /// Journaled records delivered since the last commit.
    uncommitted: Vec<(u32, u64)>,
    /// Sink positions of the last commit (nothing to commit while unchanged).
    committed_at: Option<(u64, u64)>,
    /// The file identities last journaled (`SinkFiles`).
    files_journaled: Option<FileIds>,
    /// Per sink: its file was moved away; reopen it once what the old file holds is
    /// committed.
    reopen_due: [bool; 2],
    /// Commits may be written: the restore has cut the sinks back (`Truncate`) or someone
    /// asked for a flush (a fresh directory). Before that, a periodic commit would record
    /// the length of a file still holding the crashed run's uncommitted tail.
    may_commit: bool,
    /// Per partition: envelopes still at an at-least-once sink when the node lost its
    /// lease; their completions are not counted again.
    orphans: Vec<u64>,
    /// Per partition: envelopes handed to an at-least-once sink and not yet reported.
    at_sinks: Vec<u64>,
    wake_pending: Arc<AtomicBool>,
    /// The health text last published (to log changes once).
    health: Vec<String>,
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
        let partitions = shared.partitions.len();
        Emitter {
            sinks: [output, dead],
            shared,
            flush_every,
            journal,
            fenced: VecDeque::new(),
            waiting: [VecDeque::new(), VecDeque::new()],
            deciding: VecDeque::new(),
            next_decision: 0,
            refused: None,
            refusing: None,
            uncommitted: Vec::new(),
            committed_at: None,
            files_journaled: None,
            reopen_due: [false; 2],
            may_commit: false,
            orphans: vec![0; partitions],
            at_sinks: vec![0; partitions],
            wake_pending: Arc::new(AtomicBool::new(false)),
            health: Vec::new(),
        }
    }

    fn files(&mut self) -> FileIds {
        let [o, d] = &mut self.sinks;
        (
            o.rewind().and_then(|r| r.identity()),
            d.rewind().and_then(|r| r.identity()),
        )
    }

    /// Sink `route`'s file was moved away (rotation): commit what the old file holds, then
    /// open the path again (`create`: even when nothing is there — SIGHUP).
    fn reopen(&mut self, route: usize, create: bool, ctx: &mut Context<Self>) {
        if let Err(e) = self.flush(ctx) {
            tracing::warn!(error = %e, "cannot commit before reopening a sink; will retry");
            return;
        }
        let Some(r) = self.sinks[route].rewind() else {
            return;
        };
        match r.reopen(create) {
            Ok(reopened) => {
                self.reopen_due[route] = false;
                if reopened {
                    // Commit the new file's identity and length before anything is written
                    // to it.
                    let _ = self.flush(ctx);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the sink's file; records stay pending");
            }
        }
        self.pump();
    }

    fn positions(&mut self) -> (u64, u64) {
        let [o, d] = &mut self.sinks;
        (
            o.rewind().map_or(0, |r| r.position()),
            d.rewind().map_or(0, |r| r.position()),
        )
    }

    /// Take a batch from a partition: check its epoch, count its replies, and queue its
    /// envelopes for their sinks. Hands the batch back when it must wait (fenced).
    fn accept(&mut self, mut b: EmitBatch, ctx: &mut Context<Self>) -> Option<EmitBatch> {
        let records = b.records();
        let check = if records > 0 {
            self.shared.ownership.emit_check(b.partition, b.epoch)
        } else {
            EmitCheck::Yes
        };
        if check == EmitCheck::Wait {
            // Fenced (lease not renewed): hold the batch; it is written once the lease is
            // renewed, or dropped if the lease turns out lost.
            return Some(b);
        }
        if check == EmitCheck::Stale {
            // This node no longer owns the partition at this epoch: the records stay
            // pending in the journal and go to the owner.
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
            b.output = Envelopes::new();
            b.dead = Envelopes::new();
        }
        if b.replied > 0 {
            let m = &self.shared.metrics;
            for kind in OutcomeKind::ALL {
                let n = b.replied_outcomes[kind.index()];
                if n > 0 {
                    m.records_emitted
                        .with_label_values(&[kind.as_str()])
                        .inc_by(n);
                }
            }
            if let Some(stats) = self.shared.partitions.get(b.partition as usize) {
                stats.delivered(b.replied);
            }
        }
        let guard = Some((b.partition, b.epoch));
        for (route, batch) in [(OUTPUT, b.output), (DEAD, b.dead)] {
            self.route(route, guard, batch, ctx);
        }
        None
    }

    /// Queue envelopes for sink `route`, journaling them first when it is at least once.
    fn route(
        &mut self,
        route: usize,
        guard: Option<(u32, u64)>,
        batch: Envelopes,
        ctx: &mut Context<Self>,
    ) {
        if batch.is_empty() {
            return;
        }
        let decide = self.sinks[route].guarantee() == Guarantee::AtLeastOnce
            && self.journal.is_some()
            && batch.items().iter().any(|i| i.journaled);
        if !decide {
            self.waiting[route].push_back(Queued { guard, batch });
            return;
        }
        let id = self.next_decision;
        self.next_decision += 1;
        self.deciding.push_back(Deciding {
            id,
            route,
            guard,
            batch,
            result: None,
        });
        self.journal_decisions(id, ctx);
    }

    /// Journal the envelopes of decision `id` and note when they are durable.
    fn journal_decisions(&mut self, id: u64, ctx: &mut Context<Self>) {
        let (Some(journal), Some(d)) =
            (&self.journal, self.deciding.iter_mut().find(|d| d.id == id))
        else {
            return;
        };
        d.result = None;
        let entries: Vec<Entry> = d
            .batch
            .items()
            .iter()
            .enumerate()
            .filter(|(_, it)| it.journaled)
            .map(|(i, it)| Entry::Decided {
                partition: it.partition,
                seq: it.seq,
                decided: Decided {
                    dead_letter: d.route == DEAD,
                    outcome: it.outcome,
                    envelope: String::from_utf8_lossy(d.batch.line(i)).into(),
                },
            })
            .collect();
        let rx = journal.write_durable(entries);
        ctx.spawn(
            async move {
                rx.await
                    .unwrap_or(Err(JournalError::Stopped))
            }
            .into_actor(self)
            .map(move |result, act, _| {
                if let Some(d) = act.deciding.iter_mut().find(|d| d.id == id) {
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "cannot journal envelopes before sending them; will retry");
                    }
                    d.result = Some(result);
                }
                act.pump();
            }),
        );
    }

    /// Move what can move: durable decisions to their sink's queue, queued envelopes into
    /// the sinks, completions into counts and commits.
    fn pump(&mut self) {
        while let Some(Some(Ok(()))) = self.deciding.front().map(|d| d.result.clone()) {
            if let Some(d) = self.deciding.pop_front() {
                self.waiting[d.route].push_back(Queued {
                    guard: d.guard,
                    batch: d.batch,
                });
            }
        }
        for route in [OUTPUT, DEAD] {
            while let Some(Queued { guard, batch }) = self.waiting[route].pop_front() {
                if let Some((partition, epoch)) = guard {
                    match self.shared.ownership.emit_check(partition, epoch) {
                        EmitCheck::Yes => {}
                        EmitCheck::Wait => {
                            self.waiting[route].push_front(Queued { guard, batch });
                            break;
                        }
                        EmitCheck::Stale => {
                            // Moved while it waited: pending in the journal, the owner's now.
                            tracing::warn!(
                                partition,
                                epoch,
                                records = batch.len(),
                                "refusing to write under a stale epoch"
                            );
                            self.shared
                                .metrics
                                .fencing_refusals
                                .inc_by(batch.len() as u64);
                            if let Some(stats) = self.shared.partitions.get(partition as usize) {
                                stats.hand_off(batch.len() as u64);
                            }
                            continue;
                        }
                    }
                }
                let n = batch.len();
                let counted: Vec<u32> = if self.sinks[route].guarantee() == Guarantee::AtLeastOnce {
                    batch.items().iter().map(|i| i.partition).collect()
                } else {
                    Vec::new()
                };
                match self.sinks[route].submit(batch) {
                    Ok(()) => {
                        for p in counted {
                            if let Some(c) = self.at_sinks.get_mut(p as usize) {
                                *c += 1;
                            }
                        }
                    }
                    Err(Refusal::Busy(batch)) => {
                        self.waiting[route].push_front(Queued { guard, batch });
                        break;
                    }
                    Err(Refusal::Failed(batch, e)) => {
                        if self.sinks[route].rewind().is_some_and(|r| r.moved()) {
                            self.reopen_due[route] = true;
                        }
                        if self
                            .health
                            .iter()
                            .any(|h| h.starts_with(ROLES[route].as_str()))
                        {
                            tracing::debug!(error = %e, envelopes = n, "sink write failed again; will retry");
                        } else {
                            tracing::error!(error = %e, envelopes = n, "sink write failed; records stay pending and are retried");
                        }
                        self.shared.metrics.sink_errors.inc();
                        self.waiting[route].push_front(Queued { guard, batch });
                        break;
                    }
                }
            }
        }
        let mut done = Vec::new();
        for route in [OUTPUT, DEAD] {
            self.sinks[route].completed(&mut done);
            for c in done.drain(..) {
                self.complete(route, c);
            }
        }
        self.publish_health();
    }

    /// Count what a sink delivered; send what the output refused to the dead letter; keep
    /// what the dead letter refused.
    fn complete(&mut self, route: usize, c: Completion) {
        let at_least_once = self.sinks[route].guarantee() == Guarantee::AtLeastOnce;
        match c {
            Completion::Delivered(batch) => {
                if route == DEAD && self.refused.is_none() {
                    self.refusing = None;
                }
                let m = &self.shared.metrics;
                let mut counts = [0u64; 4];
                let mut per_partition: Vec<(u32, u64)> = Vec::new();
                for it in batch.items() {
                    let p = it.partition as usize;
                    if at_least_once && let Some(c) = self.at_sinks.get_mut(p) {
                        *c = c.saturating_sub(1);
                    }
                    if let Some(o) = self.orphans.get_mut(p)
                        && *o > 0
                    {
                        // Given away after a lost lease; its new owner emits it.
                        *o -= 1;
                        continue;
                    }
                    counts[it.outcome.index()] += 1;
                    match per_partition.last_mut() {
                        Some((q, n)) if *q == it.partition => *n += 1,
                        _ => per_partition.push((it.partition, 1)),
                    }
                    if it.journaled && self.journal.is_some() {
                        self.uncommitted.push((it.partition, it.seq));
                    }
                }
                for kind in OutcomeKind::ALL {
                    let n = counts[kind.index()];
                    if n > 0 {
                        m.records_emitted
                            .with_label_values(&[kind.as_str()])
                            .inc_by(n);
                    }
                }
                let total: u64 = counts.iter().sum();
                if route == DEAD {
                    m.dead_letters.inc_by(total);
                }
                for (p, n) in per_partition {
                    if let Some(stats) = self.shared.partitions.get(p as usize) {
                        stats.delivered(n);
                    }
                }
            }
            Completion::Rejected(batch, reason) => {
                let m = &self.shared.metrics;
                let role = if route == OUTPUT {
                    Role::Output
                } else {
                    Role::DeadLetter
                };
                m.sink_rejected
                    .with_label_values(&[role.as_str()])
                    .inc_by(batch.len() as u64);
                m.sink_errors.inc();
                if at_least_once {
                    for it in batch.items() {
                        if let Some(c) = self.at_sinks.get_mut(it.partition as usize) {
                            *c = c.saturating_sub(1);
                        }
                    }
                }
                if route == OUTPUT {
                    tracing::warn!(envelopes = batch.len(), %reason,
                        "the output refused envelopes; they go to the dead letter");
                    let mut dead = Envelopes::new();
                    for i in 0..batch.len() {
                        let it = &batch.items()[i];
                        let line = batch.with_error(i, &reason);
                        dead.push_with(
                            it.id.clone(),
                            it.partition,
                            it.seq,
                            it.outcome,
                            it.journaled,
                            |buf| buf.extend_from_slice(&line),
                        );
                    }
                    self.waiting[DEAD].push_back(Queued {
                        guard: None,
                        batch: dead,
                    });
                } else {
                    tracing::error!(envelopes = batch.len(), %reason,
                        "the dead letter refused envelopes; they stay pending and are offered again");
                    self.refusing = Some(reason.clone());
                    match &mut self.refused {
                        Some((kept, _, _)) => kept.append(batch),
                        None => self.refused = Some((batch, reason, Instant::now())),
                    }
                }
            }
        }
    }

    /// Publish the sinks' health for `/readyz` and the metrics; log changes.
    fn publish_health(&mut self) {
        let mut problems = Vec::new();
        for (route, role) in [(OUTPUT, Role::Output), (DEAD, Role::DeadLetter)] {
            let problem = self.sinks[route].health();
            self.shared
                .metrics
                .sink_up
                .with_label_values(&[role.as_str()])
                .set(i64::from(problem.is_none()));
            if let Some(p) = problem {
                problems.push(format!("{}: {p}", role.as_str()));
            }
        }
        if let Some((batch, reason, _)) = &self.refused {
            problems.push(format!(
                "dead_letter: {} envelope(s) refused ({reason}); kept pending",
                batch.len()
            ));
        } else if let Some(reason) = &self.refusing {
            problems.push(format!(
                "dead_letter: refused envelopes ({reason}) are being offered again"
            ));
        }
        if problems != self.health {
            // Log when which sinks are unhealthy changes, not each new error text.
            let who = |p: &[String]| -> Vec<String> {
                p.iter()
                    .map(|l| l.split(':').next().unwrap_or("").to_string())
                    .collect()
            };
            if who(&problems) != who(&self.health) {
                if problems.is_empty() {
                    tracing::info!("sinks are healthy again");
                } else {
                    tracing::warn!(problems = ?problems, "sink unhealthy");
                }
            }
            *self.shared.sink_problems.lock() = problems.clone();
            self.health = problems;
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) -> Result<(), EmitterError> {
        // Fenced with something written since the last commit: commit nothing. If the
        // lease turns out lost, everything after the last commit is cut away (and handed
        // to the new owners); if it is renewed, this commit happens next tick. (With
        // nothing written — a fresh start before the first lease — committing is harmless.)
        let own = self.shared.ownership.clone();
        let at = self.positions();
        let written = self.committed_at != Some(at) || !self.uncommitted.is_empty();
        if !own.lease_live() && own.is_clustered() && written && self.committed_at.is_some() {
            return Err(EmitterError::Fenced);
        }
        self.release_fenced(ctx);
        let failed: Vec<u64> = self
            .deciding
            .iter()
            .filter(|d| matches!(d.result, Some(Err(_))))
            .map(|d| d.id)
            .collect();
        for id in failed {
            self.journal_decisions(id, ctx);
        }
        if let Some((_, _, since)) = &self.refused
            && since.elapsed() >= REFUSED_RETRY
            && let Some((batch, _, _)) = self.refused.take()
        {
            self.waiting[DEAD].push_back(Queued { guard: None, batch });
        }
        self.pump();
        let mut synced = true;
        let durable = self.journal.is_some();
        for route in [OUTPUT, DEAD] {
            if let Err(e) = self.sinks[route].flush(durable) {
                self.shared.metrics.sink_errors.inc();
                if self
                    .health
                    .iter()
                    .any(|h| h.starts_with(ROLES[route].as_str()))
                {
                    tracing::debug!(error = %e, "sink flush failed again");
                } else {
                    tracing::error!(error = %e, "sink flush failed; nothing is committed until it succeeds");
                }
                synced = false;
            }
        }
        // Commit only what the sinks now hold durably: a restore truncates each file back
        // to the committed position and re-emits everything not committed. A sink that
        // cannot be synced commits nothing (its records stay pending in the journal), but
        // that is no reason to fail a checkpoint: the sink's health says what is wrong.
        let at = self.positions();
        let files = self.files();
        if synced
            && self.may_commit
            && (self.committed_at != Some(at)
                || !self.uncommitted.is_empty()
                || self.files_journaled != Some(files))
            && let Some(j) = &self.journal
        {
            if self.files_journaled != Some(files) {
                j.write(vec![Entry::SinkFiles {
                    output: files.0,
                    dead_letter: files.1,
                }]);
                self.files_journaled = Some(files);
            }
            j.write(vec![Entry::Committed {
                marks: std::mem::take(&mut self.uncommitted),
                output: at.0,
                dead_letter: at.1,
            }]);
            self.committed_at = Some(at);
        }
        // Batches still waiting for a failing sink are no reason to fail either: their
        // records are pending in the journal (and in the snapshot a checkpoint takes next).
        Ok(())
    }

    /// Write batches held while fenced, in order, as far as the lease allows.
    fn release_fenced(&mut self, ctx: &mut Context<Self>) {
        while let Some(b) = self.fenced.pop_front() {
            if let Some(b) = self.accept(b, ctx) {
                self.fenced.push_front(b);
                return;
            }
        }
    }
}

impl Actor for Emitter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let addr = ctx.address();
        let pending = self.wake_pending.clone();
        let attach = Attach {
            waker: Arc::new(move || {
                if !pending.swap(true, Ordering::AcqRel) {
                    addr.do_send(Wake);
                }
            }),
            metrics: self.shared.metrics.clone(),
        };
        for sink in &mut self.sinks {
            sink.attach(attach.clone());
        }
        self.publish_health();
        ctx.run_interval(self.flush_every, |act, ctx| {
            let _ = act.flush(ctx);
        });
        // Busy sinks and a fenced node are retried on this tick too.
        ctx.run_interval(Duration::from_millis(20), |act, ctx| {
            act.release_fenced(ctx);
            act.pump();
            for route in [OUTPUT, DEAD] {
                if act.reopen_due[route] {
                    act.reopen(route, false, ctx);
                }
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let _ = self.flush(ctx);
    }
}

impl Handler<EmitBatch> for Emitter {
    type Result = ();

    fn handle(&mut self, b: EmitBatch, ctx: &mut Self::Context) {
        if !self.fenced.is_empty() {
            self.fenced.push_back(b);
            self.release_fenced(ctx);
        } else if let Some(b) = self.accept(b, ctx) {
            self.fenced.push_back(b);
        }
        self.pump();
    }
}

impl Handler<Wake> for Emitter {
    type Result = ();

    fn handle(&mut self, _: Wake, _: &mut Self::Context) {
        self.wake_pending.store(false, Ordering::Release);
        self.pump();
    }
}

/// Cluster: the node lost its lease. Drop what waits for a sink and cut the sinks back to
/// the last commit: every record after it is still pending in the journal and goes to the
/// partition's new owner, so nothing written under the lost epochs remains.
#[derive(Message)]
#[rtype(result = "Result<(), EmitterError>")]
pub struct Reset;

impl Handler<Reset> for Emitter {
    type Result = Result<(), EmitterError>;

    fn handle(&mut self, _: Reset, _: &mut Self::Context) -> Self::Result {
        let mut dropped = vec![0u64; self.shared.partitions.len()];
        let mut count = |batch: &Envelopes| {
            for it in batch.items() {
                if let Some(n) = dropped.get_mut(it.partition as usize) {
                    *n += 1;
                }
            }
        };
        for b in self.fenced.drain(..) {
            count(&b.output);
            count(&b.dead);
        }
        for w in &mut self.waiting {
            for q in w.drain(..) {
                count(&q.batch);
            }
        }
        for d in self.deciding.drain(..) {
            count(&d.batch);
        }
        if let Some((b, _, _)) = self.refused.take() {
            count(&b);
        }
        // What an at-least-once sink still holds cannot be called back: it may still be
        // delivered (at least once), but is no longer counted here.
        for (p, n) in self.at_sinks.iter_mut().enumerate() {
            let n = std::mem::take(n);
            self.orphans[p] += n;
            dropped[p] += n;
        }
        for (p, n) in dropped.into_iter().enumerate() {
            if n > 0
                && let Some(stats) = self.shared.partitions.get(p)
            {
                stats.hand_off(n);
            }
        }
        self.uncommitted.clear();
        if let Some((output, dead_letter)) = self.committed_at {
            let [o, d] = &mut self.sinks;
            if let Some(r) = o.rewind() {
                r.truncate(output)?;
            }
            if let Some(r) = d.rewind() {
                r.truncate(dead_letter)?;
            }
        }
        Ok(())
    }
}

/// Cut the sinks back to their committed lengths (restore, before anything is emitted).
#[derive(Message)]
#[rtype(result = "Result<(), EmitterError>")]
pub struct Truncate {
    pub output: u64,
    pub dead_letter: u64,
    /// The files those lengths are of (`None`: not recorded, older journals).
    pub output_file: Option<(u64, u64)>,
    pub dead_letter_file: Option<(u64, u64)>,
}

impl Handler<Truncate> for Emitter {
    type Result = Result<(), EmitterError>;

    fn handle(&mut self, t: Truncate, _: &mut Self::Context) -> Self::Result {
        for (route, len, file) in [
            (OUTPUT, t.output, t.output_file),
            (DEAD, t.dead_letter, t.dead_letter_file),
        ] {
            let sink = &mut self.sinks[route];
            let describe = sink.describe();
            let Some(r) = sink.rewind() else { continue };
            if file.is_some() && r.identity() != file {
                // Not the file the length is of (rotated or replaced while stopped): never
                // cut it. Envelopes written after the last commit may appear twice.
                tracing::warn!(sink = %describe,
                    "the file is not the one the journal committed (rotated or replaced since); left as it is");
                continue;
            }
            r.truncate(len)?;
        }
        self.committed_at = Some(self.positions());
        self.may_commit = true;
        Ok(())
    }
}

/// Reopen the file sinks (SIGHUP): commit what the open files hold, then open their paths
/// again, creating them if they are gone — how log rotation hands over a fresh file.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reopen;

impl Handler<Reopen> for Emitter {
    type Result = ();

    fn handle(&mut self, _: Reopen, ctx: &mut Self::Context) {
        for route in [OUTPUT, DEAD] {
            if self.sinks[route].rewind().is_some() {
                self.reopen(route, true, ctx);
            }
        }
    }
}

impl Handler<Flush> for Emitter {
    type Result = Result<(), EmitterError>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        // Asked for explicitly (after the restore, or on a fresh directory): commit.
        self.may_commit = true;
        self.flush(ctx)
    }
}
