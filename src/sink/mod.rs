//! Where envelopes go. Every sink kind is a component of its own folder with the same file
//! roles — `config.rs` (its settings section and their validation), `sink.rs` (the
//! [`Sink`]) and `tests.rs` — and the emitter sees them only through the [`Sink`] trait.
//!
//! A sink takes typed batches ([`Envelopes`]: NDJSON lines plus who each line is) and later
//! reports, envelope by envelope, whether the destination took them ([`Completion`]). The
//! emitter counts a record emitted, and commits it as terminal, only on that report; what a
//! destination refuses for good goes to the dead letter with the reason; what a sink cannot
//! write yet stays with the emitter and is offered again. So no sink drops a record.
//!
//! The trait is synchronous: the emitter owns its sinks on a thread of its own. Network
//! sinks (CQL, webhook) run their I/O on a runtime of their own and wake the emitter when
//! something completed ([`Waker`]).

mod board;
pub mod config;
pub mod cql;
pub mod file;
pub mod stdout;
pub mod webhook;

use std::sync::Arc;

pub use crate::envelope::Envelopes;
use crate::metrics::Metrics;
use config::{SinkKind, SinkSettings};

/// Why a sink could not take, write or flush a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {source}")]
    Io {
        sink: String,
        source: std::io::Error,
    },
    #[error("{sink}: {message}")]
    Setup { sink: String, message: String },
    /// Another process writes the same file (it holds the file's lock).
    #[error("{sink} is in use by another process; two sinks must not share a file")]
    InUse { sink: String },
}

impl SinkError {
    /// An error of `sink` described by `message`.
    pub fn setup(sink: &str, message: impl Into<String>) -> SinkError {
        SinkError::Setup {
            sink: sink.to_string(),
            message: message.into(),
        }
    }
}

/// What a sink promises about envelopes written before a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// The sink can be cut back to the last commit ([`Rewind`]): after a restore each
    /// envelope is in it exactly once.
    ExactlyOnce,
    /// Envelopes after the last commit are sent again after a restore — the very same
    /// envelopes (their outcome is journaled before the sink sees them).
    AtLeastOnce,
}

/// What became of envelopes a sink took.
#[derive(Debug)]
pub enum Completion {
    /// The destination has them (for files: in the file's buffer, durable at the next
    /// `flush(true)`).
    Delivered(Envelopes),
    /// The destination refused them for good; they go to the dead letter with `reason`.
    Rejected(Envelopes, String),
}

impl Completion {
    /// How many envelopes it reports on.
    pub fn len(&self) -> usize {
        match self {
            Completion::Delivered(b) | Completion::Rejected(b, _) => b.len(),
        }
    }

    /// Reports on no envelope.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a sink did not take a batch; the emitter keeps it and offers it again.
#[derive(Debug)]
pub enum Refusal {
    /// Full: offer it again after the sink's waker fired (or at the next tick).
    Busy(Envelopes),
    /// The destination cannot be written now (I/O error): offer it again later.
    Failed(Envelopes, SinkError),
}

/// Called by a sink's own threads when a completion is ready or room freed up.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What the emitter hands its sinks when it starts.
#[derive(Clone)]
pub struct Attach {
    /// Wakes the emitter (see [`Waker`]).
    pub waker: Waker,
    /// The engine's metrics (sinks add their own series).
    pub metrics: Metrics,
}

/// Sinks that can be cut back to a committed length (files).
pub trait Rewind {
    /// Bytes written so far, counting what was there when opened.
    fn position(&self) -> u64;
    /// Cut back to `len` bytes: what was written after the last commit is dropped and
    /// emitted again.
    fn truncate(&mut self, len: u64) -> Result<(), SinkError>;
    /// (device, inode) of the open file: the journal records which file its committed
    /// length is of.
    fn identity(&self) -> Option<(u64, u64)>;
    /// The path no longer names the open file (moved away, replaced, removed).
    fn moved(&self) -> bool;
    /// Open the file the path names now (creating it when `create`); `Ok(false)` when
    /// nothing changed or there is nothing to open.
    fn reopen(&mut self, create: bool) -> Result<bool, SinkError>;
}

/// An envelope destination; see module docs.
pub trait Sink: Send {
    /// For logs, errors and `/readyz`.
    fn describe(&self) -> String;
    /// What it promises across a crash.
    fn guarantee(&self) -> Guarantee;
    /// Take a batch; it comes back through [`Sink::completed`].
    fn submit(&mut self, batch: Envelopes) -> Result<(), Refusal>;
    /// Move what finished since the last call into `out`.
    fn completed(&mut self, out: &mut Vec<Completion>);
    /// Push buffered envelopes out; `durable`: also make them durable (fsync).
    fn flush(&mut self, durable: bool) -> Result<(), SinkError>;
    /// Envelopes taken and not yet reported.
    fn in_flight(&self) -> usize;
    /// `None` when healthy, else what is wrong (shown by `/readyz`).
    fn health(&self) -> Option<String>;
    /// Called once when the emitter starts: its waker (for sinks that complete on threads
    /// of their own) and the metrics.
    fn attach(&mut self, _attach: Attach) {}
    /// The sink's rewind handle, when it has one (exactly-once sinks).
    fn rewind(&mut self) -> Option<&mut dyn Rewind> {
        None
    }
}

/// Which sink a section configures (names metrics and log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Output,
    DeadLetter,
}

impl Role {
    /// `output` or `dead_letter`, as the config section is named.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Output => "output",
            Role::DeadLetter => "dead_letter",
        }
    }
}

/// Open the sink a `[output]` / `[dead_letter]` section describes.
pub fn open(settings: &SinkSettings, role: Role) -> Result<Box<dyn Sink>, SinkError> {
    match settings.kind {
        SinkKind::File => Ok(Box::new(file::FileSink::open(&settings.path)?)),
        SinkKind::Stdout => Ok(Box::new(stdout::StdoutSink::new())),
        SinkKind::Cql => Ok(Box::new(cql::CqlSink::open(&settings.cql)?)),
        SinkKind::Webhook => Ok(Box::new(webhook::WebhookSink::open(
            &settings.webhook,
            role,
        )?)),
    }
}
