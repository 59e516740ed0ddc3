//! `[output.cql]` / `[dead_letter.cql]`: envelopes as INSERTs.

use serde::{Deserialize, Serialize};

use crate::pointer::Pointer;

/// See module docs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CqlSinkSettings {
    pub contact_points: Vec<String>,
    pub keyspace: String,
    pub table: String,
    pub columns: Vec<String>,
    /// JSON pointers into the envelope, one per column; "" = the whole envelope.
    pub values: Vec<String>,
    pub consistency: String,
    /// INSERTs in flight at once.
    pub concurrency: u64,
}

impl CqlSinkSettings {
    /// Problems with the section named `section`, one line each.
    pub fn problems(&self, section: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.contact_points.is_empty() {
            p.push(format!("{section}.contact_points: at least one HOST:PORT"));
        }
        if self.table.is_empty() {
            p.push(format!("{section}.table: must not be empty"));
        }
        if self.columns.is_empty() || self.columns.len() != self.values.len() {
            p.push(format!(
                "{section}.values: one pointer per column expected ({} columns, {} values)",
                self.columns.len(),
                self.values.len()
            ));
        }
        for v in &self.values {
            if let Err(e) = Pointer::parse(v) {
                p.push(format!("{section}.values: {e}"));
            }
        }
        if self.concurrency < 1 {
            p.push(format!("{section}.concurrency: must be at least 1"));
        }
        p
    }
}
