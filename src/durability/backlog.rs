//! How far the journal is behind on request data: the measure the ingress admits records
//! against, so that a slow disk becomes 429s at the edge instead of threads blocked on a
//! full channel.
//!
//! The ingress adds the size of every request batch it sends to the journal; the journal
//! thread takes it off again once the group holding it is written (and fsynced, when its
//! sender waits for that) or given up. The partitions' and the emitter's entries are not
//! counted: they never wait for room (their volume is bounded by `pipeline.capacity` and
//! the records held), and counting them would measure wake-ups rather than load. Only the
//! ingress adds, from its one thread, so its check-then-add cannot race with another
//! admission; the journal thread only takes off, so the ingress can only overestimate.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What one journal write weighs: approximate bytes on disk and entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub bytes: u64,
    pub entries: u64,
}

impl Cost {
    /// The sum of both.
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            bytes: self.bytes + other.bytes,
            entries: self.entries + other.entries,
        }
    }

    pub fn is_zero(self) -> bool {
        self.bytes == 0 && self.entries == 0
    }
}

/// How much request data may wait for the journal at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes: u64,
    pub entries: u64,
}

impl Limits {
    /// The limits for a node: 8 of the largest request bodies, and as many records as its
    /// partitions may hold (`partitions × (capacity + backlog)`) — at least two of the
    /// largest requests, so a full-size request always fits behind another. (Half that bound
    /// refused requests with `ack = "received"` on a healthy disk when the ingress outran
    /// one group commit.)
    ///
    /// Every record waiting for the journal is also held by its partition (the records of a
    /// request stay held until their sink took them, which is after their attempt was
    /// journaled behind them), so the entries limit only ever trips before the partitions'
    /// own bound when the journal, not the lookups, is what holds them back. A healthy disk
    /// writes everything queued with each group commit (milliseconds), so neither limit is
    /// reached by load alone; a slow fsync lets requests pile up behind it until one is.
    pub fn for_node(
        max_body_bytes: u64,
        max_records_per_request: u64,
        partitions: u64,
        capacity: u64,
        backlog: u64,
    ) -> Limits {
        Limits {
            bytes: max_body_bytes.saturating_mul(8).max(1),
            entries: partitions
                .saturating_mul(capacity.saturating_add(backlog))
                .max(max_records_per_request.saturating_mul(2))
                .max(1),
        }
    }
}

/// Why a batch was refused: the journal is behind by more than [`Limits`] allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// Request data waiting for the journal when the batch came.
    pub pending: Cost,
    /// What the batch would have added.
    pub wanted: Cost,
    pub limits: Limits,
    /// How long the journal's last write + fsync took, or the one under way has been
    /// running if that is longer, in milliseconds.
    pub sync_ms: u64,
}

/// `bytes` for people: MiB with one decimal from 1 MiB, KiB below (at least 1 for anything
/// non-zero).
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        let tenths = (bytes * 10).div_ceil(1 << 20);
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    } else {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    }
}

impl fmt::Display for Behind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the journal is {} / {} entries behind (at most {} / {} entries may wait for \
             it; this request adds {} / {}): the disk is slow",
            size(self.pending.bytes),
            self.pending.entries,
            size(self.limits.bytes),
            self.limits.entries,
            size(self.wanted.bytes),
            self.wanted.entries,
        )?;
        if self.sync_ms > 0 {
            write!(f, " (a journal write + fsync took {} ms)", self.sync_ms)?;
        }
        Ok(())
    }
}

/// Whether `wanted` may join `pending` under `limits`. An empty journal takes any batch,
/// however large, so a request over the limits is slow, never refused forever.
pub fn fits(pending: Cost, wanted: Cost, limits: Limits) -> bool {
    if pending.is_zero() {
        return true;
    }
    let after = pending.plus(wanted);
    after.bytes <= limits.bytes && after.entries <= limits.entries
}

/// The shared counters (see module docs).
#[derive(Debug)]
pub struct Backlog {
    limits: Limits,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// How long the last group commit that synced took, in milliseconds.
    last_sync_ms: AtomicU64,
    /// When the group commit under way started, in milliseconds after `epoch` plus one
    /// (0: none under way).
    busy_since: AtomicU64,
    epoch: Instant,
}

impl Backlog {
    pub fn new(limits: Limits) -> Backlog {
        Backlog {
            limits,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            last_sync_ms: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Request data waiting for the journal now.
    pub fn pending(&self) -> Cost {
        Cost {
            bytes: self.bytes.load(Ordering::Acquire),
            entries: self.entries.load(Ordering::Acquire),
        }
    }

    /// Whether `wanted` fits (see [`fits`]); if not, how far behind the journal is. Never
    /// blocks, counts nothing: the caller [`Backlog::add`]s it when it sends it (the one
    /// thread that adds may check first and add later: nothing else adds meanwhile).
    pub fn check(&self, wanted: Cost) -> Result<(), Behind> {
        let pending = self.pending();
        if fits(pending, wanted, self.limits) {
            return Ok(());
        }
        Err(Behind {
            pending,
            wanted,
            limits: self.limits,
            sync_ms: self.sync_ms(),
        })
    }

    /// Count `cost` (sent to the journal).
    pub fn add(&self, cost: Cost) {
        self.bytes.fetch_add(cost.bytes, Ordering::AcqRel);
        self.entries.fetch_add(cost.entries, Ordering::AcqRel);
    }

    /// `cost` is written (or given up): no longer waiting. Saturating, so a mistake can
    /// never wrap the counters into refusing everything.
    pub fn release(&self, cost: Cost) {
        if cost.is_zero() {
            return;
        }
        let sub = |a: &AtomicU64, n: u64| {
            let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
        };
        sub(&self.bytes, cost.bytes);
        sub(&self.entries, cost.entries);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The journal thread starts a group commit (for the refusal's detail).
    pub fn commit_started(&self) {
        self.busy_since.store(self.now_ms(), Ordering::Release);
    }

    /// The group commit under way ended; `synced`: it included an fsync (its duration is
    /// kept for the refusal's detail).
    pub fn commit_ended(&self, synced: bool) {
        let since = self.busy_since.swap(0, Ordering::AcqRel);
        if synced && since > 0 {
            let took = self.now_ms().saturating_sub(since);
            self.last_sync_ms.store(took, Ordering::Release);
        }
    }

    /// The last synced group commit's duration, or the running one's if longer (ms).
    pub fn sync_ms(&self) -> u64 {
        let since = self.busy_since.load(Ordering::Acquire);
        let running = if since == 0 {
            0
        } else {
            self.now_ms().saturating_sub(since)
        };
        running.max(self.last_sync_ms.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const L: Limits = Limits {
        bytes: 1000,
        entries: 10,
    };

    fn c(bytes: u64, entries: u64) -> Cost {
        Cost { bytes, entries }
    }

    #[test]
    fn a_batch_fits_while_both_limits_hold() {
        assert!(fits(c(500, 5), c(500, 5), L));
        assert!(!fits(c(500, 5), c(501, 1), L), "bytes over");
        assert!(!fits(c(100, 9), c(10, 2), L), "entries over");
    }

    #[test]
    fn an_empty_journal_takes_any_batch() {
        assert!(fits(Cost::default(), c(1 << 30, 1 << 20), L));
        assert!(!fits(c(1, 0), c(1000, 1), L));
    }

    /// The ingress' use: check, and count what it sends.
    fn admit(b: &Backlog, wanted: Cost) -> Result<(), Behind> {
        b.check(wanted)?;
        b.add(wanted);
        Ok(())
    }

    #[test]
    fn admit_counts_what_it_lets_in_and_nothing_it_refuses() {
        let b = Backlog::new(L);
        assert_eq!(admit(&b, c(600, 6)), Ok(()));
        let e = admit(&b, c(600, 1)).unwrap_err();
        assert_eq!(e.pending, c(600, 6));
        assert_eq!(e.wanted, c(600, 1));
        assert_eq!(e.limits, L);
        assert_eq!(b.pending(), c(600, 6), "a refusal counts nothing");
        b.release(c(600, 6));
        assert_eq!(b.pending(), Cost::default());
        assert_eq!(admit(&b, c(600, 1)), Ok(()));
    }

    #[test]
    fn release_never_wraps() {
        let b = Backlog::new(L);
        b.add(c(10, 1));
        b.release(c(20, 5));
        assert_eq!(b.pending(), Cost::default());
        assert_eq!(admit(&b, c(10, 1)), Ok(()));
    }

    #[test]
    fn many_admissions_and_releases_balance() {
        let b = Backlog::new(Limits {
            bytes: u64::MAX,
            entries: u64::MAX,
        });
        let costs: Vec<Cost> = (1..200).map(|i| c(i * 37, i % 7)).collect();
        for &x in &costs {
            admit(&b, x).unwrap();
        }
        for &x in costs.iter().rev() {
            b.release(x);
        }
        assert_eq!(b.pending(), Cost::default());
    }

    #[test]
    fn the_refusal_names_the_journal_its_lag_and_the_disk() {
        let b = Backlog::new(Limits {
            bytes: 64 << 20,
            entries: 20_000,
        });
        b.add(c(70 << 20, 3));
        b.last_sync_ms.store(480, Ordering::Release);
        let text = admit(&b, c(7 << 10, 10)).unwrap_err().to_string();
        assert_eq!(
            text,
            "the journal is 70.0 MiB / 3 entries behind (at most 64.0 MiB / 20000 entries may \
             wait for it; this request adds 7 KiB / 10): the disk is slow (a journal write + \
             fsync took 480 ms)"
        );
        assert_eq!(size(1), "1 KiB", "anything non-zero shows");
        assert_eq!(size((1 << 20) + 1), "1.1 MiB");
    }

    #[test]
    fn the_sync_figure_is_the_last_one_or_the_one_under_way() {
        let b = Backlog::new(L);
        assert_eq!(b.sync_ms(), 0);
        b.commit_started();
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.sync_ms() >= 30, "the running one counts");
        b.commit_ended(true);
        let last = b.sync_ms();
        assert!(last >= 30);
        b.commit_started();
        b.commit_ended(false);
        assert_eq!(
            b.sync_ms(),
            last,
            "a group without an fsync keeps the figure"
        );
        b.commit_started();
        b.commit_ended(true);
        assert!(b.sync_ms() < last, "a fast fsync replaces it");
    }

    #[test]
    fn limits_follow_the_settings() {
        // Defaults: 8 MiB bodies, 10,000 records a request, 4 × (100 + 10,000).
        let l = Limits::for_node(8 << 20, 10_000, 4, 100, 10_000);
        assert_eq!(
            l,
            Limits {
                bytes: 64 << 20,
                entries: 40_400
            }
        );
        // Small partitions: two full requests still fit.
        let l = Limits::for_node(1 << 20, 10_000, 1, 10, 100);
        assert_eq!(l.entries, 20_000);
        assert_eq!(
            Limits::for_node(0, 0, 0, 0, 0),
            Limits {
                bytes: 1,
                entries: 1
            }
        );
    }
}
