//! Durability (README "Durability and delivery guarantees"): a journal with group commit, snapshots of the pending
//! records, and restore after a crash.
//!
//! `codec` (framing, CRC32C) and `state` (the fold over entries) are pure; `files` owns the
//! directory layout and restore; `journal` is the single writer thread; `backlog` (pure)
//! counts the request data waiting for it, which the ingress admits requests against;
//! `versions` names the format versions of what is written and forwarded (README
//! "Upgrades").

pub mod backlog;
pub mod codec;
pub mod files;
pub mod incarnation;
pub mod journal;
pub mod lock;
pub mod state;
pub mod versions;
