//! The partition actor: owns one partition's backlog and in-flight queue, starts lookups,
//! applies the retry policy, and hands released records to the emitter (or to a waiting
//! `/v1/enrich` request) as batches of ready-made NDJSON lines.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use rand::Rng;

use super::emitter::{EmitBatch, Emitter};
use super::job::Job;
use super::outcome::{EnvelopeParts, Outcome, OutcomeRules, Route, StepsPart};
use super::pipeline::Pipeline;
use super::queue::{AdmitError, InFlightQueue, Released};
use super::retry::{AttemptKind, Next, RetryPolicy};
use super::shared::Shared;
use crate::durability::codec::Entry;
use crate::durability::journal::{JournalError, JournalHandle, unix_ms};
use crate::envelope::Envelopes;
use crate::envelope::OutcomeKind;
use crate::lookup::{LookupError, LookupRequest, LookupResult, Pending};
use crate::steps::{End, Status, Verdict};

/// Records routed to this partition, in seq order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<(u64, Job)>);

/// How one asynchronous attempt ended.
enum AttemptEnd {
    Done(LookupResult),
    TimedOut,
}

#[derive(Message)]
#[rtype(result = "()")]
struct AttemptDone {
    seq: u64,
    step: usize,
    attempt: u32,
    end: AttemptEnd,
    elapsed: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct RetryNow {
    seq: u64,
    step: usize,
}

/// One attempt of one step of one record: (seq, step, attempt number).
type AttemptId = (u64, usize, u32);

/// These attempts are journaled (durably): issue their lookups now.
#[derive(Message)]
#[rtype(result = "()")]
struct Issue(Vec<AttemptId>);

/// Cluster: from now on this partition writes under ownership `epoch` (sent by the
/// ingress before the first records of a new tenure).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetEpoch(pub u64);

/// Cluster: the partition leaves this node. Drop every record (backlog and in flight)
/// without an outcome — they stay pending in the journal and are handed to the new owner
/// from there — and answer how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Evict;

/// Static configuration of a partition.
pub struct PartitionConfig {
    pub id: u32,
    pub capacity: usize,
    pub mode: crate::settings::Mode,
    pub timeout: Duration,
    pub policy: RetryPolicy,
    pub rules: Arc<OutcomeRules>,
    /// Where first attempts and retries are journaled (their deadline and count survive
    /// a restart).
    pub journal: Option<JournalHandle>,
}

/// Counters of one step, kept per partition and flushed now and then.
struct StepMetrics {
    found: LocalIntCounter,
    miss: LocalIntCounter,
    error: LocalIntCounter,
    timeout: LocalIntCounter,
    retries: LocalIntCounter,
    lookup_duration: LocalHistogram,
}

impl StepMetrics {
    fn new(shared: &Shared, step: &str) -> Self {
        let m = &shared.metrics;
        let attempts = |r: &str| m.lookup_attempts.with_label_values(&[step, r]).local();
        StepMetrics {
            found: attempts("found"),
            miss: attempts("miss"),
            error: attempts("error"),
            timeout: attempts("timeout"),
            retries: m.lookup_retries.with_label_values(&[step]).local(),
            lookup_duration: m.lookup_duration.with_label_values(&[step]).local(),
        }
    }

    fn flush(&self) {
        for c in [
            &self.found,
            &self.miss,
            &self.error,
            &self.timeout,
            &self.retries,
        ] {
            c.flush();
        }
        self.lookup_duration.flush();
    }
}

/// The partition's own counters: per step, and per record.
struct LocalMetrics {
    steps: Vec<StepMetrics>,
    deadlines: LocalIntCounter,
    record_latency: LocalHistogram,
}

impl std::ops::Index<usize> for LocalMetrics {
    type Output = StepMetrics;
    fn index(&self, step: usize) -> &StepMetrics {
        &self.steps[step]
    }
}

impl LocalMetrics {
    fn new(shared: &Shared, pipeline: &Pipeline) -> Self {
        let m = &shared.metrics;
        let g = pipeline.graph();
        LocalMetrics {
            steps: (0..g.len())
                .map(|i| StepMetrics::new(shared, g.name(i)))
                .collect(),
            deadlines: m.record_timeouts.local(),
            record_latency: m.record_latency.local(),
        }
    }

    fn flush(&self) {
        for s in &self.steps {
            s.flush();
        }
        self.deadlines.flush();
        self.record_latency.flush();
    }
}

/// One partition (see module docs).
pub struct Partition {
    cfg: PartitionConfig,
    queue: InFlightQueue<Job, Outcome>,
    backlog: VecDeque<(u64, Job)>,
    pipeline: Arc<Pipeline>,
    emitter: Addr<Emitter>,
    shared: Arc<Shared>,
    released: Vec<Released<Job, Outcome>>,
    local: LocalMetrics,
    me: Option<Addr<Partition>>,
    /// Journal entries gathered during one wake-up, sent as one write.
    journal_buf: Vec<Entry>,
    /// Ownership epoch written into envelopes and emit batches (0 standalone).
    epoch: u64,
    /// Restored records whose envelope was fixed before the crash: sent again as they are,
    /// without a lookup, with the next batch.
    decided: Vec<(u64, Job)>,
    /// Attempts (seq, attempt number) begun during this wake-up whose journal entries must
    /// be durable before their lookups are issued: an attempt counts once it may have been
    /// made, so `retry.max_attempts` holds across crashes.
    to_issue: Vec<AttemptId>,
}

impl Partition {
    /// A partition that sends what it releases to `emitter`.
    pub fn new(
        cfg: PartitionConfig,
        pipeline: Arc<Pipeline>,
        emitter: Addr<Emitter>,
        shared: Arc<Shared>,
    ) -> Self {
        Partition {
            queue: InFlightQueue::new(cfg.mode, cfg.capacity),
            backlog: VecDeque::new(),
            local: LocalMetrics::new(&shared, &pipeline),
            cfg,
            pipeline,
            emitter,
            shared,
            released: Vec::new(),
            me: None,
            journal_buf: Vec::new(),
            epoch: 0,
            decided: Vec::new(),
            to_issue: Vec::new(),
        }
    }

    fn tick_interval(&self) -> Duration {
        (self.cfg.timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(10))
    }

    /// Move records from the backlog into the queue while there is room, starting their
    /// first attempt; the deadline starts with it.
    fn pump(&mut self) {
        let mut moved = 0usize;
        let now = Instant::now();
        let mut now_ms = 0;
        loop {
            if self
                .backlog
                .front()
                .is_some_and(|(_, job)| job.rec.decided.is_some())
            {
                // Its outcome is fixed: no lookup, no capacity slot.
                if let Some(d) = self.backlog.pop_front() {
                    self.decided.push(d);
                    moved += 1;
                }
                continue;
            }
            if !self.queue.has_room() {
                break;
            }
            let Some((seq, mut job)) = self.backlog.pop_front() else {
                break;
            };
            moved += 1;
            let deadline = if job.rec.first_attempt_ms > 0 {
                // Restored: the deadline still runs from the first attempt before the crash.
                if now_ms == 0 {
                    now_ms = unix_ms();
                }
                let spent = Duration::from_millis(now_ms.saturating_sub(job.rec.first_attempt_ms));
                now + self.cfg.timeout.saturating_sub(spent)
            } else {
                if job.journaled && self.cfg.journal.is_some() {
                    if now_ms == 0 {
                        now_ms = unix_ms();
                    }
                    job.rec.first_attempt_ms = now_ms;
                    self.journal_buf.push(Entry::Started {
                        partition: self.cfg.id,
                        seq,
                        first_attempt_ms: now_ms,
                    });
                }
                now + self.cfg.timeout
            };
            let key = job.rec.canonical.clone();
            job.progress = self.pipeline.progress_of(&job.rec);
            match self.queue.admit(seq, key, deadline, job) {
                Ok(()) => self.advance(seq),
                Err(AdmitError::Full(job)) => {
                    moved -= 1;
                    self.backlog.push_front((seq, job));
                    break;
                }
                Err(AdmitError::SeqNotIncreasing(job)) => {
                    // Cannot happen (the ingress assigns seqs in order); if it ever did, the
                    // record still gets its one outcome instead of vanishing.
                    tracing::error!(
                        partition = self.cfg.id,
                        seq,
                        "seq out of order at admission"
                    );
                    self.emit_now(
                        seq,
                        job,
                        Outcome::failed("internal error: sequence out of order".into()),
                    );
                }
            }
        }
        if moved > 0 {
            self.shared.partitions[self.cfg.id as usize]
                .backlog
                .fetch_sub(moved, Ordering::AcqRel);
        }
    }

    /// Start what is due for record `seq` (steps whose sources are done; skip those whose
    /// binds read `null`), or complete it once it has its outcome.
    fn advance(&mut self, seq: u64) {
        loop {
            let Some(job) = self.queue.waiting_item_mut(seq) else {
                return;
            };
            let graph = self.pipeline.graph();
            if let Some(verdict) = job.progress.verdict(graph) {
                let outcome = self.outcome_of(seq, verdict);
                // Cannot be refused: the record waits (checked above).
                let _ = self.queue.complete(seq, outcome);
                return;
            }
            let due = job.progress.due(graph);
            let mut skipped = false;
            for &step in &due {
                let Some(job) = self.queue.waiting_item_mut(seq) else {
                    return;
                };
                if let Some(view) = self.pipeline.view_for(step, &job.rec.text, &job.progress)
                    && self.pipeline.reads_null(step, &view)
                {
                    let _ = job
                        .progress
                        .finish(self.pipeline.graph(), step, End::Skipped);
                    self.journal_step_done(seq, step);
                    skipped = true;
                    continue;
                }
                self.start_attempt(seq, step);
            }
            if !skipped {
                // Something started (or ended the record: handled on the next report).
                if let Some(job) = self.queue.waiting_item_mut(seq)
                    && let Some(verdict) = job.progress.verdict(self.pipeline.graph())
                {
                    let outcome = self.outcome_of(seq, verdict);
                    let _ = self.queue.complete(seq, outcome);
                }
                return;
            }
        }
    }

    /// The terminal outcome a verdict means.
    fn outcome_of(&mut self, seq: u64, verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::Ok => {
                let row = self.queue.waiting_item_mut(seq).and_then(|j| {
                    match &j.progress.slot(0).status {
                        Status::Found(r) if !self.pipeline.steps_form() => Some(r.clone()),
                        _ => None,
                    }
                });
                match row {
                    Some(row) => Outcome::ok(row),
                    None => Outcome {
                        kind: OutcomeKind::Ok,
                        enrichment: None,
                        error: None,
                    },
                }
            }
            Verdict::Miss => Outcome::miss(),
            Verdict::MissDeadLetter(step) => Outcome {
                kind: OutcomeKind::Miss,
                enrichment: None,
                error: Some(format!("{}lookup found no row", self.pipeline.label(step))),
            },
            Verdict::Failed(step, m) => {
                Outcome::failed(format!("{}{m}", self.pipeline.label(step)))
            }
            Verdict::TimedOut(step, m) => {
                Outcome::timeout(format!("{}{m}", self.pipeline.label(step)))
            }
        }
    }

    /// Begin the next attempt of `step` of `seq`: journal it (it counts once it may have
    /// been made, so `retry.max_attempts` holds across crashes), then issue it.
    fn start_attempt(&mut self, seq: u64, step: usize) {
        let max = self.cfg.policy.max_attempts();
        let steps_form = self.pipeline.steps_form();
        let Some(job) = self.queue.waiting_item_mut(seq) else {
            return;
        };
        let graph = self.pipeline.graph();
        if job.progress.slot(step).attempts >= max {
            // Restored with every attempt already begun before the restart (their answers
            // were lost with it): the limit holds, the step ends here.
            let _ = job.progress.finish(
                graph,
                step,
                End::Failed(format!(
                    "retry.max_attempts ({max}) reached: the answer of the last attempt was lost in a restart"
                )),
            );
            return;
        }
        let Ok(attempt) = job.progress.begin(graph, step) else {
            return;
        };
        if !steps_form {
            job.rec.attempts = attempt;
        }
        if job.journaled && self.cfg.journal.is_some() {
            if steps_form {
                self.journal_buf.push(Entry::StepAttempted {
                    partition: self.cfg.id,
                    seq,
                    step: step as u16,
                    attempts: attempt,
                });
            } else if attempt > 1 {
                // The first attempt is recorded by `Started` (already in the buffer).
                self.journal_buf.push(Entry::Attempted {
                    partition: self.cfg.id,
                    seq,
                    attempts: attempt,
                });
            }
            self.to_issue.push((seq, step, attempt));
            return;
        }
        self.issue(seq, step, attempt);
    }

    /// Journal that `step` of `seq` finished with a result the record goes on with, so a
    /// restore does not look it up again (pipelines only).
    fn journal_step_done(&mut self, seq: u64, step: usize) {
        if !self.pipeline.steps_form() || self.cfg.journal.is_none() {
            return;
        }
        let Some(job) = self.queue.waiting_item_mut(seq) else {
            return;
        };
        if !job.journaled {
            return;
        }
        if let Some(done) = job.progress.mark(step).done {
            self.journal_buf.push(Entry::StepDone {
                partition: self.cfg.id,
                seq,
                step: step as u16,
                done,
            });
        }
    }

    /// Start the lookup of attempt `attempt` of `step` of `seq` (if the record still waits
    /// for it).
    fn issue(&mut self, seq: u64, step: usize, attempt: u32) {
        let Some(job) = self.queue.waiting_item_mut(seq) else {
            return;
        };
        let slot = job.progress.slot(step);
        if slot.attempts != attempt || slot.status != Status::Running {
            return;
        }
        if job.reply.as_ref().is_some_and(|r| r.is_abandoned()) {
            // The `/v1/enrich` caller went away: free the slot instead of looking it up.
            let outcome = Outcome::failed("the /v1/enrich caller went away".into());
            let _ = self.queue.complete(seq, outcome);
            return;
        }
        let view = self.pipeline.view_for(step, &job.rec.text, &job.progress);
        let pending = self.pipeline.lookup(step).start(&LookupRequest {
            key: &job.rec.canonical,
            record: view.as_deref().unwrap_or(&job.rec.text),
            attempt,
        });
        match pending {
            Pending::Ready(result) => {
                self.on_attempt(seq, step, attempt, AttemptEnd::Done(result), Duration::ZERO)
            }
            Pending::Later(fut) => {
                let Some(me) = self.me.clone() else { return };
                let limit = self.pipeline.attempt_timeout(step);
                actix_rt::spawn(async move {
                    let started = Instant::now();
                    let end = match tokio::time::timeout(limit, fut).await {
                        Ok(result) => AttemptEnd::Done(result),
                        Err(_) => AttemptEnd::TimedOut,
                    };
                    me.do_send(AttemptDone {
                        seq,
                        step,
                        attempt,
                        end,
                        elapsed: started.elapsed(),
                    });
                });
            }
        }
    }

    fn on_attempt(
        &mut self,
        seq: u64,
        step: usize,
        attempt: u32,
        end: AttemptEnd,
        elapsed: Duration,
    ) {
        // A backend that bounds attempts itself reports a timeout as an error of its own.
        let end = match end {
            AttemptEnd::Done(Err(LookupError::Timeout(_))) => AttemptEnd::TimedOut,
            other => other,
        };
        let local = &self.local[step];
        local.lookup_duration.observe(elapsed.as_secs_f64());
        let kind = match &end {
            AttemptEnd::Done(Ok(Some(_))) => AttemptKind::Found,
            AttemptEnd::Done(Ok(None)) => AttemptKind::Miss,
            AttemptEnd::Done(Err(e)) => AttemptKind::Error {
                retryable: e.is_retryable(),
            },
            AttemptEnd::TimedOut => AttemptKind::AttemptTimeout,
        };
        match kind {
            AttemptKind::Found => local.found.inc(),
            AttemptKind::Miss => local.miss.inc(),
            AttemptKind::Error { .. } => local.error.inc(),
            AttemptKind::AttemptTimeout => local.timeout.inc(),
        }
        // A record that already has its outcome (deadline, another step) ignores late
        // answers, as does a step that moved on.
        let Some(deadline) = self.queue.deadline(seq) else {
            return;
        };
        let Some(job) = self.queue.waiting_item_mut(seq) else {
            return;
        };
        let slot = job.progress.slot(step);
        if slot.attempts != attempt || slot.status != Status::Running {
            return;
        }
        let unit = if matches!(kind, AttemptKind::Found) {
            0.0
        } else {
            rand::rng().random_range(-1.0..=1.0)
        };
        let graph = self.pipeline.graph();
        match self
            .cfg
            .policy
            .next(kind, attempt, Instant::now(), deadline, unit)
        {
            Next::Retry(wait) => {
                self.local[step].retries.inc();
                let wait = match &end {
                    AttemptEnd::Done(Err(e)) => {
                        e.retry_after().map_or(wait, |at_least| wait.max(at_least))
                    }
                    _ => wait,
                };
                let _ = job.progress.back_off(step);
                let Some(me) = self.me.clone() else { return };
                actix_rt::spawn(async move {
                    tokio::time::sleep(wait).await;
                    me.do_send(RetryNow { seq, step });
                });
            }
            Next::Finish => {
                let step_end = match end {
                    AttemptEnd::Done(Ok(Some(row))) => End::Found(row),
                    AttemptEnd::Done(Ok(None)) => End::Miss,
                    AttemptEnd::Done(Err(e)) => {
                        End::Failed(format!("{e} (after {attempt} attempt(s))"))
                    }
                    AttemptEnd::TimedOut => End::TimedOut(format!(
                        "lookup attempt {attempt} timed out after {} ms",
                        self.pipeline.attempt_timeout(step).as_millis()
                    )),
                };
                let _ = job.progress.finish(graph, step, step_end);
                self.journal_step_done(seq, step);
                self.advance(seq);
            }
        }
    }

    fn expire(&mut self) {
        let timeout_ms = self.cfg.timeout.as_millis();
        let pipeline = &self.pipeline;
        let n = self.queue.expire(Instant::now(), |_, job| {
            let running: Vec<&str> = job
                .progress
                .running()
                .map(|i| pipeline.graph().name(i))
                .collect();
            let names = if pipeline.steps_form() && !running.is_empty() {
                format!("step {}: ", running.join(", step "))
            } else {
                String::new()
            };
            Outcome::timeout(format!(
                "{names}deadline of {timeout_ms} ms passed after {} attempt(s)",
                job.progress.attempts().max(job.rec.attempts)
            ))
        });
        self.local.deadlines.inc_by(n as u64);
    }

    /// Emit a record that never entered the queue (defensive path only).
    fn emit_now(&mut self, seq: u64, job: Job, outcome: Outcome) {
        let mut batch = EmitBatch::new(self.cfg.id, self.epoch);
        self.render(seq, job, outcome, Instant::now(), &mut batch);
        self.send(batch);
    }

    /// Serialize everything released so far into one batch for the emitter.
    fn flush_released(&mut self) {
        self.queue.drain_released(&mut self.released);
        if self.released.is_empty() && self.decided.is_empty() {
            return;
        }
        // `held` is released by the emitter once the sink took the records, so records
        // waiting for a slow sink still count against the partition's bound (429s, not
        // memory growth).
        let mut batch = EmitBatch::new(self.cfg.id, self.epoch);
        // Size the output once: growing it record by record copies it over and over.
        let bytes: usize = self
            .released
            .iter()
            .map(|r| r.item().rec.text.len() + 160)
            .sum();
        batch.output = Envelopes::with_capacity(bytes);
        for (seq, job) in std::mem::take(&mut self.decided) {
            let Some(d) = job.rec.decided else { continue };
            let into = if d.dead_letter {
                &mut batch.dead
            } else {
                &mut batch.output
            };
            into.push_with(
                job.rec.id,
                self.cfg.id,
                seq,
                d.outcome,
                job.journaled,
                |buf| buf.extend_from_slice(d.envelope.as_bytes()),
            );
        }
        let released = std::mem::take(&mut self.released);
        let now = Instant::now();
        for r in released {
            let (seq, job, outcome) = r.into_parts();
            self.render(seq, job, outcome, now, &mut batch);
        }
        self.send(batch);
    }

    fn render(
        &mut self,
        seq: u64,
        job: Job,
        outcome: Outcome,
        now: Instant,
        batch: &mut EmitBatch,
    ) {
        let rules = &self.cfg.rules;
        let (route, error) = rules.route(&outcome);
        let kind = outcome.kind;
        let latency = now.saturating_duration_since(job.accepted_at);
        self.local.record_latency.observe(latency.as_secs_f64());
        let parts = EnvelopeParts {
            id: &job.rec.id,
            partition: self.cfg.id,
            seq,
            epoch: self.epoch,
            key: &job.rec.key,
            attempts: if self.pipeline.steps_form() {
                job.progress.attempts()
            } else {
                job.rec.attempts
            },
            latency_ms: (latency.as_micros() as f64) / 1000.0,
            record: &job.rec.text,
            splice: job.rec.splice,
            steps: self.pipeline.steps_form().then_some(StepsPart {
                pipeline: &self.pipeline,
                progress: &job.progress,
            }),
        };
        match job.reply {
            Some(slot) => {
                let mut one = Vec::with_capacity(job.rec.text.len() + 160);
                rules.write_envelope(&mut one, &parts, &outcome, error.as_deref());
                slot.deliver(one);
                batch.replied += 1;
                batch.replied_outcomes[kind.index()] += 1;
            }
            None => {
                let (into, error) = match route {
                    Route::Output => (&mut batch.output, None),
                    Route::DeadLetter => (&mut batch.dead, error),
                };
                into.push_with(
                    job.rec.id.clone(),
                    self.cfg.id,
                    seq,
                    kind,
                    job.journaled,
                    |buf| rules.write_envelope(buf, &parts, &outcome, error.as_deref()),
                );
            }
        }
    }

    fn send(&mut self, batch: EmitBatch) {
        if batch.output.len() + batch.dead.len() + batch.replied as usize > 0 {
            self.emitter.do_send(batch);
        }
    }

    /// After any change: release what can go, refill from the backlog, release again.
    fn settle(&mut self) {
        self.pump();
        self.flush_released();
        self.flush_journal();
        self.publish();
    }

    /// Send the journal entries gathered during this wake-up as one write.
    fn flush_journal(&mut self) {
        let Some(j) = &self.cfg.journal else {
            return;
        };
        if self.to_issue.is_empty() {
            if !self.journal_buf.is_empty() {
                j.write(std::mem::take(&mut self.journal_buf));
            }
            return;
        }
        // Attempts begun: issue them once their entries are durable (one group commit).
        let rx = j.write_durable(std::mem::take(&mut self.journal_buf));
        let issue = std::mem::take(&mut self.to_issue);
        let Some(me) = self.me.clone() else { return };
        actix_rt::spawn(async move {
            loop_until_durable(rx, &me, issue).await;
        });
    }

    fn publish(&self) {
        let stats = &self.shared.partitions[self.cfg.id as usize];
        stats.in_flight.store(self.queue.len(), Ordering::Release);
    }
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Enqueued records are bounded by the backlog counter the ingress checks, so the
        // mailbox itself needs no bound: everything arrives by `do_send`.
        self.me = Some(ctx.address());
        let label = self.cfg.id.to_string();
        let m = &self.shared.metrics;
        m.partition_in_flight.with_label_values(&[&label]).set(0);
        m.partition_backlog.with_label_values(&[&label]).set(0);
        let every = self.tick_interval();
        ctx.run_interval(every, |act, _| {
            act.expire();
            act.settle();
        });
        ctx.run_interval(Duration::from_millis(250), |act, _| {
            act.local.flush();
            let label = act.cfg.id.to_string();
            let m = &act.shared.metrics;
            m.partition_in_flight
                .with_label_values(&[&label])
                .set(act.queue.len() as i64);
            m.partition_backlog
                .with_label_values(&[&label])
                .set(act.backlog.len() as i64);
        });
    }
}

impl Handler<Enqueue> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) {
        self.backlog.extend(msg.0);
        self.settle();
    }
}

impl Handler<SetEpoch> for Partition {
    type Result = ();

    fn handle(&mut self, msg: SetEpoch, _: &mut Self::Context) {
        self.epoch = msg.0;
    }
}

impl Handler<Evict> for Partition {
    type Result = usize;

    fn handle(&mut self, _: Evict, _: &mut Self::Context) -> usize {
        // Whatever was released is rendered and sent first: it reached its outcome here.
        self.flush_released();
        self.flush_journal();
        let backlog = self.backlog.len();
        let mut evicted = self.queue.evict_all();
        evicted.extend(self.backlog.drain(..));
        // `/v1/enrich` records are not journaled: they end here (failed) so their caller
        // gets an answer; journaled records are handed over from the journal.
        let mut batch = EmitBatch::new(self.cfg.id, self.epoch);
        let mut dropped = 0;
        for (seq, job) in evicted {
            if job.reply.is_some() {
                let outcome = Outcome::failed("the partition moved to another node".into());
                self.render(seq, job, outcome, Instant::now(), &mut batch);
            } else {
                dropped += 1;
            }
        }
        self.send(batch);
        let stats = &self.shared.partitions[self.cfg.id as usize];
        stats.backlog.fetch_sub(backlog, Ordering::AcqRel);
        stats.hand_off(dropped as u64);
        self.publish();
        dropped
    }
}

impl Handler<AttemptDone> for Partition {
    type Result = ();

    fn handle(&mut self, msg: AttemptDone, _: &mut Self::Context) {
        self.on_attempt(msg.seq, msg.step, msg.attempt, msg.end, msg.elapsed);
        self.settle();
    }
}

/// Wait for the journal; on success issue the attempts, on failure journal them again a
/// little later (never issue an attempt the journal does not hold; the deadline still ends
/// the record).
async fn loop_until_durable(
    rx: tokio::sync::oneshot::Receiver<Result<(), JournalError>>,
    me: &Addr<Partition>,
    issue: Vec<AttemptId>,
) {
    match rx.await {
        Ok(Ok(())) => me.do_send(Issue(issue)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, attempts = issue.len(),
                "cannot journal attempts before issuing them; will retry");
            tokio::time::sleep(Duration::from_millis(100)).await;
            me.do_send(Rejournal(issue));
        }
        Err(_) => {}
    }
}

/// Journal these attempts again (the journal failed the first time).
#[derive(Message)]
#[rtype(result = "()")]
struct Rejournal(Vec<AttemptId>);

impl Handler<Rejournal> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Rejournal, _: &mut Self::Context) {
        for (seq, step, attempt) in msg.0 {
            let Some(job) = self.queue.waiting_item_mut(seq) else {
                continue;
            };
            let slot = job.progress.slot(step);
            if slot.attempts != attempt || slot.status != Status::Running {
                continue;
            }
            self.journal_buf.push(if self.pipeline.steps_form() {
                Entry::StepAttempted {
                    partition: self.cfg.id,
                    seq,
                    step: step as u16,
                    attempts: attempt,
                }
            } else {
                Entry::Attempted {
                    partition: self.cfg.id,
                    seq,
                    attempts: attempt,
                }
            });
            self.to_issue.push((seq, step, attempt));
        }
        self.settle();
    }
}

impl Handler<Issue> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Issue, _: &mut Self::Context) {
        for (seq, step, attempt) in msg.0 {
            self.issue(seq, step, attempt);
        }
        self.settle();
    }
}

impl Handler<RetryNow> for Partition {
    type Result = ();

    fn handle(&mut self, msg: RetryNow, _: &mut Self::Context) {
        self.start_attempt(msg.seq, msg.step);
        self.advance(msg.seq);
        self.settle();
    }
}
