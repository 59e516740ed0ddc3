//! The header names of the nodes' internal API (`POST /internal/v1/import`, forwarded
//! `/v1/enrich`): the one list the sending side (`engine/forwarder.rs`, `http/cluster.rs`)
//! and the receiving side (`http/cluster.rs`, `http/problem.rs`) share. A leaf: it imports
//! nothing of the crate.

/// The sending node's id (the owner keeps a resend watermark per source and partition).
pub const H_SOURCE: &str = "x-sluice-source";
/// The forwarded records' partition.
pub const H_PARTITION: &str = "x-sluice-partition";
/// The owner's epoch the sender saw; an owner at another epoch refuses (409).
pub const H_EPOCH: &str = "x-sluice-epoch";
/// `1`: a handover to the partition's next owner, staged there until it owns it.
pub const H_HANDOVER: &str = "x-sluice-handover";
/// The sender's incarnation: a node started on an empty checkpoint.dir is a new incarnation
/// of its id, whose stage numbers start again, so an owner must not take its batches for
/// resends of the former incarnation's.
pub const H_INCARNATION: &str = "x-sluice-incarnation";
/// On a 409: the receiver already holds the sender's records of that partition numbered
/// below this (they are its to finish).
pub const H_IMPORTED_UPTO: &str = "x-sluice-imported-upto";
/// Marks a `/v1/enrich` request one node sent on to an owner: it is never sent on again.
pub const H_FORWARDED: &str = "x-sluice-forwarded";
