//! Where envelopes go. A sink takes whole batches of NDJSON lines (already serialized by
//! the partition threads) and must have them durable in its own sense after `flush`.
//!
//! The trait is synchronous on purpose: the emitter owns its sinks on a thread of its own,
//! and a network sink (webhook, CQL) implements it by handing batches to its own task over
//! a bounded channel — a full channel blocks the emitter, which is exactly the
//! backpressure that must reach the partitions.

pub mod cql;
pub mod file;

use crate::settings::{SinkKind, SinkSettings};

/// Why a sink could not take or flush a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {source}")]
    Io {
        sink: String,
        source: std::io::Error,
    },
    #[error("sink kind `{0}` is not available in this build")]
    Unsupported(String),
}

/// An envelope destination.
pub trait Sink: Send {
    /// Append a batch of complete NDJSON lines.
    fn write(&mut self, lines: &[u8]) -> Result<(), SinkError>;
    /// Push buffered lines to the destination.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Flush and make everything written so far durable (fsync for files).
    fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// Bytes written so far, counting what was there when opened (files); a restore
    /// truncates the file back to the last committed position. 0 for sinks without one.
    fn position(&self) -> u64 {
        0
    }
    /// Cut the sink back to `len` bytes (restore drops what was written after the last
    /// commit; it is re-emitted). Sinks without positions ignore it.
    fn truncate(&mut self, _len: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// For logs and errors.
    fn describe(&self) -> String;
}

/// Open the sink a `[output]` / `[dead_letter]` section describes.
pub fn open(settings: &SinkSettings) -> Result<Box<dyn Sink>, SinkError> {
    match settings.kind {
        SinkKind::File => Ok(Box::new(file::FileSink::open(&settings.path)?)),
        SinkKind::Stdout => Ok(Box::new(file::StdoutSink::new())),
        SinkKind::Cql => Ok(Box::new(cql::CqlSink::open(&settings.cql)?)),
        SinkKind::Webhook => Err(SinkError::Unsupported("webhook".into())),
    }
}
