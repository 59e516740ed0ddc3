//! The durable state — pending records, next seq per partition, committed sink offsets —
//! as a fold over journal entries. The same fold runs in the journal thread (live) and on
//! restore (snapshot + replay), so both agree by construction.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::codec::Entry;
use crate::record::{Record, StepMark};

/// Seqs handed out per lease; a restart continues above the last lease, never below.
pub const LEASE: u64 = 1 << 20;

/// What is pending and where each partition and sink stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Accepted, not yet committed as terminal; keyed (partition, seq) so iteration is in
    /// seq order per partition. Shared so a snapshot can take a copy of the map without
    /// copying the records.
    pub pending: BTreeMap<(u32, u64), Arc<Record>>,
    /// Per partition: no seq below this was ever handed out twice.
    pub next_seq: BTreeMap<u32, u64>,
    /// Output sink length covered by committed terminal marks.
    pub output_offset: u64,
    /// Dead-letter sink length covered by committed terminal marks.
    pub dead_letter_offset: u64,
    /// Whether any committed offsets were ever recorded (a fresh directory has none).
    pub has_offsets: bool,
    /// The files the committed offsets are of, by (device, inode); `None`: not recorded
    /// (older journals) or not a file sink.
    pub output_file: Option<(u64, u64)>,
    pub dead_letter_file: Option<(u64, u64)>,
    /// Cluster: records held for partitions owned elsewhere, keyed (partition, stage
    /// number), waiting to be forwarded in that order.
    pub staged: BTreeMap<(u32, u64), Arc<Record>>,
    /// Cluster: next stage number per partition (never reused: the owner drops resends
    /// below its watermark).
    pub next_stage: BTreeMap<u32, u64>,
    /// Cluster: per (source node, partition), stage numbers below this were imported.
    pub imported: BTreeMap<(String, u32), u64>,
    /// Cluster: the newest ownership epoch this node wrote under, per partition.
    pub epochs: BTreeMap<u32, u64>,
    /// Cluster: staged ranges whose forward's answer was lost, keyed (partition, from):
    /// (upto, the node that may hold them).
    pub in_doubt: BTreeMap<(u32, u64), (u64, String)>,
}

/// Step `step`'s mark in `r`, the marks grown to reach it.
fn step_mark(r: &mut Record, step: u16) -> &mut StepMark {
    let i = usize::from(step);
    if r.steps.len() <= i {
        r.steps.resize(i + 1, StepMark::default());
    }
    &mut r.steps[i]
}

impl State {
    /// Apply one entry.
    pub fn apply(&mut self, e: Entry) {
        match e {
            Entry::Accepted(r) => {
                // Saturating: a damaged (or crafted) journal may hold `u64::MAX`.
                self.bump(r.partition, r.seq.saturating_add(1));
                self.pending.insert((r.partition, r.seq), Arc::new(r));
            }
            Entry::Started {
                partition,
                seq,
                first_attempt_ms,
            } => {
                if let Some(r) = self.pending.get_mut(&(partition, seq)) {
                    Arc::make_mut(r).first_attempt_ms = first_attempt_ms;
                }
            }
            Entry::Attempted {
                partition,
                seq,
                attempts,
            } => {
                if let Some(r) = self.pending.get_mut(&(partition, seq))
                    && attempts > r.attempts
                {
                    Arc::make_mut(r).attempts = attempts;
                }
            }
            Entry::StepAttempted {
                partition,
                seq,
                step,
                attempts,
            } => {
                if let Some(r) = self.pending.get_mut(&(partition, seq)) {
                    let r = Arc::make_mut(r);
                    let mark = step_mark(r, step);
                    mark.attempts = mark.attempts.max(attempts);
                    r.attempts = r.steps.iter().map(|m| m.attempts).sum();
                }
            }
            Entry::StepDone {
                partition,
                seq,
                step,
                done,
            } => {
                if let Some(r) = self.pending.get_mut(&(partition, seq)) {
                    step_mark(Arc::make_mut(r), step).done = Some(done);
                }
            }
            Entry::Committed {
                marks,
                output,
                dead_letter,
            } => {
                for key in &marks {
                    self.pending.remove(key);
                }
                self.output_offset = output;
                self.dead_letter_offset = dead_letter;
                self.has_offsets = true;
            }
            Entry::SeqLease { partition, upto } => self.bump(partition, upto),
            Entry::SinkFiles {
                output,
                dead_letter,
            } => {
                self.output_file = output;
                self.dead_letter_file = dead_letter;
            }
            Entry::Decided {
                partition,
                seq,
                decided,
            } => {
                if let Some(r) = self.pending.get_mut(&(partition, seq)) {
                    Arc::make_mut(r).decided = Some(decided);
                }
            }
            Entry::Staged(r) => {
                let n = self.next_stage.entry(r.partition).or_insert(0);
                *n = (*n).max(r.seq.saturating_add(1));
                self.staged.insert((r.partition, r.seq), Arc::new(r));
            }
            Entry::StageLease { partition, upto } => {
                let n = self.next_stage.entry(partition).or_insert(0);
                *n = (*n).max(upto);
            }
            Entry::Forwarded {
                partition,
                from,
                upto,
            } => {
                let gone: Vec<_> = self
                    .staged
                    .range((partition, from)..(partition, upto.max(from)))
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    self.staged.remove(&k);
                }
                let settled: Vec<_> = self
                    .in_doubt
                    .range((partition, from)..(partition, upto.max(from)))
                    .map(|(k, _)| *k)
                    .collect();
                for k in settled {
                    self.in_doubt.remove(&k);
                }
            }
            Entry::InDoubt {
                partition,
                from,
                upto,
                node,
            } => {
                self.in_doubt.insert((partition, from), (upto, node));
            }
            Entry::Handed { marks } => {
                for key in &marks {
                    self.pending.remove(key);
                }
            }
            Entry::Imported {
                source,
                partition,
                upto,
            } => {
                let w = self.imported.entry((source, partition)).or_insert(0);
                *w = (*w).max(upto);
            }
            Entry::Owned { partition, epoch } => {
                let e = self.epochs.entry(partition).or_insert(0);
                *e = (*e).max(epoch);
            }
        }
    }

    /// The pending records of one partition, in seq order (what a handover exports).
    pub fn pending_of(&self, partition: u32) -> Vec<Arc<Record>> {
        self.pending
            .range((partition, 0)..=(partition, u64::MAX))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The staged records of one partition, in stage order.
    pub fn staged_of(&self, partition: u32) -> Vec<Arc<Record>> {
        self.staged
            .range((partition, 0)..=(partition, u64::MAX))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The next stage number of `partition`.
    pub fn next_stage_of(&self, partition: u32) -> u64 {
        self.next_stage.get(&partition).copied().unwrap_or(0)
    }

    fn bump(&mut self, partition: u32, at_least: u64) {
        let n = self.next_seq.entry(partition).or_insert(0);
        *n = (*n).max(at_least);
    }

    /// The next seq of `partition`.
    pub fn next_seq_of(&self, partition: u32) -> u64 {
        self.next_seq.get(&partition).copied().unwrap_or(0)
    }

    /// Pending records per partition.
    pub fn pending_per_partition(&self) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for (p, _) in self.pending.keys() {
            *m.entry(*p).or_insert(0) += 1;
        }
        m
    }

    /// The state's bookkeeping as entries (leases, offsets); a snapshot stores these and
    /// then every pending record.
    pub fn header_entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .next_seq
            .iter()
            .map(|(p, n)| Entry::SeqLease {
                partition: *p,
                upto: *n,
            })
            .collect();
        if self.output_file.is_some() || self.dead_letter_file.is_some() {
            out.push(Entry::SinkFiles {
                output: self.output_file,
                dead_letter: self.dead_letter_file,
            });
        }
        if self.has_offsets {
            out.push(Entry::Committed {
                marks: Vec::new(),
                output: self.output_offset,
                dead_letter: self.dead_letter_offset,
            });
        }
        // Stage counters survive even when nothing is staged: a stage number is never
        // reused, or the owner would drop a new record as a resend.
        for (p, n) in &self.next_stage {
            out.push(Entry::StageLease {
                partition: *p,
                upto: *n,
            });
        }
        for ((source, p), upto) in &self.imported {
            out.push(Entry::Imported {
                source: source.clone(),
                partition: *p,
                upto: *upto,
            });
        }
        for ((p, from), (upto, node)) in &self.in_doubt {
            out.push(Entry::InDoubt {
                partition: *p,
                from: *from,
                upto: *upto,
                node: node.clone(),
            });
        }
        for (p, epoch) in &self.epochs {
            out.push(Entry::Owned {
                partition: *p,
                epoch: *epoch,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StepDone;

    fn accepted(partition: u32, seq: u64) -> Entry {
        crate::durability::codec::test_accepted(partition, seq)
    }

    #[test]
    fn the_largest_seq_does_not_overflow_the_fold() {
        // Found by fuzzing (journal_decode): an Accepted or Staged frame with seq u64::MAX
        // (partition 0, attempts 0, id "r", key "k") panicked with an overflow in a build
        // with overflow checks.
        let frame: &[u8] = b"H\x00\x00\x00\xef\xc0^\x9a\x01\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x03\x00\x00\
            \x00\"r\"\x03\x00\x00\x00\"k\"\x01\x00\x00\x00k\x0f\x00\x00\x00{\"user_id\":\"k\"}";
        let (accepted, n) =
            crate::durability::codec::decode(frame, crate::durability::codec::Layout::V1).unwrap();
        assert_eq!(n, frame.len());
        let mut s = State::default();
        s.apply(accepted.clone());
        assert_eq!(s.next_seq_of(0), u64::MAX);
        assert_eq!(s.pending_of(0).len(), 1);
        let Entry::Accepted(r) = accepted else {
            panic!("not an Accepted frame")
        };
        s.apply(Entry::Staged(r));
        assert_eq!(s.next_stage_of(0), u64::MAX);
    }

    #[test]
    fn fold_tracks_pending_attempts_offsets_and_seqs() {
        let mut s = State::default();
        for e in [
            accepted(0, 0),
            accepted(0, 1),
            accepted(1, 5),
            Entry::Started {
                partition: 0,
                seq: 1,
                first_attempt_ms: 9,
            },
            Entry::Attempted {
                partition: 0,
                seq: 1,
                attempts: 2,
            },
            Entry::Committed {
                marks: vec![(0, 0)],
                output: 40,
                dead_letter: 3,
            },
            Entry::SeqLease {
                partition: 2,
                upto: 100,
            },
        ] {
            s.apply(e);
        }
        assert_eq!(s.pending.len(), 2);
        let r = &s.pending[&(0, 1)];
        assert_eq!((r.first_attempt_ms, r.attempts), (9, 2));
        assert_eq!((s.output_offset, s.dead_letter_offset), (40, 3));
        assert_eq!(
            (s.next_seq_of(0), s.next_seq_of(1), s.next_seq_of(2)),
            (2, 6, 100)
        );
        assert_eq!(s.pending_per_partition()[&0], 1);
    }

    #[test]
    fn snapshot_entries_rebuild_the_same_state() {
        let mut s = State::default();
        for e in [
            accepted(0, 3),
            accepted(1, 1),
            Entry::Committed {
                marks: vec![],
                output: 7,
                dead_letter: 0,
            },
            staged(2, 0),
            staged(2, 1),
            Entry::Forwarded {
                partition: 2,
                from: 0,
                upto: 2,
            },
            Entry::Imported {
                source: "b".into(),
                partition: 0,
                upto: 9,
            },
            staged(3, 0),
            Entry::InDoubt {
                partition: 3,
                from: 0,
                upto: 1,
                node: "c".into(),
            },
            Entry::Owned {
                partition: 0,
                epoch: 5,
            },
        ] {
            s.apply(e);
        }
        assert_eq!(s.staged.len(), 1);
        assert_eq!(s.in_doubt.len(), 1);
        let mut t = State::default();
        for e in s.header_entries() {
            t.apply(e);
        }
        for r in s.pending.values() {
            t.apply(Entry::Accepted((**r).clone()));
        }
        for r in s.staged.values() {
            t.apply(Entry::Staged((**r).clone()));
        }
        assert_eq!(s, t);
        assert_eq!(t.next_stage_of(2), 2, "stage numbers are never reused");
    }

    fn staged(partition: u32, seq: u64) -> Entry {
        match accepted(partition, seq) {
            Entry::Accepted(r) => Entry::Staged(r),
            e => e,
        }
    }

    #[test]
    fn one_partition_is_exported_handed_and_forwarded_alone() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            accepted(1, 2),
            accepted(1, 3),
            accepted(2, 4),
            staged(1, 0),
            staged(1, 1),
            staged(3, 0),
        ] {
            s.apply(e);
        }
        let export: Vec<u64> = s.pending_of(1).iter().map(|r| r.seq).collect();
        assert_eq!(export, vec![2, 3]);
        s.apply(Entry::Handed {
            marks: vec![(1, 2), (1, 3)],
        });
        assert!(s.pending_of(1).is_empty());
        assert_eq!(s.pending.len(), 2, "other partitions untouched");
        s.apply(Entry::Forwarded {
            partition: 1,
            from: 0,
            upto: 1,
        });
        let left: Vec<u64> = s.staged_of(1).iter().map(|r| r.seq).collect();
        assert_eq!(left, vec![1]);
        assert_eq!(s.staged_of(3).len(), 1);
    }

    fn step_attempted(seq: u64, step: u16, attempts: u32) -> Entry {
        Entry::StepAttempted {
            partition: 0,
            seq,
            step,
            attempts,
        }
    }

    fn step_done(seq: u64, step: u16, done: StepDone) -> Entry {
        Entry::StepDone {
            partition: 0,
            seq,
            step,
            done,
        }
    }

    #[test]
    fn step_attempts_are_kept_per_step_and_summed_on_the_record() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            step_attempted(1, 0, 1),
            step_attempted(1, 2, 1),
            step_attempted(1, 2, 2),
            step_done(1, 0, StepDone::Found("{\"a\":1}".into())),
        ] {
            s.apply(e);
        }
        let r = &s.pending[&(0, 1)];
        assert_eq!(
            r.steps,
            vec![
                StepMark {
                    attempts: 1,
                    done: Some(StepDone::Found("{\"a\":1}".into()))
                },
                StepMark::default(),
                StepMark {
                    attempts: 2,
                    done: None
                },
            ]
        );
        assert_eq!(r.attempts, 3, "the record's attempts are the steps' sum");
    }

    #[test]
    fn an_older_step_attempt_arriving_late_keeps_the_larger_count() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            step_attempted(1, 1, 3),
            step_attempted(1, 1, 2),
            step_attempted(1, 0, 1),
            step_attempted(1, 1, 1),
        ] {
            s.apply(e);
        }
        let r = &s.pending[&(0, 1)];
        assert_eq!(
            r.steps.iter().map(|m| m.attempts).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(r.attempts, 4);
    }

    #[test]
    fn a_step_result_is_kept_whatever_the_attempts_and_the_last_one_wins() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            step_done(1, 1, StepDone::Skipped),
            step_done(1, 0, StepDone::Miss),
            step_done(1, 0, StepDone::Found("{}".into())),
        ] {
            s.apply(e);
        }
        let r = &s.pending[&(0, 1)];
        assert_eq!(r.steps[0].done, Some(StepDone::Found("{}".into())));
        assert_eq!(r.steps[1].done, Some(StepDone::Skipped));
        assert_eq!(r.attempts, 0, "a result alone begins no attempt");
    }

    #[test]
    fn step_entries_for_records_not_pending_change_nothing() {
        let mut s = State::default();
        for e in [accepted(0, 1), staged(0, 7)] {
            s.apply(e);
        }
        let before = s.clone();
        for e in [
            step_attempted(2, 0, 1),
            step_done(2, 0, StepDone::Miss),
            // Seq 7 is a stage number of a staged record, not a pending one.
            step_attempted(7, 0, 1),
            step_done(7, 1, StepDone::Skipped),
            Entry::StepAttempted {
                partition: 5,
                seq: 1,
                step: 0,
                attempts: 1,
            },
        ] {
            s.apply(e);
        }
        assert_eq!(s, before);
        assert!(s.pending.values().all(|r| r.steps.is_empty()));
    }

    #[test]
    fn a_committed_or_handed_record_goes_with_its_step_marks_and_later_entries_are_ignored() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            accepted(0, 2),
            step_attempted(1, 0, 1),
            step_done(1, 0, StepDone::Miss),
            step_attempted(2, 0, 2),
            Entry::Committed {
                marks: vec![(0, 1)],
                output: 10,
                dead_letter: 0,
            },
            Entry::Handed {
                marks: vec![(0, 2)],
            },
            step_attempted(1, 1, 1),
            step_done(2, 0, StepDone::Skipped),
        ] {
            s.apply(e);
        }
        assert!(s.pending.is_empty());
        assert_eq!(s.next_seq_of(0), 3);
    }

    #[test]
    fn step_marks_go_with_a_record_restaged_for_a_handover() {
        let mut s = State::default();
        for e in [
            accepted(0, 1),
            step_attempted(1, 0, 1),
            step_done(1, 0, StepDone::Found("{}".into())),
            step_attempted(1, 1, 2),
        ] {
            s.apply(e);
        }
        let r = (*s.pending[&(0, 1)]).clone();
        // Restaged for another owner (a handover): the record goes as it is.
        let mut t = State::default();
        t.apply(Entry::Staged(r.clone()));
        assert_eq!(t.staged[&(0, 1)].steps, r.steps);
        assert_eq!(t.staged[&(0, 1)].attempts, 3);
    }
}
