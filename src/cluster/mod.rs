//! Cluster mode: several nodes share the partitions, coordinated through etcd v3.
//!
//! `assign` (pure) decides who should own what; `reach` (pure) which owners the others
//! cannot reach; `etcd` is the only code that talks to
//! etcd; `controller` runs the membership, ownership and handover protocol on top of the
//! engine's routing seam (`engine/ownership.rs`, `engine/ingress.rs`, `engine/forwarder.rs`).

pub mod assign;
pub mod controller;
pub mod etcd;
pub mod reach;
