//! The journal thread: the single writer of the checkpoint directory.
//!
//! Everyone (ingress, partitions, emitter) sends entries over one channel; the thread takes
//! whatever has queued up, appends it with one `write`, and — if any sender waits for
//! durability — makes it durable with one `fdatasync`: group commit, many requests per
//! fsync. Entries nobody waits for are synced within `LAZY_SYNC`. The thread also folds
//! every entry into the live [`State`] and writes snapshots of it every
//! `checkpoint.interval_ms` (when something changed) and on demand.
//!
//! The channel is unbounded and FIFO: sending never blocks an actor thread, and every entry
//! about a record follows the record's acceptance. What bounds it is the ingress: request
//! data is counted in the [`Backlog`] until it is written, and the ingress refuses requests
//! (429) while the journal is too far behind (`durability/backlog.rs`); the partitions' and
//! the emitter's entries are bounded by the records held.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;

use super::backlog::{Backlog, Behind, Cost, Limits};
use super::codec::{self, Entry};
use super::files;
use super::state::State;
use crate::metrics::Metrics;
use crate::record::Record;

/// Where the snapshot thread publishes the newest durable checkpoint (read by `/v1/status`
/// and `/metrics`).
pub type CheckpointSlot = Arc<parking_lot::Mutex<Option<CheckpointInfo>>>;

/// Why the journal cannot write right now (`None`: it can); read by `/readyz` and the
/// ingress, which refuses new records while it is set.
pub type JournalHealth = Arc<parking_lot::Mutex<Option<String>>>;

/// Why the journal did not take, write or snapshot something. Clone: one failed group
/// answers every request in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The journal thread is gone (the node is stopping, or the thread failed).
    #[error("the journal stopped")]
    Stopped,
    /// This engine runs without a journal.
    #[error("no journal")]
    Absent,
    /// Appending to the segment failed (disk full, I/O error).
    #[error("journal write failed: {0}")]
    Write(Arc<io::Error>),
    /// The fsync failed: what followed the last good one is written again before the next.
    #[error("journal fsync failed: {0}")]
    Fsync(Arc<io::Error>),
    #[error("cannot open journal segment {segment}: {why}")]
    Segment { segment: u64, why: Arc<io::Error> },
    #[error("cannot write the manifest: {0}")]
    Manifest(Arc<io::Error>),
    #[error("snapshot failed: {0}")]
    Snapshot(Arc<io::Error>),
    #[error("the snapshot writer is gone")]
    SnapshotWriterGone,
}

/// Entries nobody waits for are on disk within this long.
const LAZY_SYNC: Duration = Duration::from_millis(100);
/// A segment is rotated once it grows past this.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Snapshots kept (the newest may be torn by a crash during its write: keep one more).
const KEEP_SNAPSHOTS: usize = 2;

/// What a checkpoint wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckpointInfo {
    /// When it was taken (RFC 3339, UTC).
    pub at: String,
    /// Pending records it holds.
    pub records: u64,
    /// Its size on disk.
    pub bytes: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    #[serde(skip)]
    pub unix_secs: f64,
}

enum Op {
    Write {
        entries: Vec<Entry>,
        ack: Option<oneshot::Sender<Result<(), JournalError>>>,
        /// Counted in the backlog by the sender (request data); taken off once written.
        cost: Cost,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<CheckpointInfo, JournalError>>,
    },
    Export {
        partition: Option<u32>,
        reply: oneshot::Sender<Vec<Arc<Record>>>,
    },
}

/// A cheap, cloneable way to send entries to the journal thread. Sending never blocks.
#[derive(Clone)]
pub struct JournalHandle {
    tx: Sender<Op>,
    backlog: Arc<Backlog>,
}

/// The receiving end, handed to [`spawn`] once restore has produced the state.
pub struct JournalInbox {
    rx: Receiver<Op>,
    backlog: Arc<Backlog>,
}

/// A journal channel whose request data may lag by `limits` at most: handles can be given
/// out before the thread starts; what they send waits in the channel.
pub fn channel(limits: Limits) -> (JournalHandle, JournalInbox) {
    let (tx, rx) = std::sync::mpsc::channel();
    let backlog = Arc::new(Backlog::new(limits));
    (
        JournalHandle {
            tx,
            backlog: backlog.clone(),
        },
        JournalInbox { rx, backlog },
    )
}

impl JournalHandle {
    /// Append entries; durable within `LAZY_SYNC` (or with the next group commit).
    pub fn write(&self, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.send(entries, Cost::default(), None);
        }
    }

    /// Append entries and learn when they are fsynced.
    pub fn write_durable(
        &self,
        entries: Vec<Entry>,
    ) -> oneshot::Receiver<Result<(), JournalError>> {
        let (ack, rx) = oneshot::channel();
        self.send(entries, Cost::default(), Some(ack));
        rx
    }

    /// Whether a request's entries weighing `cost` may be sent now, or how far behind the
    /// journal is (refuse the request then). Never blocks; counts nothing.
    pub fn check(&self, cost: Cost) -> Result<(), Behind> {
        self.backlog.check(cost)
    }

    /// Send a request's entries, counted in the backlog as `cost` until they are written;
    /// with `durable`, learn when they are fsynced. Never blocks.
    pub fn write_request(
        &self,
        entries: Vec<Entry>,
        cost: Cost,
        durable: bool,
    ) -> Option<oneshot::Receiver<Result<(), JournalError>>> {
        if entries.is_empty() && !durable {
            return None;
        }
        self.backlog.add(cost);
        if !durable {
            self.send(entries, cost, None);
            return None;
        }
        let (ack, rx) = oneshot::channel();
        self.send(entries, cost, Some(ack));
        Some(rx)
    }

    fn send(
        &self,
        entries: Vec<Entry>,
        cost: Cost,
        ack: Option<oneshot::Sender<Result<(), JournalError>>>,
    ) {
        if let Err(std::sync::mpsc::SendError(Op::Write { ack, cost, .. })) =
            self.tx.send(Op::Write { entries, ack, cost })
        {
            self.backlog.release(cost);
            if let Some(ack) = ack {
                let _ = ack.send(Err(JournalError::Stopped));
            }
        }
    }

    /// The pending records of `partition` (all partitions: `None`) in seq order, as the
    /// journal holds them after every entry sent before this call.
    pub async fn export(&self, partition: Option<u32>) -> Result<Vec<Arc<Record>>, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Export { partition, reply })
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)
    }

    /// Take a snapshot now; answers once it is durable.
    pub async fn checkpoint(&self) -> Result<CheckpointInfo, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Checkpoint { reply })
            .map_err(|_| JournalError::Stopped)?;
        rx.await.map_err(|_| JournalError::Stopped)?
    }
}

/// The manifest naming segment `newest` as the newest, with the state's seq leases.
fn manifest(newest: u64, state: &State) -> files::Manifest {
    files::Manifest {
        newest_segment: newest,
        next_seq: state.next_seq.clone(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `secs` since the epoch as RFC 3339 UTC (no dependency for one timestamp format).
pub fn rfc3339(secs: f64) -> String {
    let total = secs.max(0.0);
    let s = total as i64;
    let millis = ((total - s as f64) * 1000.0) as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    file: File,
    segment_len: u64,
    state: State,
    dirty: bool,
    changed_since_snapshot: bool,
    last_sync: Instant,
    metrics: Metrics,
    snapshot_busy: Arc<AtomicBool>,
    health: JournalHealth,
    /// A copy of what was appended to the segment since its last good fsync (its last
    /// `unsynced.len()` bytes).
    unsynced: Vec<u8>,
    /// An fsync failed: the kernel may have dropped the pages it could not write back, and a
    /// later fsync that succeeds says nothing about them ("fsyncgate"). `unsynced` is cut
    /// away and written again before anything else.
    rewrite: bool,
    backlog: Arc<Backlog>,
}

impl Writer {
    /// Append and (when someone waits, or lazily) sync one group; on failure cut the
    /// segment back to where the group started, so no torn or unacknowledged frame stays
    /// in front of later ones.
    fn commit_group(&mut self, buf: &[u8], sync_now: bool) -> Result<(), JournalError> {
        if buf.is_empty() && !sync_now && !self.dirty {
            // Nothing to write: while failing, find out whether the disk takes writes again.
            if self.health.lock().is_some() {
                let probe = self.probe();
                self.note(&probe);
            }
            return Ok(());
        }
        if self.rewrite {
            let r = self.rewrite_unsynced();
            if r.is_err() {
                self.note(&r);
                return r;
            }
        }
        let before = self.segment_len;
        let kept = self.unsynced.len();
        let mut result = if buf.is_empty() {
            Ok(())
        } else {
            self.append(buf)
        };
        if result.is_ok() && (sync_now || self.last_sync.elapsed() >= LAZY_SYNC) {
            result = self.sync();
        }
        if result.is_err() && !buf.is_empty() {
            if let Err(e) = self.file.set_len(before) {
                tracing::error!(error = %e, "cannot cut a failed journal write back");
            }
            self.segment_len = before;
            self.unsynced.truncate(kept);
        }
        self.note(&result);
        result
    }

    /// After a failed fsync: cut the segment back to its last good fsync and append again
    /// what followed it, from the copy (the next fsync then covers it for real).
    fn rewrite_unsynced(&mut self) -> Result<(), JournalError> {
        let synced = self.segment_len - self.unsynced.len() as u64;
        self.file
            .set_len(synced)
            .and_then(|_| self.file.write_all(&self.unsynced))
            .map_err(|e| JournalError::Write(Arc::new(e)))?;
        self.dirty = true;
        self.rewrite = false;
        Ok(())
    }

    /// Whether a small write and fsync succeed in the directory (a failing journal's way
    /// back: the disk has room again).
    fn probe(&self) -> Result<(), JournalError> {
        let path = self.dir.join("probe.tmp");
        let r = File::create(&path)
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|_| f.sync_all()))
            .map_err(|e| JournalError::Write(Arc::new(e)));
        let _ = std::fs::remove_file(&path);
        r
    }

    /// Publish the journal's health after a write.
    fn note(&self, result: &Result<(), JournalError>) {
        let mut health = self.health.lock();
        match result {
            Ok(()) if health.is_some() => {
                tracing::info!("the journal writes again");
                *health = None;
            }
            Ok(()) => {}
            Err(e) => {
                if health.is_none() {
                    tracing::error!(error = %e, "the journal cannot write: new records are refused (503) until it can");
                }
                *health = Some(e.to_string());
            }
        }
    }

    /// Append `buf`; a segment's first append begins with its format marker, so opening a
    /// segment writes nothing (a full disk fails the first group, which is cut back with
    /// its marker) and no segment holds entries without one.
    fn append(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        let marker = if self.segment_len == 0 {
            files::segment_start()
        } else {
            Vec::new()
        };
        self.file
            .write_all(&marker)
            .and_then(|_| self.file.write_all(buf))
            .map_err(|e| JournalError::Write(Arc::new(e)))?;
        let n = (marker.len() + buf.len()) as u64;
        self.segment_len += n;
        self.unsynced.extend_from_slice(&marker);
        self.unsynced.extend_from_slice(buf);
        self.dirty = true;
        self.metrics.journal_bytes.inc_by(n);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        if self.dirty {
            if let Err(e) = self.file.sync_data() {
                self.rewrite = true;
                return Err(JournalError::Fsync(Arc::new(e)));
            }
            self.metrics.journal_fsyncs.inc();
            self.dirty = false;
            self.unsynced.clear();
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        self.sync()?;
        let next = self.segment + 1;
        let file = files::open_segment(&self.dir, next).map_err(|e| JournalError::Segment {
            segment: next,
            why: Arc::new(e),
        })?;
        // Switch only once the manifest names the new segment: until then appends go on in
        // the current one, whose length `segment_len` is (a failed group is cut back by it).
        files::write_manifest(&self.dir, &manifest(next, &self.state))
            .map_err(|e| JournalError::Manifest(Arc::new(e)))?;
        self.file = file;
        self.segment = next;
        self.segment_len = 0;
        Ok(())
    }

    /// Cut a new segment and hand a copy of the state (cheap: records are shared) to the
    /// snapshot thread, so appends and acks go on while the snapshot is written.
    fn checkpoint(
        &mut self,
        snapshots: &SyncSender<SnapshotJob>,
        replies: Vec<oneshot::Sender<Result<CheckpointInfo, JournalError>>>,
    ) {
        let started = Instant::now();
        if let Err(e) = self.rotate() {
            // While the journal itself is failing this is the same trouble: said once there.
            if self.health.lock().is_some() {
                tracing::debug!(error = %e, "checkpoint failed");
            } else {
                tracing::error!(error = %e, "checkpoint failed");
            }
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
            return;
        }
        self.changed_since_snapshot = false;
        self.snapshot_busy.store(true, Ordering::Release);
        let job = SnapshotJob {
            segment: self.segment,
            state: self.state.clone(),
            started,
            replies,
        };
        if let Err(std::sync::mpsc::SendError(job)) = snapshots.send(job) {
            for r in job.replies {
                let _ = r.send(Err(JournalError::SnapshotWriterGone));
            }
        }
    }
}

struct SnapshotJob {
    segment: u64,
    state: State,
    started: Instant,
    replies: Vec<oneshot::Sender<Result<CheckpointInfo, JournalError>>>,
}

fn write_snapshots(
    dir: PathBuf,
    jobs: Receiver<SnapshotJob>,
    busy: Arc<AtomicBool>,
    metrics: Metrics,
    slot: CheckpointSlot,
) {
    for job in jobs {
        let result = files::write_snapshot(&dir, job.segment, &job.state)
            .map_err(|e| JournalError::Snapshot(Arc::new(e)))
            .map(|bytes| {
                if let Err(e) = files::prune(&dir, KEEP_SNAPSHOTS) {
                    tracing::warn!(error = %e, "could not delete old checkpoint files");
                }
                let unix_secs = unix_ms() as f64 / 1000.0;
                let info = CheckpointInfo {
                    at: rfc3339(unix_secs),
                    records: job.state.pending.len() as u64,
                    bytes,
                    duration_ms: job.started.elapsed().as_secs_f64() * 1000.0,
                    unix_secs,
                };
                let m = &metrics;
                m.checkpoint_duration
                    .observe(job.started.elapsed().as_secs_f64());
                m.checkpoint_bytes.set(bytes as i64);
                m.checkpoint_records.set(info.records as i64);
                *slot.lock() = Some(info.clone());
                info
            });
        if let Err(e) = &result {
            tracing::error!(error = %e, "checkpoint failed");
        }
        busy.store(false, Ordering::Release);
        for r in job.replies {
            let _ = r.send(result.clone());
        }
    }
}

/// Start the journal thread over `dir`, continuing from a restored `state`; the first
/// segment written is `next_segment` (always a fresh file).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    inbox: JournalInbox,
    dir: PathBuf,
    state: State,
    next_segment: u64,
    interval: Duration,
    metrics: Metrics,
    slot: CheckpointSlot,
    health: JournalHealth,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::fs::create_dir_all(&dir)?;
    let file = files::open_segment(&dir, next_segment)?;
    files::write_manifest(&dir, &manifest(next_segment, &state))?;
    let busy = Arc::new(AtomicBool::new(false));
    let (snap_tx, snap_rx) = std::sync::mpsc::sync_channel(4);
    {
        let (dir, busy, metrics) = (dir.clone(), busy.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("sluice-snapshot".into())
            .spawn(move || write_snapshots(dir, snap_rx, busy, metrics, slot))?;
    }
    let mut w = Writer {
        dir,
        segment: next_segment,
        file,
        segment_len: 0,
        state,
        dirty: false,
        changed_since_snapshot: true,
        last_sync: Instant::now(),
        metrics,
        snapshot_busy: busy,
        health,
        unsynced: Vec::new(),
        rewrite: false,
        backlog: inbox.backlog,
    };
    let health = w.health.clone();
    std::thread::Builder::new()
        .name("sluice-journal".into())
        .spawn(move || guarded(&health, || run(&mut w, inbox.rx, snap_tx, interval)))
}

/// Run the journal thread's body; should it panic (a bug), say so where `/readyz` and the
/// ingress look, so the node answers 503 naming it instead of "the journal stopped".
fn guarded(health: &JournalHealth, body: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(%why, "the journal thread stopped");
        *health.lock() = Some(format!(
            "the journal thread stopped ({why}); restart the node (acknowledged records are in \
             its checkpoint directory)"
        ));
    }
}

/// The backlog cost of the group being written: of entries someone waits for (dropped when
/// the group fails: their sender is told) and of the others (kept for the next group).
#[derive(Default)]
struct GroupCost {
    awaited: Cost,
    kept: Cost,
}

impl GroupCost {
    /// The group was written (`written`) or failed: take off what no longer waits.
    fn settle(&mut self, backlog: &Backlog, written: bool) {
        if written {
            backlog.release(self.awaited.plus(self.kept));
            self.kept = Cost::default();
        } else {
            backlog.release(self.awaited);
        }
        self.awaited = Cost::default();
    }
}

fn run(w: &mut Writer, rx: Receiver<Op>, snapshots: SyncSender<SnapshotJob>, interval: Duration) {
    let mut next_snapshot = Instant::now() + interval;
    let mut buf = Vec::with_capacity(1 << 20);
    // Entries of this group in order, and whether a sender waits for them (those fail with
    // their group; the others are written again with the next one).
    let mut group: Vec<(Entry, bool)> = Vec::new();
    let mut cost = GroupCost::default();
    loop {
        let now = Instant::now();
        // Unsynced bytes are due LAZY_SYNC after the last sync; with none, the next tick
        // (a probe while the disk is failing) is LAZY_SYNC from now — never a zero wait,
        // which spun an idle node's journal thread at 100 % of a core.
        let lazy = if w.dirty {
            w.last_sync + LAZY_SYNC
        } else {
            now + LAZY_SYNC
        };
        let wake = next_snapshot.min(lazy).max(now);
        let first = match rx.recv_timeout(wake - now) {
            Ok(op) => Some(op),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut acks = Vec::new();
        let mut checkpoints = Vec::new();
        buf.clear();
        for (e, _) in &group {
            codec::encode(e, &mut buf);
        }
        let mut ops = first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()));
        for op in ops.by_ref().take(4096) {
            match op {
                Op::Write {
                    entries,
                    ack,
                    cost: c,
                } => {
                    let awaited = ack.is_some();
                    if awaited {
                        cost.awaited = cost.awaited.plus(c);
                    } else {
                        cost.kept = cost.kept.plus(c);
                    }
                    // One request's entries are one atomic frame.
                    codec::encode_batch(&entries, &mut buf);
                    for e in entries {
                        group.push((e, awaited));
                    }
                    if let Some(a) = ack {
                        acks.push(a);
                    }
                }
                Op::Checkpoint { reply } => checkpoints.push(reply),
                Op::Export { partition, reply } => {
                    // Everything sent before this request is folded in first.
                    if !group.is_empty() {
                        let sync_now = !acks.is_empty();
                        let r = commit_timed(w, &buf, sync_now);
                        settle(w, &mut group, r.is_ok());
                        cost.settle(&w.backlog, r.is_ok());
                        buf.clear();
                        for (e, _) in &group {
                            codec::encode(e, &mut buf);
                        }
                        for a in acks.drain(..) {
                            let _ = a.send(r.clone());
                        }
                    }
                    let records = match partition {
                        Some(p) => w.state.pending_of(p),
                        None => w.state.pending.values().cloned().collect(),
                    };
                    let _ = reply.send(records);
                }
            }
        }
        let result = commit_timed(w, &buf, !acks.is_empty());
        settle(w, &mut group, result.is_ok());
        cost.settle(&w.backlog, result.is_ok());
        for a in acks {
            let _ = a.send(result.clone());
        }
        if result.is_err() {
            // Do not spin on a full disk: the entries kept are written with the next group.
            std::thread::sleep(Duration::from_millis(20));
        }
        let due = Instant::now() >= next_snapshot
            && w.changed_since_snapshot
            && !w.snapshot_busy.load(Ordering::Acquire);
        if !checkpoints.is_empty() || due {
            w.checkpoint(&snapshots, checkpoints);
            next_snapshot = Instant::now() + interval;
        } else if Instant::now() >= next_snapshot {
            next_snapshot = Instant::now() + interval;
        }
        if w.segment_len > SEGMENT_BYTES
            && let Err(e) = w.rotate()
        {
            tracing::error!(error = %e, "journal rotation failed");
        }
    }
    let _ = w.sync();
}

/// [`Writer::commit_group`], timed for the backlog's refusals (how slow the disk is).
fn commit_timed(w: &mut Writer, buf: &[u8], sync_now: bool) -> Result<(), JournalError> {
    let synced_before = w.last_sync;
    w.backlog.commit_started();
    let r = w.commit_group(buf, sync_now);
    w.backlog.commit_ended(w.last_sync != synced_before);
    r
}

/// After a group: fold it into the live state when it is on disk; when it is not, drop the
/// entries someone waited for (they were told it failed) and keep the others for the next
/// group.
fn settle(w: &mut Writer, group: &mut Vec<(Entry, bool)>, written: bool) {
    if written {
        w.changed_since_snapshot |= !group.is_empty();
        for (e, _) in group.drain(..) {
            w.state.apply(e);
        }
    } else {
        group.retain(|(_, awaited)| !awaited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_thread_that_panics_leaves_its_reason_where_readyz_looks() {
        let health = JournalHealth::default();
        guarded(&health, || {});
        assert!(health.lock().is_none());
        guarded(&health, || panic!("a bug"));
        let why = health.lock().clone().expect("set");
        assert!(why.contains("journal thread stopped (a bug)"), "{why}");
    }

    #[test]
    fn errors_say_what_failed_as_the_readme_and_the_503_details_quote_them() {
        let eio = || Arc::new(io::Error::from_raw_os_error(5));
        assert!(
            JournalError::Fsync(eio())
                .to_string()
                .starts_with("journal fsync failed: ")
        );
        assert!(
            JournalError::Write(eio())
                .to_string()
                .starts_with("journal write failed: ")
        );
        let segment = JournalError::Segment {
            segment: 7,
            why: eio(),
        };
        assert!(
            segment
                .to_string()
                .starts_with("cannot open journal segment 7: ")
        );
        assert_eq!(JournalError::Stopped.to_string(), "the journal stopped");
    }

    #[test]
    fn every_segment_written_begins_with_the_marker_of_version_2_and_restores_with_step_marks() {
        use crate::durability::codec::{Layout, test_accepted};
        use crate::record::StepDone;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (handle, inbox) = channel(Limits {
            bytes: 1 << 20,
            entries: 1 << 10,
        });
        let thread = spawn(
            inbox,
            d.clone(),
            State::default(),
            0,
            Duration::from_secs(3600),
            Metrics::new().unwrap(),
            CheckpointSlot::default(),
            JournalHealth::default(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let step = |step, attempts| Entry::StepAttempted {
            partition: 0,
            seq: 1,
            step,
            attempts,
        };
        rt.block_on(async {
            let wrote = handle.write_durable(vec![test_accepted(0, 1), step(0, 1)]);
            wrote.await.unwrap().unwrap();
            handle.checkpoint().await.unwrap();
            let done = Entry::StepDone {
                partition: 0,
                seq: 1,
                step: 0,
                done: StepDone::Miss,
            };
            let wrote = handle.write_durable(vec![done, step(1, 2)]);
            wrote.await.unwrap().unwrap();
        });
        drop(handle);
        thread.join().unwrap();
        let (segments, snapshots) = files::list(&d).unwrap();
        // Segment 0 is covered by the snapshot taken when segment 1 was opened (pruned).
        assert_eq!((&segments[..], &snapshots[..]), (&[1][..], &[1][..]));
        for n in segments {
            let bytes = std::fs::read(files::segment_path(&d, n)).unwrap();
            let (version, start) = codec::segment_version(&bytes);
            assert_eq!(version, 2, "segment {n}");
            assert_eq!(bytes[..start], files::segment_start()[..]);
            let (entries, err) = codec::decode_all(&bytes[start..], Layout::V2);
            assert_eq!((entries.len(), err), (2, None), "segment {n}");
        }
        let (state, _, report) = files::restore(&d).unwrap();
        assert!(report.damage.is_empty(), "{:?}", report.damage);
        let r = &state.pending[&(0, 1)];
        assert_eq!(r.steps[0].done, Some(StepDone::Miss));
        assert_eq!(
            r.steps.iter().map(|m| m.attempts).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(r.attempts, 3);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(rfc3339(1_795_000_000.0), "2026-11-18T11:06:40.000Z");
    }
}
