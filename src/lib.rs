//! sluice: asynchronous enrichment of JSON records with Flink Async I/O guarantees.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so integration tests and
//! benchmarks drive exactly the code users run. See ARCHITECTURE.md for the map.

pub mod cli;
pub mod cluster;
pub mod cql;
pub mod durability;
pub mod engine;
pub mod envelope;
pub mod http;
pub mod json;
pub mod logging;
pub mod lookup;
pub mod metrics;
pub mod node;
pub mod peer_api;
pub mod pointer;
pub mod record;
pub mod settings;
pub mod sink;
pub mod steps;
