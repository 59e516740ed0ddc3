//! The per-partition in-flight queue: capacity bound, ordering release, deadlines.
//!
//! This is where "every accepted record reaches exactly one terminal outcome" is enforced
//! by construction:
//! - a record enters only through [`InFlightQueue::admit`], which takes ownership of it
//!   together with a deadline;
//! - it leaves only as a [`Released`] value, which only this module can build and which
//!   always carries exactly one outcome;
//! - [`InFlightQueue::complete`] accepts one outcome per record: a second one is handed back
//!   to the caller and never emitted;
//! - [`InFlightQueue::expire`] resolves every record past its deadline on its own, so a
//!   lookup that never answers (Flink's stuck `ResultFuture`) cannot keep a record forever.
//!
//! The queue is pure data: no runtime, no clock of its own (callers pass `now`), so the
//! ordering rules are property-tested without actors.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::settings::Mode;

/// A record that left the queue with its single outcome, in the order the mode allows.
#[derive(Debug)]
pub struct Released<T, O> {
    seq: u64,
    item: T,
    outcome: O,
}

impl<T, O> Released<T, O> {
    /// The partition sequence number the record was admitted with.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The record.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The record and its outcome.
    pub fn into_parts(self) -> (u64, T, O) {
        (self.seq, self.item, self.outcome)
    }
}

/// Why a record was not admitted; the record is handed back.
#[derive(Debug)]
pub enum AdmitError<T> {
    /// `capacity` records are already in the queue.
    Full(T),
    /// Sequence numbers must increase with every admission.
    SeqNotIncreasing(T),
}

struct Slot<T, O> {
    key: Arc<str>,
    deadline: Instant,
    item: T,
    outcome: Option<O>,
}

/// In-flight records of one partition, completed or not, up to `capacity`.
pub struct InFlightQueue<T, O> {
    mode: Mode,
    capacity: usize,
    slots: HashMap<u64, Slot<T, O>>,
    /// `ordered`: every admitted seq in admission order.
    order: VecDeque<u64>,
    /// `key_ordered`: admitted seqs per key in admission order.
    by_key: HashMap<Arc<str>, VecDeque<u64>>,
    released: Vec<Released<T, O>>,
    last_seq: Option<u64>,
    waiting: usize,
}

impl<T, O> InFlightQueue<T, O> {
    /// An empty queue for `mode` holding at most `capacity` records (at least 1).
    pub fn new(mode: Mode, capacity: usize) -> Self {
        InFlightQueue {
            mode,
            capacity: capacity.max(1),
            slots: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            order: VecDeque::new(),
            by_key: HashMap::default(),
            released: Vec::new(),
            last_seq: None,
            waiting: 0,
        }
    }

    /// Records in the queue (waiting or completed but held back by ordering).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No record in the queue.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records still waiting for their outcome.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether another record can be admitted.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.capacity
    }

    /// Take ownership of a record until it is released with an outcome.
    pub fn admit(
        &mut self,
        seq: u64,
        key: Arc<str>,
        deadline: Instant,
        item: T,
    ) -> Result<(), AdmitError<T>> {
        if !self.has_room() {
            return Err(AdmitError::Full(item));
        }
        if self.last_seq.is_some_and(|last| seq <= last) {
            return Err(AdmitError::SeqNotIncreasing(item));
        }
        self.last_seq = Some(seq);
        match self.mode {
            Mode::Ordered => self.order.push_back(seq),
            Mode::KeyOrdered => self.by_key.entry(key.clone()).or_default().push_back(seq),
            Mode::Unordered => {}
        }
        self.slots.insert(
            seq,
            Slot {
                key,
                deadline,
                item,
                outcome: None,
            },
        );
        self.waiting += 1;
        Ok(())
    }

    /// The record of `seq` while it still waits for an outcome (to count attempts, retry).
    pub fn waiting_item_mut(&mut self, seq: u64) -> Option<&mut T> {
        self.slots
            .get_mut(&seq)
            .filter(|s| s.outcome.is_none())
            .map(|s| &mut s.item)
    }

    /// The deadline of a waiting record.
    pub fn deadline(&self, seq: u64) -> Option<Instant> {
        self.slots
            .get(&seq)
            .filter(|s| s.outcome.is_none())
            .map(|s| s.deadline)
    }

    /// Give `seq` its outcome. A record gets one outcome only: for an unknown or already
    /// completed seq the outcome is handed back and nothing changes.
    pub fn complete(&mut self, seq: u64, outcome: O) -> Result<(), O> {
        let Some(slot) = self.slots.get_mut(&seq) else {
            return Err(outcome);
        };
        if slot.outcome.is_some() {
            return Err(outcome);
        }
        slot.outcome = Some(outcome);
        self.waiting -= 1;
        match self.mode {
            Mode::Unordered => self.release(seq),
            Mode::Ordered => {
                while let Some(&head) = self.order.front() {
                    if !self.is_done(head) {
                        break;
                    }
                    self.order.pop_front();
                    self.release(head);
                }
            }
            Mode::KeyOrdered => {
                let key = slot.key.clone();
                if let Some(q) = self.by_key.get_mut(&key) {
                    while let Some(&head) = q.front() {
                        if self.slots.get(&head).is_none_or(|s| s.outcome.is_none()) {
                            break;
                        }
                        q.pop_front();
                        let s = self.slots.remove(&head);
                        if let Some(s) = s {
                            self.released.push(Released {
                                seq: head,
                                item: s.item,
                                outcome: s.outcome.expect("checked done"),
                            });
                        }
                    }
                    if q.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Complete every waiting record whose deadline is at or before `now` with the outcome
    /// `timeout` builds for it. Returns how many expired.
    pub fn expire(&mut self, now: Instant, mut timeout: impl FnMut(u64, &T) -> O) -> usize {
        let due: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.outcome.is_none() && s.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        let mut due = due;
        due.sort_unstable();
        for seq in &due {
            let outcome = timeout(*seq, &self.slots[seq].item);
            // Cannot fail: the slot exists and waits.
            let _ = self.complete(*seq, outcome);
        }
        due.len()
    }

    /// The earliest deadline among waiting records.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.outcome.is_none())
            .map(|s| s.deadline)
            .min()
    }

    /// Take every record out, released or not, in seq order, and forget the seq
    /// watermark: the partition is leaving this node (its records are handed over from the
    /// journal) and may come back later with any seqs.
    pub fn evict_all(&mut self) -> Vec<(u64, T)> {
        let mut out: Vec<(u64, T)> = self.slots.drain().map(|(seq, s)| (seq, s.item)).collect();
        out.extend(self.released.drain(..).map(|r| (r.seq, r.item)));
        out.sort_unstable_by_key(|(seq, _)| *seq);
        self.order.clear();
        self.by_key.clear();
        self.last_seq = None;
        self.waiting = 0;
        out
    }

    /// Move out everything released so far, in release order.
    pub fn drain_released(&mut self, out: &mut Vec<Released<T, O>>) {
        out.append(&mut self.released);
    }

    fn is_done(&self, seq: u64) -> bool {
        self.slots.get(&seq).is_some_and(|s| s.outcome.is_some())
    }

    fn release(&mut self, seq: u64) {
        if let Some(s) = self.slots.remove(&seq)
            && let Some(outcome) = s.outcome
        {
            self.released.push(Released {
                seq,
                item: s.item,
                outcome,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn key(k: u8) -> Arc<str> {
        Arc::from(format!("k{k}"))
    }

    #[test]
    fn capacity_and_seq_order_are_enforced() {
        let now = Instant::now();
        let mut q: InFlightQueue<u8, ()> = InFlightQueue::new(Mode::Ordered, 2);
        q.admit(1, key(0), now, 1).unwrap();
        assert!(matches!(
            q.admit(1, key(0), now, 9),
            Err(AdmitError::SeqNotIncreasing(9))
        ));
        q.admit(2, key(0), now, 2).unwrap();
        assert!(matches!(
            q.admit(3, key(0), now, 3),
            Err(AdmitError::Full(3))
        ));
    }

    #[test]
    fn a_second_outcome_is_refused() {
        let now = Instant::now();
        let mut q: InFlightQueue<u8, &str> = InFlightQueue::new(Mode::Unordered, 4);
        q.admit(0, key(0), now, 0).unwrap();
        assert_eq!(q.complete(0, "ok"), Ok(()));
        assert_eq!(q.complete(0, "again"), Err("again"));
        assert_eq!(q.complete(7, "unknown"), Err("unknown"));
        let mut out = Vec::new();
        q.drain_released(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn ordered_holds_back_until_the_head_completes() {
        let now = Instant::now();
        let mut q: InFlightQueue<u8, u8> = InFlightQueue::new(Mode::Ordered, 8);
        for s in 0..3 {
            q.admit(s, key(0), now, s as u8).unwrap();
        }
        q.complete(2, 2).unwrap();
        q.complete(1, 1).unwrap();
        let mut out = Vec::new();
        q.drain_released(&mut out);
        assert!(out.is_empty());
        assert!(!q.has_room() || q.len() == 3);
        q.complete(0, 0).unwrap();
        q.drain_released(&mut out);
        assert_eq!(
            out.iter().map(|r| r.seq()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn expiry_resolves_records_whose_lookup_never_answers() {
        let t0 = Instant::now();
        let mut q: InFlightQueue<u8, &str> = InFlightQueue::new(Mode::Ordered, 8);
        q.admit(0, key(0), t0 + Duration::from_millis(10), 0)
            .unwrap();
        q.admit(1, key(0), t0 + Duration::from_millis(20), 1)
            .unwrap();
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(
            q.expire(t0 + Duration::from_millis(15), |_, _| "timeout"),
            1
        );
        q.complete(1, "ok").unwrap();
        let mut out = Vec::new();
        q.drain_released(&mut out);
        let got: Vec<(u64, &str)> = out.into_iter().map(|r| (r.seq, r.outcome)).collect();
        assert_eq!(got, vec![(0, "timeout"), (1, "ok")]);
        assert_eq!(q.expire(t0 + Duration::from_secs(9), |_, _| "timeout"), 0);
    }

    /// A scenario: records (key) admitted in seq order into a queue of `capacity`, a random
    /// completion order, some records never completed (they must expire).
    fn run(
        mode: Mode,
        capacity: usize,
        keys: &[u8],
        picks: &[usize],
        lost: &[bool],
    ) -> Vec<(u64, u8)> {
        let t0 = Instant::now();
        let mut q: InFlightQueue<u8, bool> = InFlightQueue::new(mode, capacity);
        let mut next = 0usize;
        let mut pending: Vec<u64> = Vec::new();
        let mut out = Vec::new();
        let mut emitted = Vec::new();
        let mut step = 0usize;
        while next < keys.len() || !q.is_empty() {
            while next < keys.len() && q.has_room() {
                let seq = next as u64 * 3; // gaps in seq are allowed
                q.admit(
                    seq,
                    key(keys[next]),
                    t0 + Duration::from_secs(1),
                    keys[next],
                )
                .unwrap();
                if !lost[next] {
                    pending.push(seq);
                }
                next += 1;
            }
            if pending.is_empty() {
                q.expire(t0 + Duration::from_secs(2), |_, _| false);
            } else {
                let i = picks[step % picks.len()] % pending.len();
                let seq = pending.swap_remove(i);
                q.complete(seq, true).unwrap();
            }
            step += 1;
            q.drain_released(&mut out);
            for r in out.drain(..) {
                let (seq, k, _) = r.into_parts();
                emitted.push((seq, k));
            }
        }
        emitted
    }

    fn check_common(keys: &[u8], emitted: &[(u64, u8)]) {
        assert_eq!(emitted.len(), keys.len(), "nothing lost");
        let seen: HashSet<u64> = emitted.iter().map(|(s, _)| *s).collect();
        assert_eq!(seen.len(), keys.len(), "nothing emitted twice");
    }

    proptest! {
        #[test]
        fn ordered_emits_strictly_by_seq(
            keys in proptest::collection::vec(0u8..5, 1..200),
            picks in proptest::collection::vec(any::<usize>(), 1..50),
            lost in proptest::collection::vec(proptest::bool::weighted(0.05), 200),
            capacity in 1usize..20,
        ) {
            let emitted = run(Mode::Ordered, capacity, &keys, &picks, &lost);
            check_common(&keys, &emitted);
            prop_assert!(emitted.windows(2).all(|w| w[0].0 < w[1].0));
        }

        #[test]
        fn key_ordered_keeps_each_key_in_order(
            keys in proptest::collection::vec(0u8..5, 1..200),
            picks in proptest::collection::vec(any::<usize>(), 1..50),
            lost in proptest::collection::vec(proptest::bool::weighted(0.05), 200),
            capacity in 1usize..20,
        ) {
            let emitted = run(Mode::KeyOrdered, capacity, &keys, &picks, &lost);
            check_common(&keys, &emitted);
            for k in 0u8..5 {
                let seqs: Vec<u64> = emitted.iter().filter(|(_, kk)| *kk == k).map(|(s, _)| *s).collect();
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {k}: {seqs:?}");
            }
        }

        #[test]
        fn unordered_emits_everything_once(
            keys in proptest::collection::vec(0u8..5, 1..200),
            picks in proptest::collection::vec(any::<usize>(), 1..50),
            lost in proptest::collection::vec(proptest::bool::weighted(0.05), 200),
            capacity in 1usize..20,
        ) {
            let emitted = run(Mode::Unordered, capacity, &keys, &picks, &lost);
            check_common(&keys, &emitted);
        }
    }

    #[test]
    fn unordered_releases_in_completion_order() {
        let emitted = run(Mode::Unordered, 10, &[0, 0, 0], &[2, 0, 0], &[false; 3]);
        assert_eq!(
            emitted.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![6, 0, 3]
        );
    }

    #[test]
    fn evict_all_empties_the_queue_and_resets_the_seq_watermark() {
        let t0 = Instant::now() + std::time::Duration::from_secs(60);
        let mut q: InFlightQueue<u32, u32> = InFlightQueue::new(Mode::Ordered, 4);
        assert!(q.admit(5, Arc::from("k"), t0, 50).is_ok());
        assert!(q.admit(6, Arc::from("k"), t0, 60).is_ok());
        assert!(q.complete(5, 1).is_ok());
        let out = q.evict_all();
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![5, 6]);
        assert!(q.is_empty() && q.has_room() && q.waiting() == 0);
        assert!(
            q.admit(1, Arc::from("k"), t0, 10).is_ok(),
            "lower seqs admitted again"
        );
    }
}
