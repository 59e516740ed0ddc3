//! A record on its way through a partition.

use std::sync::Arc;
use std::time::Instant;

use super::reply::ReplySlot;

/// One accepted record and what the engine tracks about it.
pub struct Job {
    /// The client's id or a generated `p{partition}-{seq}`.
    pub id: Arc<str>,
    /// The key's JSON text as it appears in the record.
    pub key: Box<str>,
    /// The canonical key text (lookup key).
    pub canonical: Arc<str>,
    /// The record's JSON text; the lookup result is merged in when it is emitted.
    pub record: Box<str>,
    /// The result can be appended as a new member (fast merge).
    pub splice: bool,
    /// When the ingress accepted it (latency is measured from here).
    pub accepted_at: Instant,
    /// Attempts started so far (kept across a restore).
    pub attempts: u32,
    /// Wall-clock ms of the first attempt; 0 until it starts. A restored record keeps
    /// it, so its deadline is not reset by a restart.
    pub first_attempt_ms: u64,
    /// Recorded in the journal (records of `/v1/records`; not `/v1/enrich`).
    pub journaled: bool,
    /// Set for `/v1/enrich`: the envelope goes back to the request instead of a sink.
    pub reply: Option<ReplySlot>,
}
