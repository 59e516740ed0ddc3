//! Builds the configured lookup backend (kept apart from the trait so the trait module
//! does not depend on any backend).

use super::Lookup;

/// Why the configured backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is wrong (unreadable table, bad column): exit 2.
    #[error("{0}")]
    Config(String),
    /// The backend could not be reached: exit 1.
    #[error("{0}")]
    Connect(String),
}

/// What [`build`] would refuse in the configuration, without connecting anywhere: for
/// `backend = "memory"` the table is loaded (and dropped), so an unreadable or malformed
/// table, or a row without the key column, is reported (one line, naming the key and the
/// line). A CQL backend is not contacted: its settings are checked by
/// `settings::validate`, reaching it is a runtime matter.
pub fn check(settings: &crate::settings::Settings) -> Vec<String> {
    use crate::settings::Backend;
    match settings.lookup.backend {
        Backend::Memory => match super::memory::MemoryTable::load(&settings.lookup.memory) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        },
        Backend::Cql => Vec::new(),
    }
}

/// Build the backend `settings.lookup` selects.
pub fn build(
    settings: &crate::settings::Settings,
) -> Result<std::sync::Arc<dyn Lookup>, BuildError> {
    use crate::settings::Backend;
    match settings.lookup.backend {
        Backend::Memory => {
            let table = super::memory::MemoryTable::load(&settings.lookup.memory)
                .map_err(|e| BuildError::Config(e.to_string()))?;
            tracing::info!(rows = table.len(), table = %settings.lookup.memory.table, "memory table loaded");
            Ok(std::sync::Arc::new(table))
        }
        Backend::Cql => {
            let l = super::cql::CqlLookup::connect_blocking(
                &settings.lookup.cql,
                std::time::Duration::from_millis(settings.lookup.attempt_timeout_ms),
            )
            .map_err(|e| BuildError::Connect(e.to_string()))?
            .with_cache(
                settings.lookup.cache.max_entries,
                std::time::Duration::from_millis(settings.lookup.cache.ttl_ms),
            );
            tracing::info!(backend = %l.describe(), "cql session ready");
            Ok(std::sync::Arc::new(l))
        }
    }
}
