//! `kind = "stdout"`: envelopes written to standard output (for pipes and container
//! logs), at least once across crashes. It has no settings of its own.

mod sink;
#[cfg(test)]
mod tests;

pub use sink::StdoutSink;
