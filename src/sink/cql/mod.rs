//! `kind = "cql"`: each envelope becomes one prepared INSERT. INSERT is an upsert keyed by
//! the table's primary key, so an envelope sent again after a crash overwrites itself:
//! with the default mapping (keyed by `id`) the table holds each record once.

pub mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use sink::CqlSink;
