//! Which owners the other members cannot reach (README "Cluster", *Peers that cannot reach an
//! owner*), as pure code: each node probes every other member over HTTP and says in etcd
//! which ones it has not reached for `cluster.peer_timeout_ms` ([`Watch`]); every node then
//! reads the same marks and reaches the same verdict ([`cut_off`]): a member that a majority
//! of the other members cannot reach loses its partitions, even though its lease is alive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// This node's own observations: since when each peer has not answered.
#[derive(Debug, Default)]
pub struct Watch {
    /// Per peer: the first failed probe since the last answer (none: it answers).
    failing_since: HashMap<String, Instant>,
}

impl Watch {
    /// A probe of `peer` at `now` got an answer (`ok`) or did not (refused, reset, timed out).
    pub fn observe(&mut self, peer: &str, ok: bool, now: Instant) {
        if ok {
            self.failing_since.remove(peer);
        } else {
            self.failing_since.entry(peer.to_string()).or_insert(now);
        }
    }

    /// Whether `peer` has not answered for `timeout` at `now`.
    pub fn overdue(&self, peer: &str, now: Instant, timeout: Duration) -> bool {
        self.failing_since
            .get(peer)
            .is_some_and(|since| now.saturating_duration_since(*since) >= timeout)
    }

    /// Forget peers that are no longer members.
    pub fn retain(&mut self, members: &BTreeSet<String>) {
        self.failing_since.retain(|p, _| members.contains(p));
    }
}

/// The members a majority of the *other* members have marked unreachable. Only marks by
/// members count. Should the marks condemn half the members or more (a split into
/// halves, or everyone cut from everyone), nobody is cut off: there is no majority that
/// could take the partitions over, and moving them would only make them flap.
pub fn cut_off(
    members: &BTreeSet<String>,
    marks: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    let verdict: BTreeSet<String> = members
        .iter()
        .filter(|peer| {
            let others = members.len().saturating_sub(1);
            let against = marks
                .get(*peer)
                .map(|o| {
                    o.iter()
                        .filter(|o| *o != *peer && members.contains(*o))
                        .count()
                })
                .unwrap_or(0);
            others > 0 && against * 2 > others
        })
        .cloned()
        .collect();
    if verdict.len() * 2 >= members.len() {
        BTreeSet::new()
    } else {
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn marks(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (peer, observer) in pairs {
            m.entry(peer.to_string())
                .or_default()
                .insert(observer.to_string());
        }
        m
    }

    #[test]
    fn an_owner_both_others_cannot_reach_is_cut_off() {
        let members = set(&["a", "b", "c"]);
        let m = marks(&[("c", "a"), ("c", "b")]);
        assert_eq!(cut_off(&members, &m), set(&["c"]));
    }

    #[test]
    fn one_observer_of_two_is_no_majority() {
        let members = set(&["a", "b", "c"]);
        assert!(cut_off(&members, &marks(&[("c", "a")])).is_empty());
    }

    #[test]
    fn the_cut_off_node_sees_the_same_verdict_whatever_it_marks() {
        let members = set(&["a", "b", "c"]);
        // c cannot reach anyone either: its marks against a and b are one vote each.
        let m = marks(&[("c", "a"), ("c", "b"), ("a", "c"), ("b", "c")]);
        assert_eq!(cut_off(&members, &m), set(&["c"]));
    }

    #[test]
    fn marks_by_non_members_and_by_oneself_do_not_count() {
        let members = set(&["a", "b", "c"]);
        let m = marks(&[("c", "gone"), ("c", "c"), ("c", "a")]);
        assert!(cut_off(&members, &m).is_empty());
    }

    #[test]
    fn two_halves_condemn_nobody() {
        let members = set(&["a", "b"]);
        let m = marks(&[("a", "b"), ("b", "a")]);
        assert!(
            cut_off(&members, &m).is_empty(),
            "no majority can take over"
        );
        let one_way = marks(&[("b", "a")]);
        assert!(cut_off(&members, &one_way).is_empty(), "half of two");
        let four = set(&["a", "b", "c", "d"]);
        let split = marks(&[
            ("a", "c"),
            ("a", "d"),
            ("b", "c"),
            ("b", "d"),
            ("c", "a"),
            ("c", "b"),
            ("d", "a"),
            ("d", "b"),
        ]);
        assert!(cut_off(&four, &split).is_empty());
    }

    #[test]
    fn a_lone_member_is_never_cut_off() {
        assert!(cut_off(&set(&["a"]), &marks(&[("a", "x")])).is_empty());
    }

    #[test]
    fn a_peer_is_overdue_after_the_timeout_without_an_answer_and_forgiven_by_one() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(500);
        let mut w = Watch::default();
        w.observe("b", false, t0);
        w.observe("b", false, t0 + Duration::from_millis(400));
        assert!(!w.overdue("b", t0 + Duration::from_millis(499), timeout));
        assert!(w.overdue("b", t0 + Duration::from_millis(500), timeout));
        w.observe("b", true, t0 + Duration::from_millis(600));
        assert!(!w.overdue("b", t0 + Duration::from_secs(5), timeout));
        w.observe("b", false, t0 + Duration::from_secs(6));
        assert!(
            !w.overdue("b", t0 + Duration::from_millis(6400), timeout),
            "the clock starts again at the first failure after an answer"
        );
        w.retain(&set(&["a"]));
        assert!(!w.overdue("b", t0 + Duration::from_secs(60), timeout));
    }
}
