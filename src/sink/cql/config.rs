//! `[output.cql]` / `[dead_letter.cql]`: envelopes as INSERTs.

use serde::{Deserialize, Serialize};

use crate::pointer::Pointer;

/// The consistency levels a config may name (any case), as `cql::session::consistency`
/// knows them.
pub const CONSISTENCY_LEVELS: [&str; 9] = [
    "ANY",
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
];

/// The problem with a consistency level set at `key`, if it is not one of
/// [`CONSISTENCY_LEVELS`].
pub fn consistency_problem(key: &str, level: &str) -> Option<String> {
    (!CONSISTENCY_LEVELS.contains(&level.to_ascii_uppercase().as_str())).then(|| {
        format!(
            "{key}: \"{level}\" is not one of {}",
            CONSISTENCY_LEVELS.join(", ")
        )
    })
}

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
        p.extend(consistency_problem(
            &format!("{section}.consistency"),
            &self.consistency,
        ));
        if self.concurrency < 1 {
            p.push(format!("{section}.concurrency: must be at least 1"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_names_are_checked_in_any_case() {
        for level in CONSISTENCY_LEVELS {
            assert!(crate::cql::session::consistency(level).is_ok(), "{level}");
            assert_eq!(consistency_problem("k", &level.to_ascii_lowercase()), None);
        }
        assert_eq!(
            consistency_problem("output.cql.consistency", "most"),
            Some(
                "output.cql.consistency: \"most\" is not one of ANY, ONE, TWO, THREE, QUORUM, \
                 ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE"
                    .into()
            )
        );
    }
}
