//! The file sink: one `write` per batch (a batch counts as delivered only once the file
//! took all of it), fsync on a durable flush, truncation on restore.
//!
//! Before each write it checks that its path still names the file it has open (by device
//! and inode): a file moved away (log rotation), replaced or removed is never written to
//! unseen. The batch is refused (the records stay pending, the sink unhealthy) and the
//! emitter commits what the old file holds and reopens the path (`Rewind::reopen`) — at
//! once when a new file is there, on SIGHUP otherwise.
//!
//! A failed fsync is not retried as if nothing happened: the kernel may already have dropped
//! the dirty pages it could not write back, and a later fsync that succeeds says nothing
//! about them ("fsyncgate"). So the sink keeps a copy of what it wrote since its last good
//! fsync; after a failed one it takes no new batch (they stay pending with the emitter, the
//! sink is unhealthy), and the next durable flush cuts the file back to the last good fsync,
//! writes that copy again and syncs. Only then is anything committed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sink::{Completion, Envelopes, Guarantee, Refusal, Rewind, Sink, SinkError};

/// Bytes written since the last good fsync kept at most; beyond that the sink syncs by
/// itself (without a journal nothing else ever asks it to).
const UNSYNCED_MAX: usize = 32 << 20;

/// Appends NDJSON lines to a file; made durable by the emitter at least every
/// `checkpoint.interval_ms` and on shutdown.
pub struct FileSink {
    path: String,
    out: File,
    position: u64,
    done: Vec<Completion>,
    /// The last write or flush error, until a write succeeds again.
    failing: Option<String>,
    /// (device, inode) of the open file.
    id: (u64, u64),
    /// The path no longer names the open file.
    moved: bool,
    /// A copy of the bytes written since the last good fsync: the file's
    /// `position - unsynced.len()` first bytes are durable.
    unsynced: Vec<u8>,
    /// The last fsync failed (why): `unsynced` is written again before the next one, and no
    /// batch is taken until that succeeded.
    sync_failed: Option<String>,
    /// Tests: the next fsyncs fail with EIO.
    #[cfg(test)]
    pub(super) fail_syncs: bool,
}

fn id_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl FileSink {
    /// Open `path` for appending, creating it and its parent directories.
    pub fn open(path: &str) -> Result<Self, SinkError> {
        Self::open_with(path, false)
    }

    /// Create `path` afresh (truncating it), for one-shot runs like `sluice enrich`.
    pub fn create(path: &str) -> Result<Self, SinkError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &str, truncate: bool) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            sink: format!("file sink `{path}`"),
            source,
        };
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(path)
            .map_err(io)?;
        // One writer per file, across processes (released when the process exits).
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SinkError::InUse {
                    sink: format!("file sink `{path}`"),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let meta = file.metadata().map_err(io)?;
        Ok(FileSink {
            path: path.to_string(),
            out: file,
            position: meta.len(),
            done: Vec::new(),
            failing: None,
            id: id_of(&meta),
            moved: false,
            unsynced: Vec::new(),
            sync_failed: None,
            #[cfg(test)]
            fail_syncs: false,
        })
    }

    /// Whether the path still names the open file (a device such as `/dev/full` always does).
    fn path_is_ours(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(m) => id_of(&m) == self.id,
            Err(_) => false,
        }
    }

    /// fsync the data (what `flush(true)` promises).
    fn sync(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        match self.out.sync_data() {
            // A device or pipe named as the path (e.g. /dev/stdout) cannot be synced: there
            // is nothing more to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            r => r,
        }
    }

    /// Sync, or after a failed sync first cut the file back to its last good sync and write
    /// again what it held since (from the copy). On success everything written is durable.
    fn sync_or_rewrite(&mut self) -> std::io::Result<()> {
        if self.sync_failed.is_some() {
            let synced = self.position - self.unsynced.len() as u64;
            if self.out.metadata()?.is_file() {
                self.out.set_len(synced)?;
            }
            self.out.write_all(&self.unsynced)?;
        }
        match self.sync() {
            Ok(()) => {
                self.unsynced.clear();
                if self.sync_failed.take().is_some() {
                    tracing::info!(sink = %self.describe(),
                        "the file syncs again; what it held since its last good fsync was written again");
                    self.failing = None;
                }
                Ok(())
            }
            Err(e) => {
                if self.sync_failed.is_none() {
                    tracing::error!(sink = %self.describe(), error = %e,
                        "fsync failed: what was written since the last good fsync is written again before anything is committed; new records stay pending");
                }
                self.sync_failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn err(&mut self, source: std::io::Error) -> SinkError {
        self.failing = Some(source.to_string());
        SinkError::Io {
            sink: self.describe(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!("file sink `{}`", self.path)
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::ExactlyOnce
    }

    fn submit(&mut self, batch: Envelopes) -> Result<(), Refusal> {
        if self.moved || !self.path_is_ours() {
            self.moved = true;
            let e = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file was moved, replaced or removed; records stay pending until the path \
                 is there again (reopened at once when a new file appears, or on SIGHUP)",
            );
            let e = self.err(e);
            return Err(Refusal::Failed(batch, e));
        }
        if let Some(why) = &self.sync_failed {
            let e = std::io::Error::other(format!(
                "fsync failed ({why}); new records stay pending until the file syncs again"
            ));
            let e = self.err(e);
            return Err(Refusal::Failed(batch, e));
        }
        if let Err(e) = self.out.write_all(batch.bytes()) {
            // Part of the batch may be in the file: cut it away, so a retry never leaves a
            // torn line behind.
            let torn = self
                .out
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() > self.position);
            if torn && let Err(cut) = self.out.set_len(self.position) {
                tracing::error!(sink = %self.describe(), error = %cut,
                    "cannot cut a partly written batch back");
            }
            let e = self.err(e);
            return Err(Refusal::Failed(batch, e));
        }
        self.failing = None;
        self.position += batch.bytes().len() as u64;
        self.unsynced.extend_from_slice(batch.bytes());
        if self.unsynced.len() > UNSYNCED_MAX {
            // The batch is in the file either way: a failed sync here only means it is
            // written again before the next commit.
            let _ = self.sync_or_rewrite();
        }
        self.done.push(Completion::Delivered(batch));
        Ok(())
    }

    fn completed(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.done);
    }

    fn flush(&mut self, durable: bool) -> Result<(), SinkError> {
        if !durable {
            // Nothing is promised durable (no journal): no copy to keep either.
            self.unsynced.clear();
            return Ok(());
        }
        self.sync_or_rewrite().map_err(|e| self.err(e))
    }

    fn in_flight(&self) -> usize {
        self.done.iter().map(Completion::len).sum()
    }

    fn health(&self) -> Option<String> {
        self.failing
            .as_ref()
            .map(|e| format!("{}: {e}", self.describe()))
    }

    fn rewind(&mut self) -> Option<&mut dyn Rewind> {
        Some(self)
    }
}

impl Rewind for FileSink {
    fn position(&self) -> u64 {
        self.position
    }

    fn identity(&self) -> Option<(u64, u64)> {
        Some(self.id)
    }

    fn moved(&self) -> bool {
        self.moved
    }

    fn reopen(&mut self, create: bool) -> Result<bool, SinkError> {
        if self.path_is_ours() {
            self.moved = false;
            return Ok(false);
        }
        if !create && std::fs::metadata(&self.path).is_err() {
            return Ok(false);
        }
        let fresh = FileSink::open(&self.path)?;
        tracing::info!(sink = %self.describe(), old_length = self.position,
            new_length = fresh.position, "reopened the file (rotated or replaced)");
        let done = std::mem::take(&mut self.done);
        *self = fresh;
        self.done = done;
        Ok(true)
    }

    fn truncate(&mut self, len: u64) -> Result<(), SinkError> {
        let current = match self.out.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err(self.err(e)),
        };
        if current < len {
            // Shorter than what was committed: someone else cut the file. Never pad it, and
            // never write onto a torn last line: cut the fragment back to the last newline.
            let keep = match last_line_end(&self.out, current) {
                Ok(k) => k,
                Err(e) => return Err(self.err(e)),
            };
            if keep < current
                && let Err(e) = self.out.set_len(keep).and_then(|_| self.out.sync_all())
            {
                return Err(self.err(e));
            }
            self.unsynced.clear();
            self.sync_failed = None;
            tracing::error!(sink = %self.describe(), committed = len, found = current,
                missing_bytes = len - keep, torn_fragment_bytes = current - keep,
                "the file is shorter than its committed length: {} committed byte(s) are missing \
                 (cut by something else than sluice); a torn last line was removed; appending after it",
                len - keep);
            self.position = keep;
            return Ok(());
        }
        if current > len {
            tracing::info!(sink = %self.describe(), from = current, to = len,
                "dropping output written after the last commit (it is re-emitted)");
            if let Err(e) = self.out.set_len(len).and_then(|_| self.out.sync_all()) {
                return Err(self.err(e));
            }
            // Cut back to a committed (synced) length and synced: nothing to write again.
            self.unsynced.clear();
            self.sync_failed = None;
        }
        self.position = len;
        Ok(())
    }
}

/// The length of `file`'s first `len` bytes up to and including its last newline.
fn last_line_end(file: &File, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
