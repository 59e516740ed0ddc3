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
        Ok(FileSink {
            path: path.to_string(),
            out: BufWriter::with_capacity(BUFFER_BYTES, file),
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
        self.out.write_all(lines).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))
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
        s.write(b"{\"x\":2}\n").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"x\":1}\n{\"x\":2}\n"
        );
    }
}
