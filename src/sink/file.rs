//! File (append, buffered) and stdout sinks.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{Sink, SinkError};

const BUFFER_BYTES: usize = 1 << 20;

/// Appends NDJSON lines to a file; flushed by the emitter at least every
/// `checkpoint.interval_ms` and on shutdown.
pub struct FileSink {
    path: String,
    out: BufWriter<File>,
    position: u64,
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
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(path)
            .map_err(io)?;
        let position = file.metadata().map_err(io)?.len();
        Ok(FileSink {
            path: path.to_string(),
            out: BufWriter::with_capacity(BUFFER_BYTES, file),
            position,
        })
    }

    fn err(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.describe(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, lines: &[u8]) -> Result<(), SinkError> {
        self.out.write_all(lines).map_err(|e| self.err(e))?;
        self.position += lines.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        self.out.get_ref().sync_data().map_err(|e| self.err(e))
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn truncate(&mut self, len: u64) -> Result<(), SinkError> {
        self.flush()?;
        let file = self.out.get_ref();
        let current = file.metadata().map_err(|e| self.err(e))?.len();
        if current < len {
            // Shorter than what was committed: someone else changed the file. Never pad it.
            tracing::warn!(sink = %self.describe(), current, committed = len,
                "file is shorter than its committed length; leaving it as it is");
            self.position = current;
            return Ok(());
        }
        if current > len {
            tracing::info!(sink = %self.describe(), from = current, to = len,
                "dropping output written after the last commit (it is re-emitted)");
            file.set_len(len).map_err(|e| self.err(e))?;
            file.sync_all().map_err(|e| self.err(e))?;
        }
        self.position = len;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file sink `{}`", self.path)
    }
}

/// Writes NDJSON lines to standard output.
pub struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
}

impl StdoutSink {
    /// A buffered stdout writer.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(BUFFER_BYTES, std::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, lines: &[u8]) -> Result<(), SinkError> {
        self.out.write_all(lines).map_err(|source| SinkError::Io {
            sink: "stdout".into(),
            source,
        })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io {
            sink: "stdout".into(),
            source,
        })
    }

    fn describe(&self) -> String {
        "stdout".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_appends_and_creates_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let p = path.to_str().unwrap();
        let mut s = FileSink::open(p).unwrap();
        s.write(b"{\"x\":1}\n").unwrap();
        s.flush().unwrap();
        drop(s);
        let mut s = FileSink::open(p).unwrap();
        assert_eq!(s.position(), 8);
        s.write(b"{\"x\":2}\n").unwrap();
        s.sync().unwrap();
        assert_eq!(s.position(), 16);
        s.truncate(8).unwrap();
        s.write(b"{\"x\":3}\n").unwrap();
        s.sync().unwrap();
        assert_eq!(s.position(), 16);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"x\":1}\n{\"x\":3}\n"
        );
    }
}
