//! The forwarding protocol, pure: what one partition's outbox holds for the owner elsewhere
//! and what moves next, and on the receiving side the import watermarks that drop resends.
//! No actor, no journal, no clock: callers pass the time and the routing view in, and every
//! method answers with the entries to journal and what to do; `engine/ingress.rs` does the
//! I/O.
//!
//! The sending side ([`Outbox`]), per partition:
//! - records are **staged** under this node's own stage numbers (they only grow), journaled
//!   as `Staged`, and may ship once the journal made them durable here (`durable_upto`);
//! - at most one batch is **in flight** (at most [`SHIP_BATCH`] records, [`SHIP_BYTES`]);
//!   nothing of the outbox joins a local partition while one is, since it may be taken;
//! - a batch whose answer was lost is **parked** (`InDoubt`): only the node it went to can
//!   say whether it took it, so it is asked again of that node, which gets nothing newer of
//!   the partition first (its watermark answers exactly); once it answered, what it does not
//!   hold is staged again under new numbers (**settled**); the rest of the outbox flows on;
//! - **waiters** (requests waiting for their records to reach the owner) are released once
//!   the owner took them, or once they are parked (durable here, settled later);
//! - a graceful handover names the next owner (**handover target**), which gets the records
//!   even before it owns the partition.
//!
//! The receiving side ([`Imports`]): per ([`Source`], partition) the stage numbers already
//! taken, so a batch resent after its sender crashed is not taken twice. Keyed by the
//! sender's incarnation as well as its node id: a node back on an empty volume numbers its
//! stages from 0 again, and none of that is a resend.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ownership::{Member, Route};
use crate::durability::codec::Entry;
use crate::record::Record;

/// Records shipped to an owner in one request at most.
pub const SHIP_BATCH: usize = 4096;
/// Record bytes shipped in one request at most (one record always goes, however large:
/// a record fits `server.max_body_bytes`, and the import route takes 8 times that).
pub const SHIP_BYTES: usize = 4 << 20;
/// Pause before shipping again after an owner refused or could not be reached.
pub const SHIP_BACKOFF: Duration = Duration::from_millis(100);

/// Who sent an import: a node id and the incarnation of that node (its data directory's
/// life), so stage numbers of a new incarnation are never taken for resends of an old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    pub node: String,
    /// Empty when unknown (then the node id alone keys the watermark).
    pub incarnation: String,
}

/// Between node id and incarnation in the persisted form; node ids never contain it
/// (`settings/validate.rs`: letters, digits, `-`, `_`, `.`).
const SOURCE_SEPARATOR: char = '#';

impl Source {
    /// A source known only by its node id.
    pub fn node(node: impl Into<String>) -> Self {
        Source {
            node: node.into(),
            incarnation: String::new(),
        }
    }

    /// The persisted form (`Entry::Imported::source`): the node id alone when the
    /// incarnation is empty, so journals written before incarnations read the same.
    pub fn to_key(&self) -> String {
        if self.incarnation.is_empty() {
            self.node.clone()
        } else {
            format!("{}{SOURCE_SEPARATOR}{}", self.node, self.incarnation)
        }
    }

    /// The inverse of [`Source::to_key`].
    pub fn from_key(key: &str) -> Self {
        match key.split_once(SOURCE_SEPARATOR) {
            Some((node, incarnation)) => Source {
                node: node.into(),
                incarnation: incarnation.into(),
            },
            None => Source::node(key),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_key())
    }
}

/// How a shipped batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipResult {
    /// The owner made every record durable.
    Taken,
    /// The receiver does not own the partition at that epoch (re-route); it holds the
    /// records numbered below `taken_upto` already.
    NotOwner { why: String, taken_upto: u64 },
    /// Not delivered (overload, failure, an answer saying so): try again later, anywhere.
    Retry(String),
    /// Never connected: nothing was sent, and the node looks down.
    Unreachable(String),
    /// The request may have been taken (the connection broke after it was sent): only the
    /// same node can say, so ask it again before sending these records anywhere else.
    InDoubt(String),
}

/// Where a shipped batch went, echoed with its answer (see [`Outbox::answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub node: String,
    pub incarnation: String,
    pub advertise: String,
    /// Stage numbers below this were in the batch.
    pub upto: u64,
    /// It was a question about a parked batch.
    pub parked: bool,
}

/// A batch to send to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub node: String,
    /// The receiver's incarnation as the member view names it (README "Cluster",
    /// *Incarnations*): a batch in doubt can only be answered by that incarnation.
    pub incarnation: String,
    pub advertise: String,
    /// The epoch the receiver is believed to own the partition at (0: handover/question).
    pub epoch: u64,
    pub handover: bool,
    /// Asking about a parked batch.
    pub parked: bool,
    /// Stage numbers below this are in the batch.
    pub upto: u64,
    /// In stage order.
    pub records: Vec<Arc<Record>>,
}

/// Durable outbox records that join the partition here (it is active on this node): take
/// them in with fresh seqs and journal `forwarded` in the same write; then wake `released`.
#[derive(Debug)]
pub struct Delivery<W> {
    pub records: Vec<Arc<Record>>,
    pub forwarded: Entry,
    pub released: Vec<W>,
}

/// What moves now (see [`Outbox::pump`]).
#[derive(Debug)]
pub enum Next<W> {
    Ship(Batch),
    Deliver(Delivery<W>),
}

/// The result of [`Outbox::pump`]: a question about a parked batch to send, and the next
/// move of the outbox itself.
#[derive(Debug)]
pub struct Pumped<W> {
    pub ask: Option<Batch>,
    pub next: Option<Next<W>>,
}

/// A parked batch answered: how many of its records the node held, how many were staged
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub node: String,
    pub held_there: usize,
    pub missing: usize,
}

/// What an answer to a shipped batch changes (see [`Outbox::answer`]).
#[derive(Debug)]
pub struct Answer<W> {
    /// To journal.
    pub entries: Vec<Entry>,
    /// `Some(upto)`: the entries stage records again; stage numbers below `upto` are
    /// durable once they are (tell [`Outbox::durable`]).
    pub staged_upto: Option<u64>,
    /// Waiters to wake.
    pub released: Vec<W>,
    /// Records that left this node for good.
    pub forwarded: usize,
    /// A parked batch was settled.
    pub settled: Option<Settled>,
}

impl<W> Default for Answer<W> {
    fn default() -> Self {
        Answer {
            entries: Vec::new(),
            staged_upto: None,
            released: Vec::new(),
            forwarded: 0,
            settled: None,
        }
    }
}

/// A batch in doubt (see module docs).
#[derive(Debug)]
struct Parked {
    node: String,
    /// The incarnation of `node` the batch went to: only it can say whether it holds it.
    incarnation: String,
    /// Where that incarnation was reached (empty after a restart): a node whose id another
    /// incarnation holds now still answers there while it retires.
    advertise: String,
    /// In stage order.
    records: Vec<Arc<Record>>,
    asking: bool,
    /// Since when `node` has been another incarnation (see [`Outbox::pump`]).
    replaced_since: Option<Instant>,
}

/// How long a parked batch waits for the incarnation it went to once another incarnation
/// holds that node id, by default: after that, the incarnation it went to is taken to be
/// gone with its volume, and the batch is staged again for the owner.
pub const INCARNATION_WAIT: Duration = Duration::from_secs(50);

/// Records of one partition waiting here for its owner elsewhere (see module docs). `W` is
/// what a waiter is woken through (a channel's sender in the ingress).
#[derive(Debug)]
pub struct Outbox<W> {
    partition: u32,
    /// In stage order; each record's `seq` is its stage number.
    queue: VecDeque<Arc<Record>>,
    next_stage: u64,
    /// Stage numbers below this are durable here and may be shipped.
    durable_upto: u64,
    /// The batch in flight ships stage numbers below this.
    in_flight: Option<u64>,
    /// Waiting until the owner took stage numbers below `.0`.
    waiters: VecDeque<(u64, W)>,
    /// Graceful handover: the node that will own the partition next.
    handover_to: Option<String>,
    not_before: Option<Instant>,
    parked: Vec<Parked>,
    /// See [`INCARNATION_WAIT`].
    incarnation_wait: Duration,
}

impl<W> Outbox<W> {
    /// An empty outbox of `partition`.
    pub fn new(partition: u32) -> Self {
        Outbox {
            partition,
            queue: VecDeque::new(),
            next_stage: 0,
            durable_upto: 0,
            in_flight: None,
            waiters: VecDeque::new(),
            handover_to: None,
            not_before: None,
            parked: Vec::new(),
            incarnation_wait: INCARNATION_WAIT,
        }
    }

    /// Wait `d` instead of [`INCARNATION_WAIT`] (5 × the lease TTL in a node).
    pub fn with_incarnation_wait(mut self, d: Duration) -> Self {
        self.incarnation_wait = d;
        self
    }

    /// The stage number the next staged record gets.
    pub fn next_stage(&self) -> u64 {
        self.next_stage
    }

    /// Records waiting to ship (parked ones not counted).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Every record held here: waiting and parked.
    pub fn held(&self) -> usize {
        self.queue.len() + self.parked.iter().map(|b| b.records.len()).sum::<usize>()
    }

    /// The next owner named by a graceful handover, until the outbox is empty.
    pub fn handover_to(&self) -> Option<&str> {
        self.handover_to.as_deref()
    }

    /// Name the next owner (graceful handover).
    pub fn set_handover_to(&mut self, node: String) {
        self.handover_to = Some(node);
    }

    /// Stage `records` under new stage numbers; returns the `Staged` entries to journal.
    /// They ship once [`Outbox::durable`] says so.
    pub fn stage(&mut self, records: Vec<Record>) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(records.len());
        for mut r in records {
            r.partition = self.partition;
            r.seq = self.next_stage;
            self.next_stage += 1;
            let r = Arc::new(r);
            entries.push(Entry::Staged((*r).clone()));
            self.queue.push_back(r);
        }
        entries
    }

    /// Stage numbers below `upto` are durable here.
    pub fn durable(&mut self, upto: u64) {
        self.durable_upto = self.durable_upto.max(upto);
    }

    /// Wake `waiter` once the owner took every stage number below `upto`.
    pub fn wait(&mut self, upto: u64, waiter: W) {
        self.waiters.push_back((upto, waiter));
    }

    /// Restore: the stage counter continues at `next`.
    pub fn restore_next_stage(&mut self, next: u64) {
        self.next_stage = next;
    }

    /// Restore: a staged record from the journal (durable already); in stage order.
    pub fn restore_staged(&mut self, r: Arc<Record>) {
        self.durable_upto = self.durable_upto.max(r.seq + 1);
        self.queue.push_back(r);
    }

    /// Restore: the staged records numbered `from..upto` went to `node` (as journaled:
    /// [`Source::to_key`] of the receiver and its incarnation) and are parked.
    pub fn restore_in_doubt(&mut self, from: u64, upto: u64, node: String) {
        let Source { node, incarnation } = Source::from_key(&node);
        let (parked, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|r| r.seq >= from && r.seq < upto);
        self.queue = rest;
        if !parked.is_empty() {
            self.parked.push(Parked {
                node,
                incarnation,
                advertise: String::new(),
                records: parked.into_iter().collect(),
                asking: false,
                replaced_since: None,
            });
        }
    }

    /// Whether [`Outbox::pump`] may have anything to do at `now` (else the caller need
    /// not read the routing view).
    pub fn may_move(&self, now: Instant) -> bool {
        let waiting = !self.queue.is_empty() && self.in_flight.is_none();
        let to_ask = self.parked.first().is_some_and(|b| !b.asking);
        self.not_before.is_none_or(|t| t <= now) && (waiting || to_ask)
    }

    /// What moves at `now`, given where the partition's records go (`route`), this node's
    /// id and the members of the cluster: a question about the first parked batch once its
    /// node is a member again, and the outbox's next batch — joined locally, shipped to
    /// the owner, or (no owner) to the handover target. A node asked about a parked batch
    /// gets nothing newer before it answered: its resend watermark must not jump over the
    /// parked numbers.
    pub fn pump(
        &mut self,
        now: Instant,
        route: &Route,
        me: &str,
        member: impl Fn(&str) -> Option<Member>,
    ) -> Pumped<W> {
        let mut out = Pumped {
            ask: None,
            next: None,
        };
        if self.not_before.is_some_and(|t| t > now) {
            return out;
        }
        out.ask = self.ask_parked(now, route, &member);
        if self.queue.is_empty() || self.in_flight.is_some() {
            return out;
        }
        // Only the incarnation a batch is parked on must get nothing newer first; another
        // incarnation of that id keeps a watermark of its own for this node.
        let incarnation_of = |node: &str| member(node).map(|m| m.incarnation);
        let parked_on = |node: &str| {
            let now_is = incarnation_of(node);
            self.parked
                .iter()
                .any(|b| b.node == node && now_is.as_deref().is_none_or(|i| i == b.incarnation))
        };
        out.next = match route {
            Route::Local(_) => self.deliver().map(Next::Deliver),
            Route::Remote { node, .. } if parked_on(node) => None,
            Route::Remote {
                node,
                advertise,
                epoch,
            } => {
                let incarnation = incarnation_of(node).unwrap_or_default();
                self.ship(node.clone(), incarnation, advertise.clone(), *epoch, false)
            }
            Route::Unavailable(_) => {
                let target = self.handover_to.clone().filter(|t| !parked_on(t));
                match target.filter(|t| t != me).and_then(|t| member(&t)) {
                    Some(m) => self.ship(m.node, m.incarnation, m.advertise, 0, true),
                    None => None,
                }
            }
        };
        out
    }

    /// The question about the first parked batch: to its node once it is a member again —
    /// if it is still the incarnation the batch went to. Another incarnation cannot know:
    /// the one the batch went to is asked where it was reached (a node that found its id
    /// taken answers there while it hands over), for [`INCARNATION_WAIT`] at most; then it
    /// is taken to be gone with its volume, and [`Outbox::give_up_parked`] applies.
    fn ask_parked(
        &mut self,
        now: Instant,
        route: &Route,
        member: &impl Fn(&str) -> Option<Member>,
    ) -> Option<Batch> {
        let first = self.parked.first_mut()?;
        if first.asking {
            return None;
        }
        let m = member(&first.node)?;
        let advertise = if m.incarnation == first.incarnation {
            first.replaced_since = None;
            m.advertise
        } else {
            let since = *first.replaced_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.incarnation_wait {
                return None;
            }
            if first.advertise.is_empty() || first.advertise == m.advertise {
                return None;
            }
            first.advertise.clone()
        };
        let epoch = match route {
            Route::Remote { node, epoch, .. } if *node == first.node => *epoch,
            _ => 0,
        };
        first.asking = true;
        Some(Batch {
            node: first.node.clone(),
            incarnation: first.incarnation.clone(),
            advertise,
            epoch,
            handover: false,
            parked: true,
            upto: first.records.last().map(|r| r.seq + 1).unwrap_or(0),
            records: first.records.clone(),
        })
    }

    /// The first parked batch's node has been another incarnation for
    /// [`INCARNATION_WAIT`] and the one the batch went to never answered: stage its
    /// records again for the owner (as if that incarnation held none of them).
    pub fn give_up_parked(&mut self, now: Instant) -> Option<Answer<W>> {
        let first = self.parked.first()?;
        let since = first.replaced_since?;
        if first.asking || now.saturating_duration_since(since) < self.incarnation_wait {
            return None;
        }
        self.parked[0].asking = true;
        let holder = self.parked[0].incarnation.clone();
        let gone = ShipResult::NotOwner {
            why: "the incarnation it went to is gone".into(),
            taken_upto: 0,
        };
        Some(self.settle(now, 0, &gone, Some(&holder)))
    }

    /// The next durable batch within the limits, now in flight.
    fn ship(
        &mut self,
        node: String,
        incarnation: String,
        advertise: String,
        epoch: u64,
        handover: bool,
    ) -> Option<Next<W>> {
        let upto = self.durable_upto;
        let mut bytes = 0usize;
        let records: Vec<Arc<Record>> = self
            .queue
            .iter()
            .take_while(|r| r.seq < upto)
            .take(SHIP_BATCH)
            .take_while(|r| {
                let first = bytes == 0;
                bytes += r.text.len() + 128;
                first || bytes <= SHIP_BYTES
            })
            .cloned()
            .collect();
        let last = records.last().map(|r| r.seq + 1)?;
        self.in_flight = Some(last);
        Some(Next::Ship(Batch {
            node,
            incarnation,
            advertise,
            epoch,
            handover,
            parked: false,
            upto: last,
            records,
        }))
    }

    /// The partition is active here: its durable records join it — unless a batch is on
    /// its way to another node, which may take it (then nothing until that is settled).
    pub fn deliver(&mut self) -> Option<Delivery<W>> {
        if self.in_flight.is_some() {
            return None;
        }
        let upto = self.durable_upto;
        let mut records = Vec::new();
        while self.queue.front().is_some_and(|r| r.seq < upto) {
            records.extend(self.queue.pop_front());
        }
        let from = records.first()?.seq;
        let last = records.last()?.seq + 1;
        let released = self.release_waiters(last);
        Some(Delivery {
            records,
            forwarded: Entry::Forwarded {
                partition: self.partition,
                from,
                upto: last,
            },
            released,
        })
    }

    /// The answer `result` about `batch` (its records dropped: only where it went and its
    /// range matter), which [`Outbox::pump`] handed out; `answered_by`: the incarnation
    /// the answer came from (`None`: no answer, or a node from before incarnations that
    /// does not say).
    pub fn answer(
        &mut self,
        now: Instant,
        batch: &Sent,
        answered_by: Option<&str>,
        result: &ShipResult,
    ) -> Answer<W> {
        let Sent {
            node,
            incarnation,
            advertise,
            upto,
            parked,
        } = batch;
        let (upto, parked) = (*upto, *parked);
        if parked {
            return self.settle(now, upto, result, answered_by);
        }
        self.in_flight = None;
        match result {
            ShipResult::Taken => self.taken(upto),
            ShipResult::NotOwner { .. } | ShipResult::Retry(_) | ShipResult::Unreachable(_) => {
                self.not_before = Some(now + SHIP_BACKOFF);
                Answer::default()
            }
            ShipResult::InDoubt(_) => {
                self.park(node.clone(), incarnation.clone(), advertise.clone(), upto)
            }
        }
    }

    /// Stage numbers below `upto` left this node for good.
    fn taken(&mut self, upto: u64) -> Answer<W> {
        let from = self.queue.front().map(|r| r.seq).unwrap_or(upto);
        let mut forwarded = 0;
        while self.queue.front().is_some_and(|r| r.seq < upto) {
            self.queue.pop_front();
            forwarded += 1;
        }
        self.not_before = None;
        Answer {
            entries: vec![Entry::Forwarded {
                partition: self.partition,
                from,
                upto,
            }],
            released: self.release_waiters(upto),
            forwarded,
            ..Answer::default()
        }
    }

    /// The records below `upto` went to `node`, whose answer was lost: park them and let
    /// the rest move on. Their waiters are released: the records are durable here.
    fn park(
        &mut self,
        node: String,
        incarnation: String,
        advertise: String,
        upto: u64,
    ) -> Answer<W> {
        let mut records = Vec::new();
        while self.queue.front().is_some_and(|r| r.seq < upto) {
            records.extend(self.queue.pop_front());
        }
        let Some(from) = records.first().map(|r| r.seq) else {
            return Answer::default();
        };
        let entry = Entry::InDoubt {
            partition: self.partition,
            from,
            upto,
            node: Source {
                node: node.clone(),
                incarnation: incarnation.clone(),
            }
            .to_key(),
        };
        let released = self.release_waiters(upto);
        self.parked.push(Parked {
            node,
            incarnation,
            advertise,
            records,
            asking: false,
            replaced_since: None,
        });
        Answer {
            entries: vec![entry],
            released,
            ..Answer::default()
        }
    }

    /// The answer about the parked batch being asked about: the node holds those numbered
    /// below what it says; the others are staged again under new numbers (above anything
    /// shipped since), removed under the old ones in the same write. No answer: ask again
    /// after a pause.
    fn settle(
        &mut self,
        now: Instant,
        upto: u64,
        result: &ShipResult,
        answered_by: Option<&str>,
    ) -> Answer<W> {
        let Some(i) = self.parked.iter().position(|b| b.asking) else {
            return Answer::default();
        };
        // Another incarnation answering (the same address, a new volume) knows nothing of
        // this batch: that is no answer. A node that does not name its incarnation is the
        // first one.
        let from_holder = answered_by.unwrap_or("") == self.parked[i].incarnation;
        let result = if from_holder {
            result
        } else {
            &ShipResult::Retry("answered by another incarnation".into())
        };
        let taken_upto = match result {
            ShipResult::Taken => upto,
            ShipResult::NotOwner { taken_upto, .. } => *taken_upto,
            _ => {
                self.parked[i].asking = false;
                self.not_before = Some(now + SHIP_BACKOFF);
                return Answer::default();
            }
        };
        let batch = self.parked.remove(i);
        let from = batch.records.first().map(|r| r.seq).unwrap_or(0);
        let upto = batch.records.last().map(|r| r.seq + 1).unwrap_or(0);
        let held_there = batch.records.iter().filter(|r| r.seq < taken_upto).count();
        let missing: Vec<Record> = batch
            .records
            .into_iter()
            .filter(|r| r.seq >= taken_upto)
            .map(Arc::unwrap_or_clone)
            .collect();
        let settled = Settled {
            node: batch.node,
            held_there,
            missing: missing.len(),
        };
        let mut entries = self.stage(missing);
        let staged_upto = (!entries.is_empty()).then_some(self.next_stage);
        entries.push(Entry::Forwarded {
            partition: self.partition,
            from,
            upto,
        });
        Answer {
            entries,
            staged_upto,
            released: Vec::new(),
            forwarded: held_there,
            settled: Some(settled),
        }
    }

    fn release_waiters(&mut self, upto: u64) -> Vec<W> {
        let mut out = Vec::new();
        while self.waiters.front().is_some_and(|(w, _)| *w <= upto) {
            out.extend(self.waiters.pop_front().map(|(_, w)| w));
        }
        if self.queue.is_empty() {
            self.handover_to = None;
        }
        out
    }
}

/// What of an import is new (see [`Imports::fresh`]).
#[derive(Debug)]
pub struct Fresh {
    /// The sender's records numbered below this were taken here before.
    pub watermark: u64,
    /// The batch's stage numbers end below this.
    pub upto: u64,
    /// The records at or above the watermark, in stage order.
    pub records: Vec<Record>,
}

/// The import watermarks (see module docs).
#[derive(Debug, Default)]
pub struct Imports {
    taken: HashMap<(Source, u32), u64>,
}

impl Imports {
    /// Restore a watermark from the journal (`source` in its persisted form).
    pub fn restore(&mut self, source: &str, partition: u32, upto: u64) {
        self.taken
            .insert((Source::from_key(source), partition), upto);
    }

    /// The sender's records of `partition` numbered below this were taken here.
    pub fn watermark(&self, source: &Source, partition: u32) -> u64 {
        self.taken
            .get(&(source.clone(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Drop what of a batch (in stage order) was taken before: a resend keeps only its
    /// fresh tail. Changes nothing: call [`Imports::took`] once the batch is taken.
    pub fn fresh(&self, source: &Source, partition: u32, records: Vec<Record>) -> Fresh {
        let watermark = self.watermark(source, partition);
        let upto = records.last().map(|r| r.seq + 1).unwrap_or(0);
        let records = records.into_iter().filter(|r| r.seq >= watermark).collect();
        Fresh {
            watermark,
            upto,
            records,
        }
    }

    /// The sender's records of `partition` below `upto` are taken: the `Imported` entry to
    /// journal with them, if the watermark moved.
    pub fn took(&mut self, source: &Source, partition: u32, upto: u64) -> Option<Entry> {
        let mark = self.taken.entry((source.clone(), partition)).or_insert(0);
        if upto <= *mark {
            return None;
        }
        *mark = upto;
        Some(Entry::Imported {
            source: source.to_key(),
            partition,
            upto,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 3;

    fn record(i: u64) -> Record {
        let text: Arc<str> = Arc::from(format!("{{\"k\":{i}}}"));
        Record {
            partition: P,
            seq: 1000 + i,
            accepted_ms: 1,
            first_attempt_ms: 0,
            attempts: 0,
            splice: true,
            id: Arc::from(format!("\"id{i}\"")),
            key: Arc::from(i.to_string()),
            canonical: Arc::from(i.to_string()),
            text,
            decided: None,
            steps: Vec::new(),
        }
    }

    fn records(range: std::ops::Range<u64>) -> Vec<Record> {
        range.map(record).collect()
    }

    fn ids(records: &[Arc<Record>]) -> Vec<String> {
        records.iter().map(|r| r.id.to_string()).collect()
    }

    /// The answer `result` from the first incarnation of `node` about the batch below `upto`.
    fn answer(
        ob: &mut Outbox<u32>,
        now: Instant,
        node: &str,
        upto: u64,
        parked: bool,
        result: &ShipResult,
    ) -> Answer<u32> {
        let sent = Sent {
            node: node.into(),
            incarnation: String::new(),
            advertise: format!("http://{node}"),
            upto,
            parked,
        };
        ob.answer(now, &sent, Some(""), result)
    }

    fn incarnated(node: &str, incarnation: &str, advertise: &str) -> Option<Member> {
        Some(Member {
            node: node.into(),
            advertise: advertise.into(),
            state: "active".into(),
            incarnation: incarnation.into(),
        })
    }

    /// An outbox with `n` records parked on incarnation `old` of `b` (reached at `http://b`).
    fn parked_on_incarnation(n: u64) -> (Outbox<u32>, Instant) {
        let now = Instant::now();
        let mut ob = outbox(n).with_incarnation_wait(Duration::from_secs(10));
        let b = shipped(ob.pump(now, &remote("b", 1), "a", |n| {
            incarnated(n, "old", "http://b-old")
        }));
        assert_eq!(
            b.incarnation, "old",
            "a batch names the incarnation it goes to"
        );
        let a = ob.answer(
            now,
            &Sent {
                node: "b".into(),
                incarnation: b.incarnation.clone(),
                advertise: b.advertise.clone(),
                upto: b.upto,
                parked: false,
            },
            None,
            &ShipResult::InDoubt("reset".into()),
        );
        assert!(matches!(&a.entries[..], [Entry::InDoubt { node, .. }] if node == "b#old"));
        (ob, now)
    }

    #[test]
    fn a_batch_in_doubt_is_asked_of_the_incarnation_it_went_to_not_of_its_replacement() {
        let (mut ob, now) = parked_on_incarnation(3);
        let new = |n: &str| incarnated(n, "new", "http://b-new");
        let ask = ob.pump(now, &remote("b", 2), "a", new).ask.expect("asked");
        assert_eq!(
            ask.advertise, "http://b",
            "where the old one was reached: it answers there while it retires"
        );
        let sent = Sent {
            node: "b".into(),
            incarnation: ask.incarnation.clone(),
            advertise: ask.advertise.clone(),
            upto: ask.upto,
            parked: true,
        };
        // The replacement answering there knows nothing of the batch: no answer.
        let a = ob.answer(
            now,
            &sent,
            Some("new"),
            &ShipResult::NotOwner {
                why: "not mine".into(),
                taken_upto: 0,
            },
        );
        assert!(a.settled.is_none() && a.entries.is_empty(), "{a:?}");
        let ask = ob
            .pump(now + SHIP_BACKOFF, &remote("b", 2), "a", new)
            .ask
            .expect("asked again");
        let a = ob.answer(
            now,
            &Sent {
                upto: ask.upto,
                ..sent
            },
            Some("old"),
            &ShipResult::Taken,
        );
        assert_eq!(
            a.settled.map(|s| s.held_there),
            Some(3),
            "the old one holds them"
        );
    }

    #[test]
    fn the_replacement_of_a_parked_node_gets_newer_batches_at_once() {
        let (mut ob, now) = parked_on_incarnation(2);
        ob.stage(records(10..12));
        ob.durable(ob.next_stage());
        let new = |n: &str| incarnated(n, "new", "http://b-old");
        let p = ob.pump(now, &remote("b", 2), "a", new);
        let next = match p.next {
            Some(Next::Ship(b)) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!((next.incarnation.as_str(), next.records.len()), ("new", 2));
    }

    #[test]
    fn a_batch_parked_on_an_incarnation_that_never_answers_is_staged_again_after_the_wait() {
        let (mut ob, now) = parked_on_incarnation(3);
        // The replacement took the address: nobody to ask.
        let new = |n: &str| incarnated(n, "new", "http://b");
        assert!(ob.pump(now, &remote("b", 2), "a", new).ask.is_none());
        assert!(ob.give_up_parked(now + Duration::from_secs(9)).is_none());
        let a = ob
            .give_up_parked(now + Duration::from_secs(10))
            .expect("given up");
        assert_eq!(a.settled.as_ref().map(|s| s.missing), Some(3));
        assert!(a.staged_upto.is_some(), "staged again under new numbers");
        assert_eq!(ob.held(), 3, "nothing dropped");
    }

    fn member(node: &str) -> Option<Member> {
        ["a", "b", "c"].contains(&node).then(|| Member {
            node: node.into(),
            advertise: format!("http://{node}"),
            state: "active".into(),
            incarnation: String::new(),
        })
    }

    fn nobody(_: &str) -> Option<Member> {
        None
    }

    fn remote(node: &str, epoch: u64) -> Route {
        Route::Remote {
            node: node.into(),
            advertise: format!("http://{node}"),
            epoch,
        }
    }

    fn unavailable() -> Route {
        Route::Unavailable("failover".into())
    }

    /// Staged and durable.
    fn outbox(n: u64) -> Outbox<u32> {
        let mut ob = Outbox::new(P);
        let entries = ob.stage(records(0..n));
        assert_eq!(entries.len(), n as usize);
        ob.durable(ob.next_stage());
        ob
    }

    fn shipped(p: Pumped<u32>) -> Batch {
        match p.next {
            Some(Next::Ship(b)) => b,
            other => panic!("expected a batch to ship, got {other:?}"),
        }
    }

    #[test]
    fn staging_numbers_records_and_ships_only_what_is_durable() {
        let now = Instant::now();
        let mut ob: Outbox<u32> = Outbox::new(P);
        let entries = ob.stage(records(0..3));
        let seqs: Vec<u64> = entries
            .iter()
            .map(|e| match e {
                Entry::Staged(r) => r.seq,
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(ob.next_stage(), 3);
        let p = ob.pump(now, &remote("b", 7), "a", member);
        assert!(p.next.is_none(), "nothing is durable yet");
        ob.durable(2);
        let b = shipped(ob.pump(now, &remote("b", 7), "a", member));
        assert_eq!((b.upto, b.epoch, b.records.len()), (2, 7, 2));
        assert!(!b.handover && !b.parked);
        assert_eq!(b.advertise, "http://b");
        // One batch in flight per partition.
        ob.durable(3);
        assert!(!ob.may_move(now));
        assert!(ob.pump(now, &remote("b", 7), "a", member).next.is_none());
    }

    #[test]
    fn batches_are_bounded_in_records_and_bytes() {
        let now = Instant::now();
        let mut ob = outbox(SHIP_BATCH as u64 + 10);
        let b = shipped(ob.pump(now, &remote("b", 1), "a", member));
        assert_eq!(b.records.len(), SHIP_BATCH);
        let a = answer(&mut ob, now, "b", b.upto, false, &ShipResult::Taken);
        assert_eq!(a.forwarded, SHIP_BATCH);
        let b = shipped(ob.pump(now, &remote("b", 1), "a", member));
        assert_eq!(b.records.len(), 10);

        // Large records: the byte limit cuts the batch, but one record always goes.
        let mut ob: Outbox<u32> = Outbox::new(P);
        let big: Arc<str> = Arc::from("x".repeat(SHIP_BYTES / 3));
        let huge: Arc<str> = Arc::from("x".repeat(SHIP_BYTES * 2));
        let mut rs = records(0..5);
        for r in &mut rs[..4] {
            r.text = big.clone();
        }
        rs[4].text = huge;
        ob.stage(rs);
        ob.durable(5);
        let mut sizes = Vec::new();
        while let Some(Next::Ship(b)) = ob.pump(now, &remote("b", 1), "a", member).next {
            sizes.push(b.records.len());
            answer(&mut ob, now, "b", b.upto, false, &ShipResult::Taken);
        }
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn taken_removes_journals_forwarded_and_releases_waiters() {
        let now = Instant::now();
        let mut ob = outbox(0);
        ob.stage(records(0..2));
        ob.wait(2, 1);
        ob.stage(records(2..5));
        ob.wait(5, 2);
        ob.durable(2);
        let b = shipped(ob.pump(now, &remote("b", 1), "a", member));
        let a = answer(&mut ob, now, "b", b.upto, false, &ShipResult::Taken);
        assert_eq!(a.released, [1]);
        assert_eq!(a.forwarded, 2);
        assert!(matches!(
            a.entries[..],
            [Entry::Forwarded {
                partition: P,
                from: 0,
                upto: 2
            }]
        ));
        assert_eq!(ob.queued(), 3);
        ob.durable(5);
        let b = shipped(ob.pump(now, &remote("b", 1), "a", member));
        let a = answer(&mut ob, now, "b", b.upto, false, &ShipResult::Taken);
        assert_eq!(a.released, [2]);
        assert_eq!(ob.held(), 0);
    }

    #[test]
    fn a_refusal_backs_off_and_ships_the_same_records_again() {
        let now = Instant::now();
        let mut ob = outbox(3);
        let first = shipped(ob.pump(now, &remote("b", 1), "a", member));
        let why = ShipResult::NotOwner {
            why: "moved".into(),
            taken_upto: 0,
        };
        let a = answer(&mut ob, now, "b", first.upto, false, &why);
        assert!(a.entries.is_empty() && a.released.is_empty());
        assert!(!ob.may_move(now), "backing off");
        assert!(ob.pump(now, &remote("c", 2), "a", member).next.is_none());
        let later = now + SHIP_BACKOFF;
        assert!(ob.may_move(later));
        let again = shipped(ob.pump(later, &remote("c", 2), "a", member));
        assert_eq!(ids(&again.records), ids(&first.records));
        assert_eq!((again.node.as_str(), again.epoch), ("c", 2));
    }

    #[test]
    fn local_delivery_takes_durable_records_unless_a_batch_is_in_flight() {
        let now = Instant::now();
        let mut ob = outbox(4);
        ob.wait(4, 9);
        let b = shipped(ob.pump(now, &remote("b", 1), "a", member));
        assert_eq!(b.upto, 4);
        // The partition moved here while the batch is out: it may be taken there.
        assert!(ob.deliver().is_none());
        assert!(ob.pump(now, &Route::Local(5), "a", member).next.is_none());
        answer(
            &mut ob,
            now,
            "b",
            b.upto,
            false,
            &ShipResult::Retry("busy".into()),
        );
        let later = now + SHIP_BACKOFF;
        let Some(Next::Deliver(d)) = ob.pump(later, &Route::Local(5), "a", member).next else {
            panic!("expected a local delivery");
        };
        assert_eq!(d.records.len(), 4);
        assert_eq!(d.released, [9]);
        assert!(matches!(
            d.forwarded,
            Entry::Forwarded {
                partition: P,
                from: 0,
                upto: 4
            }
        ));
        assert_eq!(ob.held(), 0);
    }

    #[test]
    fn without_an_owner_records_go_to_the_handover_target_only() {
        let now = Instant::now();
        let mut ob = outbox(2);
        assert!(ob.pump(now, &unavailable(), "a", member).next.is_none());
        ob.set_handover_to("a".into());
        assert!(
            ob.pump(now, &unavailable(), "a", member).next.is_none(),
            "never to this node itself"
        );
        ob.set_handover_to("c".into());
        assert!(
            ob.pump(now, &unavailable(), "a", nobody).next.is_none(),
            "only to a member"
        );
        let b = shipped(ob.pump(now, &unavailable(), "a", member));
        assert_eq!((b.node.as_str(), b.epoch, b.handover), ("c", 0, true));
        answer(&mut ob, now, "c", b.upto, false, &ShipResult::Taken);
        assert_eq!(ob.handover_to(), None, "an empty outbox forgets the target");
    }

    /// Ships `0..n` to `node` and loses the answer.
    fn parked_outbox(n: u64, node: &str) -> (Outbox<u32>, Instant) {
        let now = Instant::now();
        let mut ob = outbox(n);
        ob.wait(n, 1);
        let b = shipped(ob.pump(now, &remote(node, 1), "a", member));
        let a = answer(
            &mut ob,
            now,
            node,
            b.upto,
            false,
            &ShipResult::InDoubt("reset".into()),
        );
        assert!(matches!(
            &a.entries[..],
            [Entry::InDoubt { partition: P, from: 0, upto, node: n }] if *upto == b.upto && n == node
        ));
        assert_eq!(a.released, [1], "parked records are durable here");
        (ob, now)
    }

    #[test]
    fn a_parked_node_is_asked_first_and_gets_nothing_newer_before_it_answered() {
        let (mut ob, now) = parked_outbox(3, "b");
        ob.stage(records(3..5));
        ob.durable(5);
        assert_eq!((ob.queued(), ob.held()), (2, 5));
        // "b" still owns the partition: it is asked about the parked batch, nothing else.
        let p = ob.pump(now, &remote("b", 1), "a", member);
        let ask = p.ask.expect("the parked batch is asked about");
        assert!(ask.parked);
        assert_eq!((ask.upto, ask.epoch, ask.records.len()), (3, 1, 3));
        assert!(p.next.is_none(), "nothing newer goes to the node asked");
        // Asked once at a time.
        assert!(ob.pump(now, &remote("b", 1), "a", member).ask.is_none());
        assert!(ob.may_move(now), "the queue may still move");
        // Another owner gets the rest meanwhile.
        let b = shipped(ob.pump(now, &remote("c", 2), "a", member));
        assert_eq!(b.records.len(), 2);
    }

    #[test]
    fn a_parked_node_not_a_member_is_not_asked() {
        let (mut ob, now) = parked_outbox(3, "z");
        let p = ob.pump(now, &remote("b", 1), "a", member);
        assert!(p.ask.is_none());
        assert!(p.next.is_none(), "nothing left in the queue");
    }

    #[test]
    fn settling_renumbers_what_the_node_does_not_hold() {
        let (mut ob, now) = parked_outbox(4, "b");
        ob.stage(records(4..6));
        ob.durable(6);
        let p = ob.pump(now, &remote("c", 2), "a", member);
        let ask = p.ask.clone().unwrap();
        assert_eq!(
            ask.epoch, 0,
            "b is asked, not believed to own the partition"
        );
        // The owner gets what was staged after the parked batch meanwhile.
        let b = shipped(p);
        assert_eq!(ids(&b.records), ["\"id4\"", "\"id5\""]);
        // "b" holds 0 and 1 (its watermark says 2), not 2 and 3.
        let said = ShipResult::NotOwner {
            why: "not the owner".into(),
            taken_upto: 2,
        };
        let a = answer(&mut ob, now, "b", ask.upto, true, &said);
        assert_eq!(
            a.settled,
            Some(Settled {
                node: "b".into(),
                held_there: 2,
                missing: 2
            })
        );
        assert_eq!(a.forwarded, 2);
        assert_eq!(a.staged_upto, Some(8));
        let restaged: Vec<(u64, String)> = a
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Staged(r) => Some((r.seq, r.id.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(
            restaged,
            [(6, "\"id2\"".to_string()), (7, "\"id3\"".to_string())],
            "new numbers above everything staged since"
        );
        assert!(matches!(
            a.entries.last(),
            Some(Entry::Forwarded {
                partition: P,
                from: 0,
                upto: 4
            })
        ));
        // Renumbered records ship once durable, after those staged before them.
        assert!(ob.pump(now, &remote("c", 2), "a", member).next.is_none());
        answer(&mut ob, now, "c", b.upto, false, &ShipResult::Taken);
        assert!(ob.pump(now, &remote("c", 2), "a", member).next.is_none());
        ob.durable(8);
        let b = shipped(ob.pump(now, &remote("c", 2), "a", member));
        assert_eq!(ids(&b.records), ["\"id2\"", "\"id3\""]);
        assert_eq!(b.upto, 8);
    }

    #[test]
    fn a_parked_batch_held_whole_is_settled_without_restaging() {
        let (mut ob, now) = parked_outbox(3, "b");
        let ask = ob.pump(now, &remote("b", 1), "a", member).ask.unwrap();
        let a = answer(&mut ob, now, "b", ask.upto, true, &ShipResult::Taken);
        assert_eq!(a.staged_upto, None);
        assert_eq!(a.forwarded, 3);
        assert!(matches!(
            a.entries[..],
            [Entry::Forwarded {
                from: 0,
                upto: 3,
                ..
            }]
        ));
        assert_eq!(ob.held(), 0);
    }

    #[test]
    fn a_parked_question_without_answer_is_asked_again_later() {
        let (mut ob, now) = parked_outbox(3, "b");
        let ask = ob.pump(now, &remote("b", 1), "a", member).ask.unwrap();
        let a = answer(
            &mut ob,
            now,
            "b",
            ask.upto,
            true,
            &ShipResult::InDoubt("reset".into()),
        );
        assert!(a.entries.is_empty() && a.settled.is_none());
        assert!(ob.pump(now, &remote("b", 1), "a", member).ask.is_none());
        let again = ob
            .pump(now + SHIP_BACKOFF, &remote("b", 1), "a", member)
            .ask;
        assert_eq!(again.map(|b| b.upto), Some(3));
        assert_eq!(ob.held(), 3);
    }

    #[test]
    fn restore_refills_the_queue_and_the_parked_batches() {
        let mut ob: Outbox<u32> = Outbox::new(P);
        ob.restore_next_stage(9);
        for (i, seq) in [4u64, 5, 6, 7].into_iter().enumerate() {
            let mut r = record(i as u64);
            r.seq = seq;
            ob.restore_staged(Arc::new(r));
        }
        ob.restore_in_doubt(5, 7, "b".into());
        assert_eq!((ob.queued(), ob.held()), (2, 4));
        let now = Instant::now();
        let p = ob.pump(now, &remote("c", 1), "a", member);
        assert_eq!(
            p.ask.as_ref().map(|b| (b.node.as_str(), b.upto)),
            Some(("b", 7))
        );
        let b = shipped(p);
        let seqs: Vec<u64> = b.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 7], "restored records are durable");
        assert_eq!(ob.stage(records(0..1)).len(), 1);
        assert_eq!(ob.next_stage(), 10);
    }

    fn stage_numbered(range: std::ops::Range<u64>) -> Vec<Record> {
        range
            .map(|i| {
                let mut r = record(i);
                r.seq = i;
                r
            })
            .collect()
    }

    #[test]
    fn resends_are_dropped_and_a_partial_resend_keeps_its_fresh_tail() {
        let mut imports = Imports::default();
        let a = Source::node("a");
        let f = imports.fresh(&a, P, stage_numbered(0..4));
        assert_eq!((f.watermark, f.upto, f.records.len()), (0, 4, 4));
        assert!(matches!(
            imports.took(&a, P, f.upto),
            Some(Entry::Imported { ref source, partition: P, upto: 4 }) if source == "a"
        ));
        let f = imports.fresh(&a, P, stage_numbered(0..4));
        assert!(f.records.is_empty(), "a whole resend is dropped");
        assert_eq!(imports.took(&a, P, f.upto), None, "nothing to journal");
        let f = imports.fresh(&a, P, stage_numbered(2..7));
        let seqs: Vec<u64> = f.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert_eq!(f.watermark, 4);
        imports.took(&a, P, f.upto);
        assert_eq!(imports.watermark(&a, P), 7);
        // Per partition and per node.
        assert_eq!(
            imports.fresh(&a, P + 1, stage_numbered(0..2)).records.len(),
            2
        );
        assert_eq!(
            imports
                .fresh(&Source::node("b"), P, stage_numbered(0..2))
                .records
                .len(),
            2
        );
    }

    #[test]
    fn a_batch_from_a_new_incarnation_is_never_dropped() {
        let mut imports = Imports::default();
        let old = Source {
            node: "a".into(),
            incarnation: "1".into(),
        };
        imports.took(&old, P, 1000);
        assert!(
            imports
                .fresh(&old, P, stage_numbered(0..10))
                .records
                .is_empty()
        );
        let new = Source {
            node: "a".into(),
            incarnation: "2".into(),
        };
        let f = imports.fresh(&new, P, stage_numbered(0..10));
        assert_eq!(
            f.records.len(),
            10,
            "stage numbers restart with an incarnation"
        );
        assert!(matches!(
            imports.took(&new, P, f.upto),
            Some(Entry::Imported { ref source, upto: 10, .. }) if source == "a#2"
        ));
        assert_eq!(imports.watermark(&old, P), 1000);
    }

    #[test]
    fn watermarks_restore_from_their_persisted_form() {
        let mut imports = Imports::default();
        imports.restore("a", P, 5);
        imports.restore("a#2", P, 9);
        assert_eq!(imports.watermark(&Source::node("a"), P), 5);
        let two = Source {
            node: "a".into(),
            incarnation: "2".into(),
        };
        assert_eq!(imports.watermark(&two, P), 9);
    }

    #[test]
    fn a_source_persists_as_its_node_id_without_incarnation() {
        let bare = Source::node("node-1.x_y");
        assert_eq!(bare.to_key(), "node-1.x_y");
        assert_eq!(Source::from_key("node-1.x_y"), bare);
        let full = Source {
            node: "node-1".into(),
            incarnation: "0193a-ff".into(),
        };
        assert_eq!(full.to_key(), "node-1#0193a-ff");
        assert_eq!(Source::from_key(&full.to_key()), full);
        assert_eq!(full.to_string(), full.to_key());
    }
}
