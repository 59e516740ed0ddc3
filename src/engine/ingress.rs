//! The ingress actor: the one place that admits records. It routes every record of a batch
//! (local partition, remote owner, or nobody), checks the whole batch against every target's
//! bound (all or nothing, `engine/admission.rs`), assigns ids and per-partition seqs,
//! journals the batch in one write, and forwards one batch per partition. Being a single
//! actor makes admission atomic and keeps each partition's mailbox in seq order.
//!
//! Cluster mode adds three holding areas, all journaled so a crash loses none of them:
//! - the **outbox** of each partition owned elsewhere (`engine/outbox.rs`, the forwarding
//!   protocol as a pure state machine): records accepted here (or handed over) waiting for
//!   the owner, shipped in stage order by one [`Forwarder`] per remote node, at most one
//!   batch per partition in flight, removed once the owner made them durable (`Forwarded`),
//!   parked when the answer was lost;
//! - **dormant** records: pending here from before a restart or a lost lease, for
//!   partitions this node does not serve now; re-issued if the partition comes back
//!   (`Activate`), restaged into the outbox once another node owns it;
//! - the **import watermarks** (`outbox::Imports`): per (source, partition) the stage
//!   numbers already taken, so a batch resent after the source crashed is not taken twice.
//!
//! This actor is the glue: it reads the routing view and the counters, hands them to those
//! pure parts, journals what they answer and sends what they hand out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::admission::{self, Journal, Overloaded, Refusal, Target, request_cost};
use super::admit::Admitted;
use super::forwarder::{Forwarder, Ship, Shipped};
use super::job::Job;
use super::outbox::{Answer, Batch, Delivery, Imports, Next, Outbox, Sent, ShipResult, Source};
use super::ownership::Route;
use super::partition::{Enqueue, Evict, Partition, SetEpoch};
use super::reply::Collector;
use super::shared::Shared;
use crate::durability::backlog::Cost;
use crate::durability::codec::Entry;
use crate::durability::journal::{JournalError, JournalHandle, unix_ms};
use crate::durability::state::{LEASE, State};
use crate::record::Record;

/// A refused batch: why, and the records handed back untouched.
#[derive(Debug)]
pub struct Refused {
    pub reason: Refusal,
    pub records: Vec<Admitted>,
}

/// An admitted batch: the ids, and (with `checkpoint.ack = "durable"`) the receiver that
/// fires once the batch is in the journal and fsynced.
pub struct Admission {
    pub ids: Vec<Arc<str>>,
    pub durable: Option<oneshot::Receiver<Result<(), JournalError>>>,
    /// Cluster: one receiver per partition owned elsewhere, fired once its owner took the
    /// records forwarded for this batch.
    pub forwarded: Vec<oneshot::Receiver<()>>,
}

/// Admit a batch. With `reply`, each record's envelope goes to that collector (index =
/// position in `records`) instead of the output sink, and nothing is journaled.
#[derive(Message)]
#[rtype(result = "Result<Admission, Refused>")]
pub struct Submit {
    pub records: Vec<Admitted>,
    pub reply: Option<Arc<Collector>>,
}

/// Continue from restored state: seqs, and the pending records to re-issue (standalone) or
/// keep dormant until their partition is placed (cluster).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Restore {
    pub state: State,
    pub clustered: bool,
}

/// Cluster: this node now owns `partition` at `epoch`; seqs continue at `seq_floor` or
/// above. Re-issues the partition's dormant records, then takes its outbox, then opens
/// admission. Answers how many records were re-issued.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Activate {
    pub partition: u32,
    pub epoch: u64,
    pub seq_floor: u64,
}

/// Cluster: drop the partition's records from its actor (they stay pending in the journal);
/// answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct EvictPartition(pub u32);

/// Cluster: move these pending records (from the journal) into the outbox, to be shipped
/// to `handover_to` even before it owns the partition (graceful handover), or else to the
/// owner. Answers when the move is durable.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Result<(), JournalError>>")]
pub struct Restage {
    pub records: Vec<Arc<Record>>,
    pub handover_to: Option<String>,
}

/// Cluster: after a lost lease, every pending record of the journal is dormant.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dormant(pub Vec<Arc<Record>>);

/// Cluster: records another node sends here (see module docs).
#[derive(Message)]
#[rtype(result = "Result<ImportAck, ImportRefused>")]
pub struct Import {
    pub source: Source,
    pub partition: u32,
    /// The epoch the sender believes this node owns the partition at; 0 for a handover.
    pub epoch: u64,
    pub handover: bool,
    /// In stage order; `seq` is the sender's stage number.
    pub records: Vec<Record>,
}

/// An import taken: how many records were new, and when they are durable here.
pub struct ImportAck {
    pub accepted: usize,
    pub durable: oneshot::Receiver<Result<(), JournalError>>,
}

/// Why an import was not taken (nothing of it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportRefused {
    /// This node does not own the partition at the sender's epoch (409); it holds the
    /// sender's records of it numbered below `.1` already.
    #[error("{0}")]
    NotOwner(String, u64),
    /// The partition is full (429).
    #[error("{0}")]
    Overloaded(Overloaded),
}

/// How many records this node holds for other owners, per partition (outbox + dormant).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Held(pub u32);

/// Stage numbers below `upto` of these partitions are durable here.
#[derive(Message)]
#[rtype(result = "()")]
struct Durable(Vec<(u32, u64)>);

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
    /// Per partition; a waiter is woken once the owner took its records.
    outbox: Vec<Outbox<oneshot::Sender<()>>>,
    dormant: BTreeMap<(u32, u64), Arc<Record>>,
    imported: Imports,
    /// By destination URL.
    forwarders: HashMap<String, Addr<Forwarder>>,
    /// Bearer token for the internal API of other nodes.
    token: Option<String>,
    me: Option<Addr<Ingress>>,
    /// Admitted batches in admission order, each sent to its partitions once it is
    /// durable (`ack = "durable"`) — so a request that gets no 202 is never processed —
    /// and always in order, so every partition receives its seqs ascending.
    holding: VecDeque<Holding>,
    next_hold: u64,
    /// Records this node holds for other owners at most (`cluster.max_staged_records`).
    max_staged: usize,
}

/// Batches admitted together, waiting for the journal (`ready: None`) or ready to go.
struct Holding {
    id: u64,
    batches: Vec<Vec<(u64, Job)>>,
    /// `Some(true)`: durable (or nothing to wait for); `Some(false)`: the journal failed.
    ready: Option<bool>,
}

/// The journal answered for held batch `id`.
#[derive(Message)]
#[rtype(result = "()")]
struct HoldDone {
    id: u64,
    durable: bool,
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
        token: Option<String>,
    ) -> Self {
        let n = partitions.len();
        Ingress {
            lease_upto: vec![0; n],
            partitions,
            next_seq,
            limit,
            shared,
            journal,
            outbox: (0..n as u32).map(Outbox::new).collect(),
            dormant: BTreeMap::new(),
            imported: Imports::default(),
            forwarders: HashMap::new(),
            token,
            me: None,
            holding: VecDeque::new(),
            next_hold: 0,
            max_staged: usize::MAX,
        }
    }

    /// Hold at most `max` records for other owners (then 503).
    pub fn with_max_staged(mut self, max: usize) -> Self {
        self.max_staged = max;
        self
    }

    /// How long a batch in doubt waits for the incarnation it went to once another one
    /// holds its node id (see `outbox::INCARNATION_WAIT`).
    pub fn with_incarnation_wait(mut self, wait: Duration) -> Self {
        self.outbox = std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|o| o.with_incarnation_wait(wait))
            .collect();
        self
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

    /// Journal `entries`; durable receiver when `durable` (or when anything is staged:
    /// staged records ship only once durable here). `cost`: a request's weight in the
    /// journal's backlog (checked before), zero for everything else.
    fn journal_write(
        &self,
        entries: Vec<Entry>,
        durable: bool,
        staged: Vec<(u32, u64)>,
        cost: Cost,
    ) -> Option<oneshot::Receiver<Result<(), JournalError>>> {
        let j = self.journal.as_ref()?;
        let rx = j
            .handle
            .write_request(entries, cost, durable || !staged.is_empty());
        if staged.is_empty() {
            return rx;
        }
        let rx = rx?;
        Some(self.relay(rx, move |durable| durable.then_some(Durable(staged))))
    }

    /// Await the journal's answer in a task, tell this actor what `tell` makes of it, and
    /// hand the same answer on (to the request waiting for it).
    fn relay<M>(
        &self,
        rx: oneshot::Receiver<Result<(), JournalError>>,
        tell: impl FnOnce(bool) -> Option<M> + 'static,
    ) -> oneshot::Receiver<Result<(), JournalError>>
    where
        M: Message<Result = ()> + Send + 'static,
        Ingress: Handler<M>,
    {
        let (tx, out) = oneshot::channel();
        let me = self.me.clone();
        actix_rt::spawn(async move {
            let result = rx.await.unwrap_or(Err(JournalError::Stopped));
            if let (Some(me), Some(msg)) = (me, tell(result.is_ok())) {
                me.do_send(msg);
            }
            let _ = tx.send(result);
        });
        out
    }

    /// Stage `records` of `partition` in the outbox (new stage numbers); returns the
    /// entries to journal and the stage number after the last.
    fn stage(&mut self, partition: u32, records: Vec<Record>) -> (Vec<Entry>, u64) {
        let ob = &mut self.outbox[partition as usize];
        let entries = ob.stage(records);
        let next = ob.next_stage();
        self.publish_staged(partition);
        (entries, next)
    }

    fn publish_staged(&self, partition: u32) {
        let p = partition as usize;
        let dormant = self
            .dormant
            .range((partition, 0)..=(partition, u64::MAX))
            .count();
        self.shared.partitions[p]
            .staged
            .store(self.outbox[p].held() + dormant, Ordering::Release);
        self.shared
            .metrics
            .cluster_staged_records
            .set(self.shared.staged() as i64);
    }

    /// Take accepted records into local partition `p` with fresh seqs, keeping their
    /// attempts and first-attempt time; returns the journal entries and the batches to
    /// dispatch once those are journaled.
    fn take_in(
        &mut self,
        partition: u32,
        records: Vec<Arc<Record>>,
    ) -> (Vec<Entry>, Vec<Vec<(u64, Job)>>) {
        let p = partition as usize;
        let mut entries = self.leases(&{
            let mut c = vec![0; self.partitions.len()];
            c[p] = records.len();
            c
        });
        let now = Instant::now();
        let mut batch = Vec::with_capacity(records.len());
        for r in records {
            let mut r = Arc::unwrap_or_clone(r);
            r.partition = partition;
            r.seq = self.next_seq[p];
            self.next_seq[p] += 1;
            entries.push(Entry::Accepted(r.clone()));
            batch.push((r.seq, restored_job(r, now)));
        }
        let mut batches: Vec<Vec<(u64, Job)>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        batches[p] = batch;
        (entries, batches)
    }

    /// Ship or self-deliver every outbox that can move.
    fn pump(&mut self) {
        let now = Instant::now();
        let own = self.shared.ownership.clone();
        for p in 0..self.outbox.len() {
            if !self.outbox[p].may_move(now) {
                continue;
            }
            let partition = p as u32;
            if let Some(answer) = self.outbox[p].give_up_parked(now) {
                tracing::warn!(
                    partition,
                    "a batch in doubt went to an incarnation that never came back (its id belongs \
                     to another one now): staging it again for the owner"
                );
                self.apply(partition, answer);
            }
            if let Some(relay) = own.relay(partition)
                && self.outbox[p].handover_to() != Some(relay.as_str())
            {
                self.outbox[p].set_handover_to(relay);
            }
            let route = own.delivery_route(partition);
            let pumped = self.outbox[p].pump(now, &route, own.node(), |n| own.member(n));
            if let Some(ask) = pumped.ask {
                self.send_ship(partition, ask);
            }
            match pumped.next {
                Some(Next::Ship(batch)) => self.send_ship(partition, batch),
                Some(Next::Deliver(d)) => self.take_delivery(partition, d),
                None => {}
            }
        }
        self.restage_dormant();
    }

    /// The partition is active here: its durable outbox records join it directly.
    fn deliver_locally(&mut self, partition: u32) {
        if let Some(d) = self.outbox[partition as usize].deliver() {
            self.take_delivery(partition, d);
        }
    }

    fn take_delivery(&mut self, partition: u32, d: Delivery<oneshot::Sender<()>>) {
        let (mut entries, batches) = self.take_in(partition, d.records);
        entries.push(d.forwarded);
        if let Some(j) = &self.journal {
            j.handle.write(entries);
        }
        self.dispatch(batches);
        release(d.released);
        self.publish_staged(partition);
    }

    fn send_ship(&mut self, partition: u32, batch: Batch) {
        let Batch {
            node,
            incarnation,
            advertise,
            epoch,
            handover,
            parked,
            upto,
            records,
        } = batch;
        let Some(me) = self.me.clone() else { return };
        // One forwarder per destination URL: a question for a node's former incarnation
        // goes where that one was reached, beside the batches for the id's current one.
        let fwd = match self.forwarders.get(&advertise) {
            Some(addr) if addr.connected() => addr.clone(),
            _ => {
                let addr = Forwarder::new(
                    self.shared.ownership.node().to_string(),
                    advertise.clone(),
                    self.token.clone(),
                    me.clone().recipient(),
                    self.shared.clone(),
                )
                .start();
                self.forwarders.insert(advertise.clone(), addr.clone());
                addr
            }
        };
        fwd.do_send(Ship {
            partition,
            sent: Sent {
                node,
                incarnation,
                advertise,
                upto,
                parked,
            },
            epoch,
            handover,
            records,
        });
    }

    /// Journal what an answer about a shipped batch changed, count what left, wake waiters.
    fn apply(&mut self, partition: u32, answer: Answer<oneshot::Sender<()>>) {
        if let Some(s) = &answer.settled {
            tracing::info!(partition, node = %s.node, held_there = s.held_there,
                missing = s.missing, "parked records settled");
        }
        if answer.forwarded > 0 {
            self.shared
                .metrics
                .cluster_forwarded_records
                .inc_by(answer.forwarded as u64);
        }
        if !answer.entries.is_empty() {
            match answer.staged_upto {
                // Records staged again: they ship once durable here.
                Some(upto) => drop(self.journal_write(
                    answer.entries,
                    true,
                    vec![(partition, upto)],
                    Cost::default(),
                )),
                None => {
                    if let Some(j) = &self.journal {
                        j.handle.write(answer.entries);
                    }
                }
            }
        }
        release(answer.released);
        self.publish_staged(partition);
    }

    /// Dormant records of partitions another node owns move to the outbox.
    fn restage_dormant(&mut self) {
        if self.dormant.is_empty() {
            return;
        }
        let mut parts: Vec<u32> = self.dormant.keys().map(|(p, _)| *p).collect();
        parts.dedup();
        for partition in parts {
            let own = &self.shared.ownership;
            let owned_elsewhere = matches!(own.delivery_route(partition), Route::Remote { .. });
            if !owned_elsewhere && own.relay(partition).is_none() {
                continue;
            }
            let keys: Vec<(u32, u64)> = self
                .dormant
                .range((partition, 0)..=(partition, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            let records: Vec<Arc<Record>> =
                keys.iter().filter_map(|k| self.dormant.remove(k)).collect();
            tracing::info!(
                partition,
                records = records.len(),
                "handing records pending here to the partition's owner"
            );
            let rx = self.restage(records, None);
            drop(rx);
        }
    }

    fn restage(
        &mut self,
        records: Vec<Arc<Record>>,
        handover_to: Option<String>,
    ) -> oneshot::Receiver<Result<(), JournalError>> {
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let mut marks = Vec::with_capacity(records.len());
        for r in records {
            self.dormant.remove(&(r.partition, r.seq));
            marks.push((r.partition, r.seq));
            by_partition
                .entry(r.partition)
                .or_default()
                .push(Arc::unwrap_or_clone(r));
        }
        let mut entries = Vec::new();
        let mut staged = Vec::new();
        for (partition, records) in by_partition {
            let (mut e, upto) = self.stage(partition, records);
            entries.append(&mut e);
            staged.push((partition, upto));
            if let Some(target) = &handover_to {
                self.outbox[partition as usize].set_handover_to(target.clone());
            }
        }
        entries.push(Entry::Handed { marks });
        match self.journal_write(entries, true, staged, Cost::default()) {
            Some(rx) => rx,
            None => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(JournalError::Absent));
                rx
            }
        }
    }
}

/// Wake the callers waiting for these records to reach their owner.
fn release(waiters: Vec<oneshot::Sender<()>>) {
    for tx in waiters {
        let _ = tx.send(());
    }
}

/// A job for a record coming back from the journal or another node: its attempts and its
/// first-attempt time (the deadline keeps running) are kept.
fn restored_job(mut r: Record, now: Instant) -> Job {
    // An attempt in flight at the crash counts as made.
    r.attempts = r.attempts.max(u32::from(r.first_attempt_ms > 0));
    Job {
        rec: r,
        accepted_at: now,
        journaled: true,
        reply: None,
        progress: Default::default(),
    }
}

impl Actor for Ingress {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me = Some(ctx.address());
        if self.shared.ownership.is_clustered() {
            ctx.run_interval(Duration::from_millis(10), |act, _| act.pump());
        }
    }
}

impl Handler<Submit> for Ingress {
    type Result = Result<Admission, Refused>;

    fn handle(&mut self, msg: Submit, _: &mut Self::Context) -> Self::Result {
        // The last check of a stop (see `Shared::closed`): here, in the actor's order, so
        // whoever counts the staged records after closing counts them all.
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Refused {
                reason: Refusal::Unavailable("the node is shutting down".into()),
                records: msg.records,
            });
        }
        // The journal as this request finds it: failing, or too far behind (a slow disk;
        // its channel never blocks this thread, this check is what bounds it).
        let mut cost = Cost::default();
        let journal = match &self.journal {
            Some(j) if msg.reply.is_none() => {
                if let Some(why) = self.shared.journal_health.lock().clone() {
                    Journal::CannotWrite(why)
                } else {
                    cost = request_cost(&msg.records);
                    j.handle
                        .check(cost)
                        .map_or_else(Journal::Behind, |()| Journal::Fine)
                }
            }
            _ => Journal::Fine,
        };
        let n = self.partitions.len();
        let counts = admission::counts(n, msg.records.iter().map(|r| r.partition));
        let ownership = self.shared.ownership.clone();
        let checked = admission::check(
            journal,
            msg.records.len(),
            &counts,
            self.limit,
            msg.reply.is_some(),
            |p| match ownership.route(p) {
                Route::Local(_) => Target::Local {
                    held: self.shared.partitions[p as usize]
                        .held
                        .load(Ordering::Acquire),
                },
                Route::Remote { node, .. } => Target::Remote {
                    node,
                    staged: self.outbox[p as usize].queued(),
                },
                Route::Unavailable(why) => Target::Unavailable(why),
            },
        );
        let checked = checked.and_then(|plan| {
            let held = self.shared.staged() as usize;
            admission::check_staging(&plan, &counts, held, self.max_staged).map(|()| plan)
        });
        let plan = match checked {
            Ok(plan) => plan,
            // Accepted whole or refused whole: nothing of this request is taken.
            Err(reason) => {
                if matches!(reason, Refusal::Overloaded(_)) {
                    self.shared
                        .metrics
                        .records_refused
                        .inc_by(msg.records.len() as u64);
                }
                return Err(Refused {
                    reason,
                    records: msg.records,
                });
            }
        };
        let remote = &plan.remote;
        let now = Instant::now();
        let total = msg.records.len();
        let journaled = msg.reply.is_none() && self.journal.is_some();
        let mut entries = self.leases(&plan.local_counts(&counts));
        let now_ms = if journaled { unix_ms() } else { 0 };
        let mut batches: Vec<Vec<(u64, Job)>> =
            counts.iter().map(|c| Vec::with_capacity(*c)).collect();
        let mut to_stage: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let mut ids = Vec::with_capacity(total);
        for (i, a) in msg.records.into_iter().enumerate() {
            let p = a.partition as usize % n;
            if remote[p] {
                let stage = self.outbox[p].next_stage()
                    + to_stage.get(&(p as u32)).map_or(0, Vec::len) as u64;
                // A generated id must be unique in the cluster: name this node and the stage.
                let mut r = a;
                if r.id.is_empty() {
                    // Stage numbers start again in a new incarnation: name it too.
                    let sender = super::outbox::Source {
                        node: ownership.node().to_string(),
                        incarnation: ownership.incarnation().to_string(),
                    }
                    .to_key();
                    r.id = generated_id(&format!("{sender}:p{p}-s{stage}"));
                }
                r.partition = p as u32;
                r.accepted_ms = now_ms;
                ids.push(r.id.clone());
                to_stage.entry(p as u32).or_default().push(r);
                continue;
            }
            let seq = self.next_seq[p];
            self.next_seq[p] += 1;
            let mut r = a;
            if r.id.is_empty() {
                let name = if ownership.is_clustered() {
                    format!("{}:p{p}-{seq}", ownership.node())
                } else {
                    format!("p{p}-{seq}")
                };
                r.id = generated_id(&name);
            }
            r.partition = p as u32;
            r.seq = seq;
            r.accepted_ms = now_ms;
            ids.push(r.id.clone());
            if journaled {
                entries.push(Entry::Accepted(r.clone()));
            }
            batches[p].push((
                seq,
                Job {
                    rec: r,
                    accepted_at: now,
                    journaled,
                    reply: msg.reply.as_ref().map(|c| c.slot(i)),
                    progress: Default::default(),
                },
            ));
        }
        let mut staged = Vec::new();
        let mut forwarded = Vec::new();
        for (partition, records) in to_stage {
            let (mut e, upto) = self.stage(partition, records);
            entries.append(&mut e);
            staged.push((partition, upto));
            // The answer waits a moment for the owner to take them — not for an owner that
            // does not answer: they are durable here, and delivered when it does.
            if let Route::Remote { node, .. } = ownership.route(partition)
                && ownership.unreachable_now(&node)
            {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            self.outbox[partition as usize].wait(upto, tx);
            forwarded.push(rx);
        }
        // Journal first: the channel is FIFO, so the partitions' later entries about these
        // records (started, committed) always follow their acceptance in the journal.
        let durable_ack = self.journal.as_ref().is_some_and(|j| j.durable) && journaled;
        let durable = if journaled || !staged.is_empty() {
            self.journal_write(entries, durable_ack, staged, cost)
                .filter(|_| durable_ack)
        } else {
            None
        };
        let durable = match durable {
            // Hold the batches until the journal answers: processed (and counted accepted)
            // only once durable.
            Some(rx) => Some(self.hold_until_durable(batches, rx, total as u64)),
            None => {
                self.dispatch(batches);
                self.shared.metrics.records_accepted.inc_by(total as u64);
                None
            }
        };
        Ok(Admission {
            ids,
            durable,
            forwarded,
        })
    }
}

impl Ingress {
    /// Send batches to their partitions (after every batch held before them).
    fn dispatch(&mut self, batches: Vec<Vec<(u64, Job)>>) {
        self.hold(batches, Some(true));
        self.release_holds();
    }

    /// Count `batches` against their partitions and queue them behind those held before;
    /// returns the hold's id.
    fn hold(&mut self, batches: Vec<Vec<(u64, Job)>>, ready: Option<bool>) -> u64 {
        self.reserve(&batches, true);
        let id = self.next_hold;
        self.next_hold += 1;
        self.holding.push_back(Holding { id, batches, ready });
        id
    }

    /// Count batches against their partitions (`add`) or take them off again.
    fn reserve(&self, batches: &[Vec<(u64, Job)>], add: bool) {
        for (p, batch) in batches.iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let stats = &self.shared.partitions[p];
            if add {
                stats.backlog.fetch_add(batch.len(), Ordering::AcqRel);
                stats.held.fetch_add(batch.len(), Ordering::AcqRel);
                stats
                    .accepted
                    .fetch_add(batch.len() as u64, Ordering::AcqRel);
            } else {
                stats.backlog.fetch_sub(batch.len(), Ordering::AcqRel);
                stats.held.fetch_sub(batch.len(), Ordering::AcqRel);
                stats
                    .accepted
                    .fetch_sub(batch.len() as u64, Ordering::AcqRel);
            }
        }
    }

    /// Hold `batches` (counted against their partitions at once) until `rx` says they are
    /// durable; the returned receiver answers the request the same.
    fn hold_until_durable(
        &mut self,
        batches: Vec<Vec<(u64, Job)>>,
        rx: oneshot::Receiver<Result<(), JournalError>>,
        records: u64,
    ) -> oneshot::Receiver<Result<(), JournalError>> {
        let id = self.hold(batches, None);
        // Counted accepted once durable (before the request hears so), not when refused.
        let accepted = self.shared.metrics.records_accepted.clone();
        self.relay(rx, move |durable| {
            if durable {
                accepted.inc_by(records);
            }
            Some(HoldDone { id, durable })
        })
    }

    /// Send every batch at the front that is ready; drop those the journal failed (their
    /// request got a 503: nothing of it is processed).
    fn release_holds(&mut self) {
        while let Some(front) = self.holding.front() {
            match front.ready {
                None => return,
                Some(durable) => {
                    let Some(h) = self.holding.pop_front() else {
                        return;
                    };
                    if !durable {
                        self.reserve(&h.batches, false);
                        continue;
                    }
                    for (p, batch) in h.batches.into_iter().enumerate() {
                        if !batch.is_empty() {
                            self.partitions[p].do_send(Enqueue(batch));
                        }
                    }
                }
            }
        }
    }
}

impl Handler<HoldDone> for Ingress {
    type Result = ();

    fn handle(&mut self, msg: HoldDone, _: &mut Self::Context) {
        if let Some(h) = self.holding.iter_mut().find(|h| h.id == msg.id) {
            h.ready = Some(msg.durable);
        }
        self.release_holds();
    }
}

impl Handler<Restore> for Ingress {
    type Result = usize;

    /// Standalone: re-issue every pending record, in seq order per partition, with its
    /// attempts and first-attempt time. Cluster: keep them dormant until their partition
    /// is placed, and refill the outboxes. Either way seqs continue above every lease.
    fn handle(&mut self, msg: Restore, _: &mut Self::Context) -> usize {
        let state = msg.state;
        let n = self.partitions.len();
        for p in 0..n {
            let next = state.next_seq_of(p as u32).max(self.next_seq[p]);
            self.next_seq[p] = next;
            // The restored lease is already journaled; force a fresh one above it.
            self.lease_upto[p] = next;
            self.outbox[p].restore_next_stage(state.next_stage_of(p as u32));
        }
        let leases = self.leases(&vec![0; n]);
        if let Some(j) = &self.journal {
            j.handle.write(leases);
        }
        for ((source, p), upto) in state.imported {
            self.imported.restore(&source, p, upto);
        }
        for ((p, _), r) in state.staged {
            self.outbox[p as usize % n].restore_staged(r);
        }
        for ((p, from), (upto, node)) in state.in_doubt {
            self.outbox[p as usize % n].restore_in_doubt(from, upto, node);
        }
        let total = state.pending.len();
        if msg.clustered {
            self.dormant = state.pending;
            for p in 0..n {
                self.publish_staged(p as u32);
            }
            return total;
        }
        let now = Instant::now();
        let mut batches: Vec<Vec<(u64, Job)>> = (0..n).map(|_| Vec::new()).collect();
        for ((p, seq), r) in state.pending {
            batches[p as usize % n].push((seq, restored_job(Arc::unwrap_or_clone(r), now)));
        }
        self.dispatch(batches);
        total
    }
}

impl Handler<Activate> for Ingress {
    type Result = usize;

    fn handle(&mut self, msg: Activate, _: &mut Self::Context) -> usize {
        let partition = msg.partition;
        let p = partition as usize;
        // Active at the new epoch before anything reaches the partition actor: a batch it
        // renders must find its epoch current at the emitter, or it would be dropped as
        // stale. (Admission cannot slip in: this handler runs to its end first.)
        self.shared.ownership.set_active(partition, msg.epoch);
        self.partitions[p].do_send(SetEpoch(msg.epoch));
        if msg.seq_floor > self.next_seq[p] {
            self.next_seq[p] = msg.seq_floor;
            self.lease_upto[p] = msg.seq_floor;
        }
        let mut entries = vec![Entry::Owned {
            partition,
            epoch: msg.epoch,
        }];
        entries.append(&mut self.leases(&vec![0; self.partitions.len()]));
        // Records pending here from an earlier tenure keep their seqs (all below the
        // floor) and go first.
        let keys: Vec<(u32, u64)> = self
            .dormant
            .range((partition, 0)..=(partition, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let now = Instant::now();
        let mut batch = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(r) = self.dormant.remove(&k) {
                batch.push((k.1, restored_job(Arc::unwrap_or_clone(r), now)));
            }
        }
        let reissued = batch.len();
        if let Some(j) = &self.journal {
            j.handle.write(entries);
        }
        let mut batches: Vec<Vec<(u64, Job)>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        batches[p] = batch;
        self.dispatch(batches);
        // Then what waited in the outbox (handed over by the previous owner, or accepted
        // here while another node owned the partition), before any new record.
        self.deliver_locally(partition);
        self.publish_staged(partition);
        reissued
    }
}

impl Handler<EvictPartition> for Ingress {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: EvictPartition, _: &mut Self::Context) -> Self::Result {
        let addr = self.partitions[msg.0 as usize].clone();
        Box::pin(async move { addr.send(Evict).await.unwrap_or(0) })
    }
}

impl Handler<Restage> for Ingress {
    type Result = MessageResult<Restage>;

    fn handle(&mut self, msg: Restage, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.restage(msg.records, msg.handover_to))
    }
}

impl Handler<Dormant> for Ingress {
    type Result = ();

    fn handle(&mut self, msg: Dormant, _: &mut Self::Context) {
        self.dormant = msg
            .0
            .into_iter()
            .map(|r| ((r.partition, r.seq), r))
            .collect();
        for p in 0..self.partitions.len() {
            self.publish_staged(p as u32);
        }
    }
}

impl Handler<Held> for Ingress {
    type Result = usize;

    fn handle(&mut self, msg: Held, _: &mut Self::Context) -> usize {
        let p = msg.0;
        self.outbox[p as usize].queued() + self.dormant.range((p, 0)..=(p, u64::MAX)).count()
    }
}

impl Handler<Durable> for Ingress {
    type Result = ();

    fn handle(&mut self, msg: Durable, _: &mut Self::Context) {
        for (p, upto) in msg.0 {
            self.outbox[p as usize].durable(upto);
        }
        self.pump();
    }
}

impl Handler<Shipped> for Ingress {
    type Result = ();

    fn handle(&mut self, msg: Shipped, _: &mut Self::Context) {
        let partition = msg.partition;
        let p = partition as usize;
        let answer = self.outbox[p].answer(
            Instant::now(),
            &msg.sent,
            msg.answered_by.as_deref(),
            &msg.result,
        );
        if !msg.sent.parked {
            match &msg.result {
                ShipResult::Taken => {}
                ShipResult::NotOwner { why, .. } => {
                    tracing::debug!(partition, %why, "owner refused forwarded records");
                    if self.outbox[p].handover_to().is_none() {
                        self.shared.ownership.mark_refused(partition);
                    }
                }
                ShipResult::Retry(why) => {
                    tracing::debug!(partition, %why, "forwarding failed; will retry");
                }
                ShipResult::Unreachable(why) => {
                    tracing::debug!(partition, node = %msg.sent.node, %why, "owner unreachable");
                    self.shared.ownership.mark_unreachable(&msg.sent.node);
                }
                ShipResult::InDoubt(why) => {
                    tracing::warn!(partition, node = %msg.sent.node, %why,
                        "forwarded records may or may not have been taken; parked until that node answers");
                }
            }
        }
        self.apply(partition, answer);
        self.pump();
    }
}

impl Handler<Import> for Ingress {
    type Result = Result<ImportAck, ImportRefused>;

    fn handle(&mut self, msg: Import, _: &mut Self::Context) -> Self::Result {
        let partition = msg.partition;
        let p = partition as usize;
        if p >= self.partitions.len() {
            return Err(ImportRefused::NotOwner(
                format!("partition {partition} does not exist here"),
                0,
            ));
        }
        let source = msg.source;
        let fresh = self.imported.fresh(&source, partition, msg.records);
        let (watermark, upto, fresh) = (fresh.watermark, fresh.upto, fresh.records);
        if fresh.is_empty() {
            // A resend of what this node already holds: taken, whoever owns it now.
            let (tx, durable) = oneshot::channel();
            let _ = tx.send(Ok(()));
            return Ok(ImportAck {
                accepted: 0,
                durable,
            });
        }
        let route = self.shared.ownership.route(partition);
        let local = match route {
            Route::Local(e) if msg.handover || e == msg.epoch => true,
            Route::Local(e) => {
                self.shared
                    .metrics
                    .fencing_refusals
                    .inc_by(fresh.len() as u64);
                return Err(ImportRefused::NotOwner(
                    format!(
                        "this node owns partition {partition} at epoch {e}, not {}",
                        msg.epoch
                    ),
                    watermark,
                ));
            }
            _ if msg.handover => false,
            Route::Remote { node, epoch, .. } => {
                return Err(ImportRefused::NotOwner(
                    format!("partition {partition} is owned by {node} at epoch {epoch}"),
                    watermark,
                ));
            }
            Route::Unavailable(why) => return Err(ImportRefused::NotOwner(why, watermark)),
        };
        if local && !msg.handover {
            let held = self.shared.partitions[p].held.load(Ordering::Acquire);
            admission::fits(p, fresh.len(), held, self.limit).map_err(ImportRefused::Overloaded)?;
        }
        let accepted = fresh.len();
        if msg.handover {
            self.shared.ownership.hurry();
        }
        let (mut entries, batches, staged) = if local {
            let (e, b) = self.take_in(partition, fresh.into_iter().map(Arc::new).collect());
            (e, b, Vec::new())
        } else {
            let (e, next) = self.stage(partition, fresh);
            (e, Vec::new(), vec![(partition, next)])
        };
        entries.extend(self.imported.took(&source, partition, upto));
        let durable = match self.journal_write(entries, true, staged, Cost::default()) {
            Some(rx) => rx,
            None => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Ok(()));
                rx
            }
        };
        self.dispatch(batches);
        Ok(ImportAck { accepted, durable })
    }
}

/// A generated id as its JSON text: a string under the prefix client ids may not use.
fn generated_id(name: &str) -> Arc<str> {
    let text = format!("{}{name}", super::admit::GENERATED_ID_PREFIX);
    Arc::from(serde_json::Value::String(text).to_string().as_str())
}
