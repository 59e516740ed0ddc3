//! `[output]` / `[dead_letter]`: which sink kind, and each kind's own section. Pure data and
//! validation, so `settings` can hold it without importing any sink.

use serde::{Deserialize, Serialize};

pub use super::cql::config::CqlSinkSettings;
pub use super::webhook::config::WebhookSettings;

/// Sink selector for `[output]` and `[dead_letter]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    File,
    Stdout,
    Cql,
    Webhook,
}

impl SinkKind {
    /// The names accepted in the config (`output.kind`, `dead_letter.kind`), as serde spells
    /// them.
    pub const NAMES: &'static [&'static str] = &["file", "stdout", "cql", "webhook"];
}

/// `[output]` / `[dead_letter]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    pub kind: SinkKind,
    /// `kind = "file"`: the file envelopes are appended to.
    pub path: String,
    pub cql: CqlSinkSettings,
    pub webhook: WebhookSettings,
}

impl SinkSettings {
    /// Problems with the section named `section` (`output` or `dead_letter`), one line each.
    pub fn problems(&self, section: &str) -> Vec<String> {
        match self.kind {
            SinkKind::File if self.path.is_empty() => {
                vec![format!(
                    "{section}.path: must not be empty for kind \"file\""
                )]
            }
            SinkKind::File | SinkKind::Stdout => Vec::new(),
            SinkKind::Cql => self.cql.problems(&format!("{section}.cql")),
            SinkKind::Webhook => self.webhook.problems(&format!("{section}.webhook")),
        }
    }
}
