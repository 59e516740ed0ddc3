//! Shared CQL plumbing for the lookup backend (`lookup/cql.rs`) and the sink
//! (`sink/cql.rs`): value conversions and the driver session.

pub mod session;
pub mod values;
