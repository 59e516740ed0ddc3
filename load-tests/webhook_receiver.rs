//! A webhook receiver for benchmarks: takes every POST, counts the envelopes, answers 204.
//! Replaced by the benchmark helper.
fn main() {}
