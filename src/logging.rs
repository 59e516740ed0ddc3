//! Logging setup: `tracing` to stderr, text or JSON, filtered by `RUST_LOG` (default info).
//!
//! A log line must never take the service down or hold it up. stderr is often a file on the
//! data's filesystem (`nohup`, a unit file's `StandardError=file:`): when that disk is full
//! every write fails. tracing-subscriber's own writer would then report the failure with
//! `eprintln!`, which panics on the same full stderr — and a second panic while unwinding
//! (a `Drop` that logs) aborts the process. So lines go through [`LogWriter`] instead: the
//! thread that logs only hands the finished line to a bounded queue; one `sluice-log`
//! thread writes the queue to stderr. A line that cannot be written — the write failed, or
//! the writer is more than [`QUEUE`] lines behind (a stalled pipe) — is dropped and counted
//! ([`write_errors`], exported as `sluice_log_write_errors_total`); nothing panics and no
//! service thread ever waits for stderr.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Log line format chosen with `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Lines waiting for the writer thread at most; beyond that new lines are dropped (counted).
pub const QUEUE: usize = 8192;

/// Log lines that could not be written since the process started.
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The writer thread's queue, once started.
static QUEUE_TX: OnceLock<Option<SyncSender<Msg>>> = OnceLock::new();

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been written (or dropped).
    Flush(Sender<()>),
}

/// Log lines dropped so far because stderr could not take them (write failed, or the
/// writer fell [`QUEUE`] lines behind).
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

/// Install the global subscriber; a second call (tests) is ignored.
pub fn init(format: LogFormat) {
    start_writer();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // LogWriter never reports an error; and should a write fail anyway, never fall back
        // to `eprintln!` (it panics when stderr cannot be written).
        .log_internal_errors(false)
        .with_writer(LogWriter::new);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Wait until the lines logged so far are written to stderr (at most `limit`): before the
/// process exits, so its last words are not lost in the queue.
pub fn flush(limit: Duration) {
    let Some(Some(tx)) = QUEUE_TX.get() else {
        return;
    };
    let until = Instant::now() + limit;
    let (done, wait) = std::sync::mpsc::channel();
    let mut msg = Msg::Flush(done);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(m)) => {
                if Instant::now() >= until {
                    return;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let _ = wait.recv_timeout(until.saturating_duration_since(Instant::now()));
}

/// Write `text` to stderr as the process's own message (not a log line): after the queued
/// log lines, never panicking; a failed write is counted like a log line's.
pub fn print_stderr(text: &str) {
    flush(Duration::from_secs(1));
    write_stderr(text.as_bytes());
}

fn start_writer() {
    QUEUE_TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-log".into())
            .spawn(move || write_lines(rx))
            .ok()
            .map(|_| tx)
    });
}

/// The writer thread: lines to stderr in order; failures counted, never fatal.
fn write_lines(rx: Receiver<Msg>) {
    let mut reported = 0;
    for msg in rx {
        match msg {
            Msg::Line(line) => {
                if write_stderr(&line) {
                    let lost = write_errors();
                    if lost > reported {
                        // Goes through the queue like any line (this thread never blocks
                        // on itself: the queue is only ever tried).
                        tracing::warn!(
                            lost = lost - reported,
                            "log lines could not be written (stderr full or failing); \
                             counted in sluice_log_write_errors_total"
                        );
                        reported = lost;
                    }
                }
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One write of `bytes` to stderr; `false` (counted) when it failed.
fn write_stderr(bytes: &[u8]) -> bool {
    let mut err = std::io::stderr().lock();
    let ok = err.write_all(bytes).and_then(|_| err.flush()).is_ok();
    if !ok {
        WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// The subscriber's writer, one per event: collects the formatted line and, when dropped,
/// hands it to the writer thread without waiting. Its writes never fail.
pub struct LogWriter {
    line: Vec<u8>,
}

impl LogWriter {
    /// A writer for one event.
    pub fn new() -> LogWriter {
        LogWriter { line: Vec::new() }
    }
}

impl Default for LogWriter {
    fn default() -> Self {
        LogWriter::new()
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match QUEUE_TX.get() {
            Some(Some(tx)) => match tx.try_send(Msg::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(Msg::Line(line))) => {
                    write_stderr(&line);
                }
                Err(TrySendError::Disconnected(_)) => {}
            },
            // No writer thread (it could not be started): write here, still never panicking.
            _ => {
                write_stderr(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_writer_takes_every_write_and_queues_nothing_empty() {
        let mut w = LogWriter::new();
        assert_eq!(w.write(b"abc").unwrap(), 3);
        w.write_all(b"def\n").unwrap();
        w.flush().unwrap();
        assert_eq!(w.line, b"abcdef\n");
        std::mem::take(&mut w.line);
        drop(w);
    }
}
