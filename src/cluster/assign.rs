//! Partition assignment: which member should own each partition. Pure and deterministic,
//! so every node computes the same answer from the same etcd view without talking to the
//! others; etcd transactions (one owner key per partition) settle any race anyway.
//!
//! - **Balanced**: with N members each gets ⌊P/N⌋ or ⌈P/N⌉ partitions. The members that
//!   get the extra one are those owning the most today (ties by name), so a stable cluster
//!   keeps its shape.
//! - **Sticky**: a member keeps the partitions it owns up to its quota (those with the
//!   highest rendezvous score first); only partitions whose owner left or is over quota
//!   move.
//! - **Spread**: a free partition goes to the member with room whose rendezvous score
//!   `fnv1a64(member/partition)` is highest, so moves scatter instead of piling up.

use std::collections::BTreeMap;

use crate::engine::hash::fnv1a64;

/// Rendezvous score of `member` for `partition`.
fn score(member: &str, partition: u32) -> u64 {
    let mut key = Vec::with_capacity(member.len() + 6);
    key.extend_from_slice(member.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&partition.to_le_bytes());
    fnv1a64(&key)
}

/// The target owner of every partition, given the members that may own partitions (in any
/// order; duplicates ignored) and today's owner of each partition (`None`: free).
pub fn assign(members: &[String], current: &[Option<String>]) -> Vec<Option<String>> {
    let partitions = current.len();
    let mut names: Vec<&str> = members.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return vec![None; partitions];
    }
    let n = names.len();
    let (base, extra) = (partitions / n, partitions % n);

    let mut owned: BTreeMap<&str, Vec<u32>> = names.iter().map(|m| (*m, Vec::new())).collect();
    for (p, owner) in current.iter().enumerate() {
        if let Some(o) = owner
            && let Some(list) = owned.get_mut(o.as_str())
        {
            list.push(p as u32);
        }
    }
    // Who gets ⌈P/N⌉: the members owning the most today, ties by name.
    let mut by_load: Vec<&str> = names.clone();
    by_load.sort_by(|a, b| owned[b].len().cmp(&owned[a].len()).then(a.cmp(b)));
    let quota: BTreeMap<&str, usize> = by_load
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + usize::from(i < extra)))
        .collect();

    let mut target: Vec<Option<String>> = vec![None; partitions];
    let mut room: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &names {
        let mut mine = owned[m].clone();
        mine.sort_by_key(|p| std::cmp::Reverse(score(m, *p)));
        let keep = quota[m].min(mine.len());
        for p in &mine[..keep] {
            target[*p as usize] = Some((*m).to_string());
        }
        room.insert(m, quota[m] - keep);
    }
    for (p, slot) in target.iter_mut().enumerate() {
        if slot.is_some() {
            continue;
        }
        let best = names
            .iter()
            .filter(|m| room[*m] > 0)
            .max_by_key(|m| (score(m, p as u32), std::cmp::Reverse(**m)));
        if let Some(m) = best {
            *room.get_mut(m).expect("every member has room") -= 1;
            *slot = Some((*m).to_string());
        }
    }
    target
}

/// How many partitions must move from `current` to reach a balanced assignment over
/// `members`: those whose owner is not a member, plus each member's surplus over its
/// quota. [`assign`] moves exactly this many (tested).
pub fn required_moves(members: &[String], current: &[Option<String>]) -> usize {
    let target = assign(members, current);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in target.iter().flatten() {
        *counts.entry(t.as_str()).or_insert(0) += 1;
    }
    let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut orphans = 0;
    for o in current {
        match o {
            Some(o) if counts.contains_key(o.as_str()) => {
                *owned.entry(o.as_str()).or_insert(0) += 1
            }
            _ => orphans += 1,
        }
    }
    orphans
        + owned
            .iter()
            .map(|(m, n)| n.saturating_sub(counts[m]))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(ids: &[u8]) -> Vec<String> {
        ids.iter().map(|i| format!("node-{i}")).collect()
    }

    fn counts(target: &[Option<String>]) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for t in target.iter().flatten() {
            *c.entry(t.clone()).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn a_fresh_cluster_is_balanced_and_complete() {
        let t = assign(&names(&[0, 1, 2]), &vec![None; 10]);
        assert!(t.iter().all(Option::is_some));
        let c = counts(&t);
        assert_eq!(c.values().sum::<usize>(), 10);
        assert!(c.values().all(|n| *n == 3 || *n == 4), "{c:?}");
    }

    #[test]
    fn no_members_no_owners() {
        assert_eq!(assign(&[], &[Some("a".into()), None]), vec![None, None]);
    }

    #[test]
    fn a_joining_member_takes_only_its_share() {
        let members = names(&[0, 1]);
        let before = assign(&members, &vec![None; 12]);
        let after = assign(&names(&[0, 1, 2]), &before);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 4);
        assert!(
            before
                .iter()
                .zip(&after)
                .filter(|(a, b)| a != b)
                .all(|(_, b)| b.as_deref() == Some("node-2"))
        );
    }

    proptest! {
        #[test]
        fn balanced_deterministic_and_minimal(
            partitions in 1usize..48,
            steps in prop::collection::vec(prop::collection::btree_set(0u8..7, 1..6), 1..8),
        ) {
            let mut current: Vec<Option<String>> = vec![None; partitions];
            for set in steps {
                let ids: Vec<u8> = set.into_iter().collect();
                let members = names(&ids);
                let target = assign(&members, &current);
                // Deterministic: member order does not matter.
                let mut reversed = members.clone();
                reversed.reverse();
                prop_assert_eq!(&assign(&reversed, &current), &target);
                // Complete and balanced.
                prop_assert!(target.iter().all(|t| t.as_ref().is_some_and(|t| members.contains(t))));
                let c = counts(&target);
                let (lo, hi) = (partitions / members.len(), partitions.div_ceil(members.len()));
                prop_assert!(c.values().all(|n| *n >= lo && *n <= hi), "{:?}", c);
                // Minimal: only what must move moves.
                let moved = current.iter().zip(&target).filter(|(a, b)| a != b).count();
                prop_assert_eq!(moved, required_moves(&members, &current));
                // Stable: assigning again moves nothing.
                prop_assert_eq!(&assign(&members, &target), &target);
                current = target;
            }
        }
    }
}
