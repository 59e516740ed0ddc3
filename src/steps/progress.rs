//! One record's way through the pipeline's steps: which steps are due, which run, each
//! one's attempts and result, and when the record has its one terminal outcome. Pure (no
//! clock, no I/O): the partition actor asks what is due, starts those lookups and reports
//! how each attempt ended.
//!
//! A step is due once every step it depends on found its row or missed with
//! `on_miss = "emit"`; a step depending on a skipped step, or on one that missed with
//! `skip_dependents`, is skipped without a lookup. A failed or timed-out step, or a miss
//! with `on_miss = "dead_letter"`, ends the record at once: nothing more is started.

use std::sync::Arc;

use smallvec::SmallVec;

use super::graph::{Graph, MissRule};
use crate::record::{StepDone, StepMark};

/// Where one step stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not started (its sources are not done yet, or it was not due yet).
    Waiting,
    /// An attempt is in flight.
    Running,
    /// Between attempts (a retry is scheduled).
    Backoff,
    /// Found: the row's JSON text.
    Found(Arc<str>),
    /// Looked up, no row.
    Missed,
    /// Not looked up: a bind read `null`, or a source step was skipped / missed with
    /// `skip_dependents`.
    Skipped,
    /// Ended the record: failed for good (the message says why).
    Failed(Box<str>),
    /// Ended the record: its last attempt timed out or the record's deadline passed.
    TimedOut(Box<str>),
}

impl Status {
    /// Whether the step is over (a result, a skip, or an end of the record).
    pub fn is_over(&self) -> bool {
        !matches!(self, Status::Waiting | Status::Running | Status::Backoff)
    }

    /// The name of the step's outcome in the envelope's `steps` member; a step the record
    /// did not wait for (it ended first) is `skipped`.
    pub fn outcome_name(&self) -> &'static str {
        match self {
            Status::Found(_) => "ok",
            Status::Missed => "miss",
            Status::Failed(_) => "failed",
            Status::TimedOut(_) => "timeout",
            Status::Waiting | Status::Running | Status::Backoff | Status::Skipped => "skipped",
        }
    }
}

/// One step's attempts and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub attempts: u32,
    pub status: Status,
}

/// How one step ended, as the partition reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Found(Arc<str>),
    Miss,
    /// A bind that reads an earlier result found `null` or nothing: not looked up.
    Skipped,
    Failed(String),
    TimedOut(String),
}

/// The record's terminal outcome, once it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every step found its row.
    Ok,
    /// Some step missed (emit / skip_dependents) or was skipped; none failed.
    Miss,
    /// Step `0` missed with `on_miss = "dead_letter"`.
    MissDeadLetter(usize),
    /// Step `.0` failed for good.
    Failed(usize, String),
    /// Step `.0` timed out.
    TimedOut(usize, String),
}

/// Why an operation does not fit the step's state (a late or duplicate report); the
/// partition ignores such reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the record already has its outcome")]
    Over,
    #[error("step {0} is not in a state that allows this")]
    State(usize),
}

/// A record's progress through the steps of a [`Graph`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Inline for one step (the single lookup: no allocation, and a small `Job` to move).
    slots: SmallVec<[Slot; 1]>,
    /// Set once a step ended the record (failed, timed out, dead-letter miss).
    ended: Option<u16>,
}

impl Progress {
    /// A record no step has touched.
    pub fn new(graph: &Graph) -> Self {
        Progress {
            slots: (0..graph.len())
                .map(|_| Slot {
                    attempts: 0,
                    status: Status::Waiting,
                })
                .collect(),
            ended: None,
        }
    }

    /// Resume from what the journal kept (`marks` by step index; missing ones are fresh):
    /// finished steps keep their result, the others their attempts.
    pub fn restore(graph: &Graph, marks: &[StepMark]) -> Self {
        let mut p = Progress::new(graph);
        for (slot, mark) in p.slots.iter_mut().zip(marks) {
            slot.attempts = mark.attempts;
            slot.status = match &mark.done {
                None => Status::Waiting,
                Some(StepDone::Found(row)) => Status::Found(row.clone()),
                Some(StepDone::Miss) => Status::Missed,
                Some(StepDone::Skipped) => Status::Skipped,
            };
        }
        // A skip that should have followed a restored miss or skip (its entry was lost).
        for i in 0..p.slots.len() {
            p.propagate(graph, i);
        }
        p
    }

    /// Set step `i`'s attempts so far (the single-lookup form keeps its count in the record).
    pub fn set_attempts(&mut self, i: usize, attempts: u32) {
        self.slots[i].attempts = attempts;
    }

    /// Step `i`'s slot.
    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    /// Every slot, by step index.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Attempts begun over all steps (the envelope's top-level `attempts`).
    pub fn attempts(&self) -> u32 {
        self.slots.iter().map(|s| s.attempts).sum()
    }

    /// Whether a step's source is far enough along for it to run.
    fn source_ready(&self, graph: &Graph, j: usize) -> bool {
        match self.slots[j].status {
            Status::Found(_) => true,
            Status::Missed => graph.miss_rule(j) == MissRule::Emit,
            _ => false,
        }
    }

    /// Whether every source of step `i` is far enough along for it to run.
    fn sources_ready(&self, graph: &Graph, i: usize) -> bool {
        let mut deps = graph.deps(i);
        while deps != 0 {
            let j = deps.trailing_zeros() as usize;
            if !self.source_ready(graph, j) {
                return false;
            }
            deps &= deps - 1;
        }
        true
    }

    /// Steps to start now: waiting, with every source done (none once the record ended).
    pub fn due(&self, graph: &Graph) -> SmallVec<[usize; 4]> {
        let mut due = SmallVec::new();
        if self.ended.is_some() {
            return due;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.status == Status::Waiting && self.sources_ready(graph, i) {
                due.push(i);
            }
        }
        due
    }

    /// Steps with an attempt in flight or a retry scheduled.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.status, Status::Running | Status::Backoff))
            .map(|(i, _)| i)
    }

    /// Begin the next attempt of step `i` (due or backing off); its number (1-based).
    pub fn begin(&mut self, graph: &Graph, i: usize) -> Result<u32, Refused> {
        if self.ended.is_some() {
            return Err(Refused::Over);
        }
        let waiting_ready = self.slots[i].status == Status::Waiting && self.sources_ready(graph, i);
        if !(waiting_ready || self.slots[i].status == Status::Backoff) {
            return Err(Refused::State(i));
        }
        let slot = &mut self.slots[i];
        slot.attempts += 1;
        slot.status = Status::Running;
        Ok(slot.attempts)
    }

    /// Step `i`'s attempt ended and another one follows later.
    pub fn back_off(&mut self, i: usize) -> Result<(), Refused> {
        if self.ended.is_some() {
            return Err(Refused::Over);
        }
        if self.slots[i].status != Status::Running {
            return Err(Refused::State(i));
        }
        self.slots[i].status = Status::Backoff;
        Ok(())
    }

    /// Step `i` ended so. A step may end while running, while backing off (the record's
    /// deadline), or while waiting (skipped, or restored with its attempts spent).
    pub fn finish(&mut self, graph: &Graph, i: usize, end: End) -> Result<(), Refused> {
        if self.ended.is_some() {
            return Err(Refused::Over);
        }
        if self.slots[i].status.is_over() {
            return Err(Refused::State(i));
        }
        let status = match end {
            End::Found(row) => Status::Found(row),
            End::Miss => {
                if graph.miss_rule(i) == MissRule::DeadLetter {
                    self.ended = Some(i as u16);
                }
                Status::Missed
            }
            End::Skipped => Status::Skipped,
            End::Failed(m) => {
                self.ended = Some(i as u16);
                Status::Failed(m.into())
            }
            End::TimedOut(m) => {
                self.ended = Some(i as u16);
                Status::TimedOut(m.into())
            }
        };
        self.slots[i].status = status;
        if self.ended.is_none() {
            self.propagate(graph, i);
        }
        Ok(())
    }

    /// After step `i` missed or was skipped: skip what can no longer run because of it.
    fn propagate(&mut self, graph: &Graph, i: usize) {
        let skip = match self.slots[i].status {
            Status::Skipped => true,
            Status::Missed => graph.miss_rule(i) == MissRule::SkipDependents,
            _ => false,
        };
        if !skip {
            return;
        }
        let down = graph.downstream(i);
        for (k, slot) in self.slots.iter_mut().enumerate() {
            if down & (1 << k) != 0 && slot.status == Status::Waiting {
                slot.status = Status::Skipped;
            }
        }
    }

    /// The record's outcome once it has one.
    pub fn verdict(&self, graph: &Graph) -> Option<Verdict> {
        if let Some(i) = self.ended {
            let i = usize::from(i);
            return Some(match &self.slots[i].status {
                Status::Failed(m) => Verdict::Failed(i, m.to_string()),
                Status::TimedOut(m) => Verdict::TimedOut(i, m.to_string()),
                _ => Verdict::MissDeadLetter(i),
            });
        }
        let _ = graph;
        if !self.slots.iter().all(|s| s.status.is_over()) {
            return None;
        }
        if self
            .slots
            .iter()
            .all(|s| matches!(s.status, Status::Found(_)))
        {
            Some(Verdict::Ok)
        } else {
            Some(Verdict::Miss)
        }
    }

    /// The durable form of step `i` (for the journal): its attempts and, once it finished
    /// with a result the record goes on with, that result.
    pub fn mark(&self, i: usize) -> StepMark {
        let s = &self.slots[i];
        StepMark {
            attempts: s.attempts,
            done: match &s.status {
                Status::Found(r) => Some(StepDone::Found(r.clone())),
                Status::Missed => Some(StepDone::Miss),
                Status::Skipped => Some(StepDone::Skipped),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::graph::StepSpec;
    use proptest::prelude::*;

    fn graph(defs: &[(&str, &[&str], &str, MissRule)]) -> Graph {
        let owned: Vec<(Vec<String>, Vec<String>)> = defs
            .iter()
            .map(|(_, after, _, _)| (Vec::new(), after.iter().map(|s| s.to_string()).collect()))
            .collect();
        let specs: Vec<StepSpec<'_>> = defs
            .iter()
            .zip(&owned)
            .map(|((name, _, into, rule), (binds, after))| StepSpec {
                name,
                binds,
                after,
                into,
                on_miss: *rule,
            })
            .collect();
        Graph::compile(&specs).unwrap()
    }

    fn row(s: &str) -> End {
        End::Found(Arc::from(s))
    }

    #[test]
    fn chained_steps_run_in_order_and_independent_ones_together() {
        let g = graph(&[
            ("user", &[], "/user", MissRule::Emit),
            ("account", &["user"], "/account", MissRule::Emit),
            ("geo", &[], "/geo", MissRule::Emit),
        ]);
        let mut p = Progress::new(&g);
        assert_eq!(p.due(&g).as_slice(), &[0, 2]);
        assert_eq!(
            p.begin(&g, 1),
            Err(Refused::State(1)),
            "account before user"
        );
        assert_eq!(p.begin(&g, 0), Ok(1));
        assert_eq!(p.begin(&g, 2), Ok(1));
        assert!(p.due(&g).is_empty());
        p.finish(&g, 0, row("{}")).unwrap();
        assert_eq!(p.due(&g).as_slice(), &[1]);
        p.begin(&g, 1).unwrap();
        p.back_off(1).unwrap();
        assert_eq!(p.begin(&g, 1), Ok(2));
        p.finish(&g, 1, End::Miss).unwrap();
        assert_eq!(p.verdict(&g), None, "geo still runs");
        p.finish(&g, 2, row("{}")).unwrap();
        assert_eq!(p.verdict(&g), Some(Verdict::Miss));
        assert_eq!(p.attempts(), 4);
        assert_eq!(
            p.finish(&g, 2, End::Miss),
            Err(Refused::State(2)),
            "a late answer"
        );
    }

    #[test]
    fn skip_dependents_and_emit_differ_for_after_dependencies() {
        let emit = graph(&[
            ("a", &[], "/a", MissRule::Emit),
            ("b", &["a"], "/b", MissRule::Emit),
        ]);
        let mut p = Progress::new(&emit);
        p.begin(&emit, 0).unwrap();
        p.finish(&emit, 0, End::Miss).unwrap();
        assert_eq!(
            p.due(&emit).as_slice(),
            &[1],
            "emit: the dependent still runs"
        );

        let skip = graph(&[
            ("a", &[], "/a", MissRule::SkipDependents),
            ("b", &["a"], "/b", MissRule::Emit),
            ("c", &["b"], "/c", MissRule::Emit),
        ]);
        let mut p = Progress::new(&skip);
        p.begin(&skip, 0).unwrap();
        p.finish(&skip, 0, End::Miss).unwrap();
        assert!(p.due(&skip).is_empty());
        assert_eq!(p.slot(1).status, Status::Skipped);
        assert_eq!(p.slot(2).status, Status::Skipped, "transitively");
        assert_eq!(p.verdict(&skip), Some(Verdict::Miss));
    }

    #[test]
    fn a_failure_ends_the_record_and_nothing_more_starts() {
        let g = graph(&[
            ("a", &[], "/a", MissRule::Emit),
            ("b", &[], "/b", MissRule::Emit),
            ("c", &["a"], "/c", MissRule::Emit),
        ]);
        let mut p = Progress::new(&g);
        p.begin(&g, 0).unwrap();
        p.begin(&g, 1).unwrap();
        p.finish(&g, 0, End::Failed("boom".into())).unwrap();
        assert_eq!(p.verdict(&g), Some(Verdict::Failed(0, "boom".into())));
        assert!(p.due(&g).is_empty());
        assert_eq!(p.finish(&g, 1, row("{}")), Err(Refused::Over));
        assert_eq!(p.slot(1).status.outcome_name(), "skipped");

        let dl = graph(&[
            ("a", &[], "/a", MissRule::DeadLetter),
            ("b", &[], "/b", MissRule::Emit),
        ]);
        let mut p = Progress::new(&dl);
        p.begin(&dl, 0).unwrap();
        p.finish(&dl, 0, End::Miss).unwrap();
        assert_eq!(p.verdict(&dl), Some(Verdict::MissDeadLetter(0)));
    }

    #[test]
    fn restore_keeps_results_and_attempts() {
        let g = graph(&[
            ("a", &[], "/a", MissRule::Emit),
            ("b", &["a"], "/b", MissRule::Emit),
        ]);
        let marks = [
            StepMark {
                attempts: 2,
                done: Some(StepDone::Found(Arc::from("{\"x\":1}"))),
            },
            StepMark {
                attempts: 1,
                done: None,
            },
        ];
        let p = Progress::restore(&g, &marks);
        assert_eq!(
            p.due(&g).as_slice(),
            &[1],
            "the finished step is not due again"
        );
        assert_eq!(p.slot(1).attempts, 1);
        assert_eq!(p.mark(0), marks[0]);
        assert_eq!(p.mark(1), marks[1]);
    }

    /// A random acyclic graph: step i may depend on any earlier step.
    fn arb_case() -> impl Strategy<Value = (Vec<(u64, u8)>, Vec<Vec<u8>>)> {
        (1usize..7).prop_flat_map(|n| {
            let steps = (0..n)
                .map(|i| (0u64..(1u64 << i), 0u8..3))
                .collect::<Vec<_>>();
            // Per step, the sequence of attempt ends the backend would give.
            let ends = prop::collection::vec(prop::collection::vec(0u8..6, 1..4), n);
            (steps, ends)
        })
    }

    proptest! {
        #[test]
        fn every_record_ends_once_and_dependents_never_run_early((steps, ends) in arb_case()) {
            let names: Vec<String> = (0..steps.len()).map(|i| format!("s{i}")).collect();
            let intos: Vec<String> = (0..steps.len()).map(|i| format!("/s{i}")).collect();
            let afters: Vec<Vec<String>> = steps
                .iter()
                .map(|(deps, _)| (0..64).filter(|j| deps & (1 << j) != 0).map(|j| format!("s{j}")).collect())
                .collect();
            let none: Vec<String> = Vec::new();
            let specs: Vec<StepSpec<'_>> = steps
                .iter()
                .enumerate()
                .map(|(i, (_, rule))| StepSpec {
                    name: &names[i],
                    binds: &none,
                    after: &afters[i],
                    into: &intos[i],
                    on_miss: [MissRule::Emit, MissRule::DeadLetter, MissRule::SkipDependents][*rule as usize],
                })
                .collect();
            let g = Graph::compile(&specs).unwrap();
            let mut p = Progress::new(&g);
            let mut next_end = vec![0usize; g.len()];
            let mut began = vec![0u32; g.len()];
            let mut verdicts = 0;
            for _round in 0..64 {
                if p.verdict(&g).is_some() {
                    verdicts += 1;
                    prop_assert!(p.due(&g).is_empty(), "nothing due after the outcome");
                    break;
                }
                let due = p.due(&g);
                let running: Vec<usize> = p.running().collect();
                prop_assert!(!due.is_empty() || !running.is_empty(), "stuck: {p:?}");
                for &i in &due {
                    for j in 0..g.len() {
                        if g.deps(i) & (1 << j) != 0 {
                            prop_assert!(matches!(p.slot(j).status, Status::Found(_) | Status::Missed),
                                "step {i} due before its source {j}");
                        }
                    }
                    if ends[i][0] == 3 {
                        // A bind read `null`: skipped when due, without a lookup.
                        p.finish(&g, i, End::Skipped).unwrap();
                        continue;
                    }
                    let n = p.begin(&g, i).unwrap();
                    began[i] += 1;
                    prop_assert_eq!(n, began[i], "one attempt at a time, counted");
                    prop_assert_eq!(p.begin(&g, i), Err(Refused::State(i)), "not twice while running");
                }
                for i in p.running().collect::<Vec<_>>() {
                    if p.verdict(&g).is_some() {
                        prop_assert_eq!(p.begin(&g, i), Err(Refused::Over));
                        break;
                    }
                    if p.slot(i).status == Status::Backoff {
                        p.begin(&g, i).unwrap();
                        began[i] += 1;
                        continue;
                    }
                    let seq = &ends[i];
                    let e = seq[next_end[i].min(seq.len() - 1)];
                    next_end[i] += 1;
                    let last = next_end[i] >= seq.len();
                    let end = match e {
                        0 | 1 => Some(row("{}")),
                        2 | 3 => Some(End::Miss),
                        4 if !last => None,
                        4 => Some(End::TimedOut("t".into())),
                        _ if !last => None,
                        _ => Some(End::Failed("f".into())),
                    };
                    match end {
                        None => p.back_off(i).unwrap(),
                        Some(end) => {
                            if p.finish(&g, i, end).is_err() {
                                prop_assert!(p.verdict(&g).is_some());
                            }
                        }
                    }
                }
            }
            prop_assert_eq!(verdicts, 1, "exactly one outcome: {:?}", p);
            let v = p.verdict(&g).unwrap();
            let all_found = p.slots().iter().all(|s| matches!(s.status, Status::Found(_)));
            prop_assert_eq!(v == Verdict::Ok, all_found);
            for i in 0..g.len() {
                // A step that did not run, ran because its sources allowed it.
                if p.slot(i).attempts > 0 {
                    for j in 0..g.len() {
                        if g.deps(i) & (1 << j) != 0 {
                            prop_assert!(matches!(p.slot(j).status, Status::Found(_) | Status::Missed));
                        }
                    }
                }
                if p.slot(i).status == Status::Skipped {
                    prop_assert_eq!(p.slot(i).attempts, 0, "a skipped step was not looked up");
                }
            }
        }
    }
}
