//! Pipelines of several lookups per record (README "Pipelines"), as pure code: the
//! dependency graph of the steps ([`graph`]) and one record's progress through them
//! ([`progress`]). The partition actor drives them; nothing here does I/O.

pub mod graph;
pub mod progress;

pub use graph::{Graph, GraphError, MissRule, StepSpec};
pub use progress::{End, Progress, Refused, Slot, Status, Verdict};
