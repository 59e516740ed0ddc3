//! Builds the configured lookup backends (kept apart from the trait so the trait module
//! does not depend on any backend): the single lookup, or one backend per step of a
//! pipeline (README "Pipelines") — a memory table of its own per memory step, one CQL
//! session shared by the cql steps with a statement (and a cache) per step, an HTTP client
//! per http step.

use std::sync::Arc;
use std::time::Duration;

use super::Lookup;
use super::cql::{CqlLookup, CqlSession};
use super::memory::MemoryTable;
use crate::settings::{Backend, Settings, Step, StepBackend};

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

/// What [`build_pipeline`] would refuse in the configuration, without connecting anywhere:
/// every memory table (of `backend = "memory"`, or of each memory step) is loaded and
/// dropped, so an unreadable or malformed table, or a row without the key column, is
/// reported (one line, naming the key — `lookup.steps.NAME.table` for a step — and the
/// line). CQL and HTTP backends are not contacted: their settings are checked by
/// `settings::validate`, reaching them is a runtime matter.
pub fn check(settings: &Settings) -> Vec<String> {
    if !settings.has_steps() {
        return match settings.lookup.backend {
            Backend::Memory => match MemoryTable::load(&settings.lookup.memory) {
                Ok(_) => Vec::new(),
                Err(e) => vec![e.to_string()],
            },
            Backend::Cql => Vec::new(),
        };
    }
    settings
        .lookup
        .steps
        .iter()
        .filter(|(_, step)| step.backend == StepBackend::Memory && loadable(step))
        .filter_map(|(name, step)| MemoryTable::load_step(name, step).err())
        .map(|e| e.to_string())
        .collect()
}

/// Whether a memory step's table is worth loading: the problems loading would report
/// otherwise (no file, no key column, a bad pointer) are `settings::validate`'s, said once.
fn loadable(step: &Step) -> bool {
    let pointer_ok = |p: &str| p.is_empty() || crate::pointer::Pointer::parse(p).is_ok();
    std::fs::metadata(&step.table).is_ok()
        && !step.key_column.is_empty()
        && step.binds.len() == 1
        && pointer_ok(&step.binds[0])
        && pointer_ok(&step.delay_field)
        && pointer_ok(&step.fail_field)
}

/// Build the backend of the single-lookup form, or of the first step of a pipeline (for
/// callers that know one backend only; see [`build_pipeline`]).
pub fn build(settings: &Settings) -> Result<Arc<dyn Lookup>, BuildError> {
    build_pipeline(settings)?
        .into_iter()
        .next()
        .ok_or_else(|| BuildError::Config("lookup: no step to build".into()))
}

/// One backend per step, in [`Settings::step_names`] order (the indices of
/// `Settings::step_graph`); the single-lookup form is one backend.
pub fn build_pipeline(settings: &Settings) -> Result<Vec<Arc<dyn Lookup>>, BuildError> {
    if !settings.has_steps() {
        return Ok(vec![build_single(settings)?]);
    }
    let mut session: Option<CqlSession> = None;
    let mut built: Vec<Arc<dyn Lookup>> = Vec::new();
    for (name, step) in &settings.lookup.steps {
        let lookup: Arc<dyn Lookup> = match step.backend {
            StepBackend::Memory => {
                let mut table = MemoryTable::load_step(name, step)
                    .map_err(|e| BuildError::Config(e.to_string()))?;
                if step.binds.first() == Some(&settings.pipeline.key) {
                    table = table.keyed_by_record_key();
                }
                tracing::info!(step = %name, rows = table.len(), table = %step.table, "memory table loaded");
                Arc::new(table)
            }
            StepBackend::Cql => {
                let shared = match &session {
                    Some(s) => s.clone(),
                    None => {
                        let s = CqlSession::connect_blocking(&settings.lookup.cql)
                            .map_err(|e| BuildError::Connect(e.to_string()))?;
                        tracing::info!(contact_points = ?settings.lookup.cql.contact_points, "cql session ready");
                        session.insert(s).clone()
                    }
                };
                let l = CqlLookup::prepare(
                    &shared,
                    &format!("lookup.steps.{name}"),
                    &step.query,
                    &step.binds,
                    Duration::from_millis(step.attempt_timeout_ms),
                )
                .map_err(|e| BuildError::Connect(e.to_string()))?
                .with_cache(
                    step.cache.max_entries,
                    Duration::from_millis(step.cache.ttl_ms),
                    Duration::from_millis(step.cache.miss_ttl_ms),
                );
                tracing::info!(step = %name, backend = %l.describe(), "cql statement prepared");
                Arc::new(l)
            }
            StepBackend::Http => http_step(name, step)?,
        };
        built.push(lookup);
    }
    Ok(built)
}

/// The backend of http step `name`.
fn http_step(name: &str, step: &Step) -> Result<Arc<dyn Lookup>, BuildError> {
    use super::http::{HttpError, HttpLookup};
    match HttpLookup::new(name, step) {
        Ok(l) => {
            tracing::info!(step = name, backend = %l.describe(), "http step ready");
            Ok(Arc::new(l))
        }
        // The client (its TLS setup, its runtime) could not start: not the user's config.
        Err(e @ HttpError::Client { .. }) => Err(BuildError::Connect(e.to_string())),
        Err(e) => Err(BuildError::Config(e.to_string())),
    }
}

/// The one backend `settings.lookup` selects without steps.
fn build_single(settings: &Settings) -> Result<Arc<dyn Lookup>, BuildError> {
    match settings.lookup.backend {
        Backend::Memory => {
            let table = MemoryTable::load(&settings.lookup.memory)
                .map_err(|e| BuildError::Config(e.to_string()))?;
            tracing::info!(rows = table.len(), table = %settings.lookup.memory.table, "memory table loaded");
            Ok(Arc::new(table))
        }
        Backend::Cql => {
            let cache = &settings.lookup.cache;
            let l = CqlLookup::connect_blocking(
                &settings.lookup.cql,
                Duration::from_millis(settings.lookup.attempt_timeout_ms),
            )
            .map_err(|e| BuildError::Connect(e.to_string()))?
            .with_cache(
                cache.max_entries,
                Duration::from_millis(cache.ttl_ms),
                cache.miss_ttl(),
            );
            tracing::info!(backend = %l.describe(), "cql session ready");
            Ok(Arc::new(l))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::{LookupRequest, Pending};

    fn with_steps(steps: Vec<(&str, Step)>) -> Settings {
        let mut s = Settings::defaults();
        s.lookup.steps = steps
            .into_iter()
            .map(|(n, st)| (n.to_string(), st))
            .collect();
        s
    }

    fn memory_step(into: &str, table: &str, key_column: &str, bind: &str) -> Step {
        let mut s = Step::new(StepBackend::Memory, into);
        s.table = table.into();
        s.key_column = key_column.into();
        s.binds = vec![bind.into()];
        s
    }

    fn plans() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/plans.jsonl").into()
    }

    fn users() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/sample-users.jsonl").into()
    }

    fn found(l: &dyn Lookup, record: &str) -> Option<String> {
        let req = LookupRequest {
            key: "",
            record,
            attempt: 1,
        };
        match l.start(&req) {
            Pending::Ready(r) => r.unwrap().map(|row| row.to_string()),
            Pending::Later(_) => panic!("a memory table without delay answers at once"),
        }
    }

    #[test]
    fn a_pipeline_gets_a_backend_per_step_in_name_order() {
        let s = with_steps(vec![
            ("user", memory_step("/user", &users(), "user_id", "/uid")),
            ("plan", memory_step("/plan", &plans(), "plan", "/user/tier")),
        ]);
        let built = build_pipeline(&s).unwrap();
        assert_eq!(built.len(), 2);
        assert_eq!(s.step_names(), vec!["plan", "user"]);
        let record = r#"{"uid": "u1", "user": {"tier": "pro"}}"#;
        let plan = found(built[0].as_ref(), record).unwrap();
        assert!(plan.contains("\"seats\":5"), "{plan}");
        let user = found(built[1].as_ref(), record).unwrap();
        assert!(user.contains("\"Ada\""), "{user}");
        // The single-lookup form: one backend, keyed by the request's key.
        let mut single = Settings::defaults();
        single.lookup.memory.table = users();
        let single = build_pipeline(&single).unwrap();
        assert_eq!(single.len(), 1);
        let req = LookupRequest {
            key: "u2",
            record: "{}",
            attempt: 1,
        };
        assert!(
            matches!(single[0].start(&req), Pending::Ready(Ok(Some(row))) if row.contains("Grace"))
        );
    }

    #[test]
    fn an_http_step_is_built_and_its_bad_url_refused_naming_the_step() {
        let mut geo = Step::new(StepBackend::Http, "/geo");
        geo.url = "http://127.0.0.1:9/geo/{0}".into();
        geo.binds = vec!["/ip".into()];
        let built = build_pipeline(&with_steps(vec![("geo", geo.clone())])).unwrap();
        assert!(
            built[0].describe().contains("127.0.0.1:9/geo"),
            "{}",
            built[0].describe()
        );
        geo.url = "http://127.0.0.1:9/geo/{3}".into();
        let e = build_pipeline(&with_steps(vec![("geo", geo)]))
            .err()
            .unwrap();
        assert!(
            matches!(&e, BuildError::Config(m) if m.starts_with("lookup.steps.geo.url")),
            "{e}"
        );
    }

    #[test]
    fn check_loads_every_memory_steps_table_naming_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"plan\": \"a\"}\nnot json\n").unwrap();
        let bad = bad.display().to_string();
        let s = with_steps(vec![
            ("a", memory_step("/a", &bad, "plan", "/k")),
            ("b", memory_step("/b", &plans(), "plan", "/k")),
            // Missing: `settings::validate` says so, once.
            ("c", memory_step("/c", "/no/such.jsonl", "plan", "/k")),
            ("d", memory_step("/d", &plans(), "nope", "/k")),
        ]);
        let p = check(&s);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "lookup.steps.a.table: `{bad}` line 2: invalid JSON"
            )),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("lookup.steps.d.table: ")
                && p[1].ends_with("line 1: no `nope` column"),
            "{p:?}"
        );
    }
}
