//! `kind = "file"`: envelopes appended to a file, exactly once across crashes (the file is
//! cut back to its committed length on restore). Its only setting is `path`.

mod sink;
#[cfg(test)]
mod tests;

pub use sink::FileSink;
