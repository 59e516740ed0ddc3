//! A record on its way through a partition.

use std::time::Instant;

use super::reply::ReplySlot;
use crate::record::Record;
use crate::steps::Progress;

/// One accepted record and what the engine tracks about it while it is here.
pub struct Job {
    /// The record (attempts and first-attempt time are kept up to date in it).
    pub rec: Record,
    /// When this node took it (latency is measured from here).
    pub accepted_at: Instant,
    /// Recorded in the journal (records of `/v1/records`; not `/v1/enrich`).
    pub journaled: bool,
    /// Set for `/v1/enrich`: the envelope goes back to the request instead of a sink.
    pub reply: Option<ReplySlot>,
    /// Where the record stands in the pipeline's steps (set when it enters the in-flight
    /// queue).
    pub progress: Progress,
}
