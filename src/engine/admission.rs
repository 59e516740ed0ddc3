//! The all-or-nothing admission check, pure: given what the ingress knows of the journal
//! and of every partition a batch touches, accept the batch whole or name the one reason
//! nothing of it is accepted. `engine/ingress.rs` gathers the inputs (atomics, the routing
//! view, the journal's backlog) and acts on the answer.
//!
//! Order of the checks: the journal first (it cannot write: 503; too far behind: 429), then
//! each partition in number order: local partitions against their `held` counter, remote
//! ones against their outbox, both bounded by `capacity + backlog`; a partition nobody can
//! take records for refuses the batch (503), and so does a remote one for `/v1/enrich`,
//! which is not journaled and so cannot wait in an outbox.

use super::admit::Admitted;
use crate::durability::backlog::{Behind, Cost};

/// Refusal: a partition's backlog cannot take its share of the batch — or, with `journal`
/// set, the journal's backlog cannot take the batch (the disk is slow). Nothing was
/// accepted; both are a full backlog (429): retry later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    pub partition: u32,
    pub wanted: usize,
    pub held: usize,
    pub limit: usize,
    /// The journal is too far behind (the partition fields are not about a partition then).
    pub journal: Option<Behind>,
}

impl Overloaded {
    /// Whether the batch could be accepted once the partition drained; if not, retrying
    /// the same batch is pointless and it must be split. (An empty journal takes any batch.)
    pub fn can_ever_fit(&self) -> bool {
        self.journal.is_some() || self.wanted <= self.limit
    }
}

impl std::fmt::Display for Overloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.journal {
            Some(behind) => write!(f, "{behind}"),
            None => write!(
                f,
                "partition {} cannot take {} more record(s): it holds {} of {} \
                 (pipeline.capacity + pipeline.backlog)",
                self.partition, self.wanted, self.held, self.limit
            ),
        }
    }
}

impl std::error::Error for Overloaded {}

/// Why nothing of a batch was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A target is full (429).
    Overloaded(Overloaded),
    /// A target partition has no owner that can take records now (503).
    Unavailable(String),
}

/// The journal as a batch finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Journal {
    /// Not involved (no journal, or `/v1/enrich`), or able to take the batch.
    Fine,
    /// Its last write failed (why).
    CannotWrite(String),
    /// Too far behind to take the batch.
    Behind(Behind),
}

/// What the ingress knows of one partition the batch has records for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Served here; `held` records in its backlog, in flight or waiting for the sink.
    Local { held: usize },
    /// Owned by `node`; `staged` records wait in its outbox here.
    Remote { node: String, staged: usize },
    /// No owner that can take records now (why).
    Unavailable(String),
}

/// The batch may be accepted: which partitions' records are staged for another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per partition: its records go to the outbox (owned elsewhere).
    pub remote: Vec<bool>,
}

impl Plan {
    /// The counts of the partitions served here (zero for the remote ones).
    pub fn local_counts(&self, counts: &[usize]) -> Vec<usize> {
        counts
            .iter()
            .zip(&self.remote)
            .map(|(c, remote)| if *remote { 0 } else { *c })
            .collect()
    }
}

/// Records per partition (of `n`) of a batch whose records name these partitions.
pub fn counts(n: usize, partitions: impl IntoIterator<Item = u32>) -> Vec<usize> {
    let mut counts = vec![0usize; n];
    for p in partitions {
        counts[p as usize % n] += 1;
    }
    counts
}

/// `wanted` more records into partition `partition`, which holds `held` of `limit`.
pub fn fits(partition: usize, wanted: usize, held: usize, limit: usize) -> Result<(), Overloaded> {
    if held + wanted > limit {
        return Err(Overloaded {
            partition: partition as u32,
            wanted,
            held,
            limit,
            journal: None,
        });
    }
    Ok(())
}

/// Check a batch of `records` records, `counts[p]` of them for partition `p` (see module
/// docs). `target(p)` is asked only for partitions with records; `enrich`: the batch is a
/// `/v1/enrich` request.
pub fn check(
    journal: Journal,
    records: usize,
    counts: &[usize],
    limit: usize,
    enrich: bool,
    mut target: impl FnMut(u32) -> Target,
) -> Result<Plan, Refusal> {
    match journal {
        Journal::Fine => {}
        Journal::CannotWrite(why) => {
            return Err(Refusal::Unavailable(format!(
                "the journal cannot write ({why}), so records cannot be made durable"
            )));
        }
        Journal::Behind(behind) => {
            return Err(Refusal::Overloaded(Overloaded {
                partition: 0,
                wanted: records,
                held: 0,
                limit: 0,
                journal: Some(behind),
            }));
        }
    }
    let mut remote = vec![false; counts.len()];
    for (p, wanted) in counts.iter().enumerate() {
        if *wanted == 0 {
            continue;
        }
        let fit = match target(p as u32) {
            Target::Local { held } => fits(p, *wanted, held, limit),
            Target::Remote { node, .. } if enrich => {
                return Err(Refusal::Unavailable(format!(
                    "partition {p} is served by {node}"
                )));
            }
            Target::Remote { staged, .. } => {
                remote[p] = true;
                fits(p, *wanted, staged, limit)
            }
            Target::Unavailable(why) => return Err(Refusal::Unavailable(why)),
        };
        fit.map_err(Refusal::Overloaded)?;
    }
    Ok(Plan { remote })
}

/// After [`check`]: the records the plan stages for other owners, on top of the `held`
/// this node already holds for them, must stay within `max` (`cluster.max_staged_records`):
/// an owner that cannot be reached is waited for durably, but not without bound (503).
pub fn check_staging(
    plan: &Plan,
    counts: &[usize],
    held: usize,
    max: usize,
) -> Result<(), Refusal> {
    let staging: usize = counts
        .iter()
        .zip(&plan.remote)
        .filter(|(_, remote)| **remote)
        .map(|(n, _)| *n)
        .sum();
    if staging > 0 && held + staging > max {
        return Err(Refusal::Unavailable(format!(
            "this node holds {held} record(s) for owners it cannot hand them to yet and \
             cannot take {staging} more (cluster.max_staged_records = {max})"
        )));
    }
    Ok(())
}

/// What a request's records weigh in the journal's backlog: about their bytes on disk
/// (text, id, key twice, fixed fields) and one entry each.
pub fn request_cost(records: &[Admitted]) -> Cost {
    Cost {
        bytes: records
            .iter()
            .map(|r| (r.text.len() + r.id.len() + r.key.len() + r.canonical.len() + 48) as u64)
            .sum(),
        entries: records.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn staging_beyond_the_node_limit_is_refused_whole_and_local_records_never_count() {
        let plan = Plan {
            remote: vec![true, false, true],
        };
        assert!(check_staging(&plan, &[3, 50, 2], 95, 100).is_ok(), "95 + 5");
        let r = check_staging(&plan, &[3, 50, 3], 95, 100);
        assert!(
            matches!(&r, Err(Refusal::Unavailable(why)) if why.contains("max_staged_records = 100")),
            "{r:?}"
        );
        let local = Plan {
            remote: vec![false, false, false],
        };
        assert!(
            check_staging(&local, &[3, 50, 3], 1000, 100).is_ok(),
            "nothing staged"
        );
    }

    use super::*;
    use crate::durability::backlog::Limits;

    fn local(held: usize) -> Target {
        Target::Local { held }
    }

    fn remote(staged: usize) -> Target {
        Target::Remote {
            node: "b".into(),
            staged,
        }
    }

    fn behind() -> Behind {
        Behind {
            pending: Cost {
                bytes: 10,
                entries: 1,
            },
            wanted: Cost {
                bytes: 10,
                entries: 1,
            },
            limits: Limits {
                bytes: 15,
                entries: 100,
            },
            sync_ms: 3,
        }
    }

    #[test]
    fn counts_fold_partitions_modulo_n() {
        assert_eq!(counts(3, [0, 1, 1, 5, 3]), [2, 2, 1]);
    }

    #[test]
    fn a_batch_within_every_bound_is_planned_local_and_remote() {
        let targets = [local(0), remote(5), local(9)];
        let plan = check(Journal::Fine, 6, &[2, 3, 1], 10, false, |p| {
            targets[p as usize].clone()
        })
        .unwrap();
        assert_eq!(plan.remote, [false, true, false]);
        assert_eq!(plan.local_counts(&[2, 3, 1]), [2, 0, 1]);
    }

    #[test]
    fn the_first_full_partition_refuses_the_whole_batch() {
        let targets = [local(0), local(9), remote(10)];
        let r = check(Journal::Fine, 5, &[3, 2, 0], 10, false, |p| {
            targets[p as usize].clone()
        });
        assert_eq!(
            r,
            Err(Refusal::Overloaded(Overloaded {
                partition: 1,
                wanted: 2,
                held: 9,
                limit: 10,
                journal: None,
            }))
        );
        // A partition without records is not asked, whatever it holds.
        let mut asked = Vec::new();
        check(Journal::Fine, 3, &[3, 0, 0], 10, false, |p| {
            asked.push(p);
            targets[p as usize].clone()
        })
        .unwrap();
        assert_eq!(asked, [0]);
    }

    #[test]
    fn an_outbox_is_bounded_like_a_partition() {
        let r = check(Journal::Fine, 4, &[0, 4], 10, false, |_| remote(7));
        match r {
            Err(Refusal::Overloaded(o)) => {
                assert_eq!((o.partition, o.wanted, o.held), (1, 4, 7));
                assert!(o.can_ever_fit());
            }
            other => panic!("expected overloaded, got {other:?}"),
        }
        let r = check(Journal::Fine, 11, &[11], 10, false, |_| local(0));
        assert!(matches!(r, Err(Refusal::Overloaded(o)) if !o.can_ever_fit()));
    }

    #[test]
    fn no_owner_or_a_remote_owner_for_enrich_is_unavailable() {
        let r = check(Journal::Fine, 1, &[1], 10, false, |_| {
            Target::Unavailable("failover".into())
        });
        assert_eq!(r, Err(Refusal::Unavailable("failover".into())));
        let r = check(Journal::Fine, 1, &[0, 1], 10, true, |_| remote(0));
        assert_eq!(
            r,
            Err(Refusal::Unavailable("partition 1 is served by b".into()))
        );
    }

    #[test]
    fn the_journal_is_checked_before_any_partition() {
        let mut asked = false;
        let r = check(
            Journal::CannotWrite("EIO".into()),
            1,
            &[1],
            10,
            false,
            |_| {
                asked = true;
                local(0)
            },
        );
        assert_eq!(
            r,
            Err(Refusal::Unavailable(
                "the journal cannot write (EIO), so records cannot be made durable".into()
            ))
        );
        assert!(!asked);
        let r = check(Journal::Behind(behind()), 7, &[7], 10, false, |_| local(0));
        match r {
            Err(Refusal::Overloaded(o)) => {
                assert_eq!(o.journal, Some(behind()));
                assert_eq!(o.wanted, 7);
                assert!(o.can_ever_fit());
                assert!(o.to_string().contains("the disk is slow"), "{o}");
            }
            other => panic!("expected overloaded, got {other:?}"),
        }
    }
}
