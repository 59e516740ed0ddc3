//! The stdout sink: buffered writes to any `Write` (standard output in the service). A
//! write that fails (a closed pipe) keeps the batch with the emitter and makes the sink
//! unhealthy, so `/readyz` says so and nothing is counted emitted that went nowhere.

use std::io::Write;

use crate::sink::{Completion, Envelopes, Guarantee, Refusal, Sink, SinkError};

/// See module docs.
pub struct StdoutSink {
    out: Box<dyn Write + Send>,
    done: Vec<Completion>,
    failing: Option<String>,
}

impl StdoutSink {
    /// A sink on the process's standard output.
    pub fn new() -> Self {
        Self::to(Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )))
    }

    /// A sink on any writer (tests, `sluice enrich`).
    pub fn to(out: Box<dyn Write + Send>) -> Self {
        StdoutSink {
            out,
            done: Vec::new(),
            failing: None,
        }
    }

    fn err(&mut self, source: std::io::Error) -> SinkError {
        self.failing = Some(source.to_string());
        SinkError::Io {
            sink: "stdout".into(),
            source,
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::AtLeastOnce
    }

    fn submit(&mut self, batch: Envelopes) -> Result<(), Refusal> {
        // Flushed at once: a reader downstream sees envelopes as they are emitted, and a
        // closed pipe shows up on this batch, not on a later one.
        let written = self
            .out
            .write_all(batch.bytes())
            .and_then(|_| self.out.flush());
        if let Err(e) = written {
            let e = self.err(e);
            return Err(Refusal::Failed(batch, e));
        }
        self.failing = None;
        self.done.push(Completion::Delivered(batch));
        Ok(())
    }

    fn completed(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.done);
    }

    fn flush(&mut self, _durable: bool) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))
    }

    fn in_flight(&self) -> usize {
        self.done.iter().map(Completion::len).sum()
    }

    fn health(&self) -> Option<String> {
        self.failing.as_ref().map(|e| format!("stdout: {e}"))
    }
}
