//! `lookup.backend = "memory"`: a JSONL table held in memory, with simulated latency and
//! failures. It is the embedded default and doubles as Flink's simulated async function
//! in tests and benchmarks. A pipeline's memory step has a table of its own, keyed by its
//! one bind.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use super::delay::DelayLine;
use super::{Lookup, LookupError, LookupRequest, LookupResult, Pending, Row};
use crate::json::canonical_key;
use crate::json::raw;
use crate::pointer::Pointer;
use crate::settings::{MemoryLookup, Step};

/// Why the table could not be loaded. `section` is where its keys are: `lookup.memory`, or
/// `lookup.steps.NAME` for a pipeline's step.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{section}.table: cannot read `{path}`: {source}")]
    Io {
        section: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{section}.table: `{path}` is a directory, not a JSONL file")]
    Directory { section: String, path: String },
    #[error("{section}.table: `{path}` line {line}: {message}")]
    Line {
        section: String,
        path: String,
        line: usize,
        message: String,
    },
    #[error("{section}: {source}")]
    Pointer {
        section: String,
        source: crate::pointer::PointerError,
    },
}

/// The embedded table and its simulation knobs.
pub struct MemoryTable {
    rows: HashMap<String, Row>,
    /// A step's bind: the key is the canonical text of this value of the record (else the
    /// request's key, `pipeline.key`).
    key: Option<Pointer>,
    delay_ms: (u64, u64),
    fail_ratio: f64,
    delay_field: Option<Pointer>,
    fail_field: Option<Pointer>,
    source: String,
    /// Started on first use; most runs (delay 0) never need the thread.
    delays: std::sync::OnceLock<Option<DelayLine>>,
}

/// The single-lookup form's section.
const SINGLE: &str = "lookup.memory";

impl MemoryTable {
    /// Load `settings.table` (one JSON object per line; blank lines skipped). The key column
    /// is removed from each row: the row minus its key is what gets merged.
    pub fn load(settings: &MemoryLookup) -> Result<Self, TableError> {
        Self::load_in(SINGLE, settings)
    }

    /// Load the table of pipeline step `name`: keyed by the canonical text of the value its
    /// one bind points at (`binds[0]`), errors naming `lookup.steps.NAME`.
    pub fn load_step(name: &str, step: &Step) -> Result<Self, TableError> {
        let section = format!("lookup.steps.{name}");
        let bind = step.binds.first().map(String::as_str).unwrap_or_default();
        let key = Pointer::parse(bind).map_err(|source| TableError::Pointer {
            section: format!("{section}.binds"),
            source,
        })?;
        let mut table = Self::load_in(&section, &step.memory())?;
        table.key = Some(key);
        Ok(table)
    }

    /// Look rows up by the record's key (`pipeline.key`, already checked and made
    /// canonical at ingest) instead of reading the bind again: for a step whose bind is
    /// that pointer.
    pub fn keyed_by_record_key(mut self) -> Self {
        self.key = None;
        self
    }

    fn load_in(section: &str, settings: &MemoryLookup) -> Result<Self, TableError> {
        let path = settings.table.clone();
        let io = |source| TableError::Io {
            section: section.to_string(),
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(Path::new(&path)).map_err(io)?;
        // A directory opens on Unix; reading it would fail with a less telling message.
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(TableError::Directory {
                section: section.to_string(),
                path,
            });
        }
        let mut rows = HashMap::default();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| TableError::Line {
                section: section.to_string(),
                path: path.clone(),
                line: i + 1,
                message,
            };
            let value: Value = serde_json::from_str(&line).map_err(|e| bad(json_error(&e)))?;
            let Value::Object(mut row) = value else {
                return Err(bad("a row must be a JSON object".into()));
            };
            let key = row
                .shift_remove(&settings.key_column)
                .ok_or_else(|| bad(format!("no `{}` column", settings.key_column)))?;
            let key = canonical_key(&key).ok_or_else(|| {
                bad(format!(
                    "`{}` must be a string, number or boolean",
                    settings.key_column
                ))
            })?;
            rows.insert(key, Row::from(Value::Object(row).to_string()));
        }
        Self::build(rows, section, settings, path)
    }

    /// Build from rows already in memory (keys canonical, values the merged objects).
    pub fn from_rows(
        rows: HashMap<String, Row>,
        settings: &MemoryLookup,
        source: String,
    ) -> Result<Self, TableError> {
        Self::build(rows, SINGLE, settings, source)
    }

    fn build(
        rows: HashMap<String, Row>,
        section: &str,
        settings: &MemoryLookup,
        source: String,
    ) -> Result<Self, TableError> {
        let opt = |key: &str, p: &str| -> Result<Option<Pointer>, TableError> {
            if p.is_empty() {
                Ok(None)
            } else {
                Pointer::parse(p)
                    .map(Some)
                    .map_err(|source| TableError::Pointer {
                        section: format!("{section}.{key}"),
                        source,
                    })
            }
        };
        let (lo, hi) = match settings.delay_ms.as_slice() {
            [lo, hi] => (*lo, *hi),
            _ => (0, 0),
        };
        Ok(MemoryTable {
            rows,
            key: None,
            delay_ms: (lo, hi.max(lo)),
            fail_ratio: settings.fail_ratio,
            delay_field: opt("delay_field", &settings.delay_field)?,
            fail_field: opt("fail_field", &settings.fail_field)?,
            source,
            delays: std::sync::OnceLock::new(),
        })
    }

    /// The key a request looks up: the step's bind read from the record, or the request's
    /// key. `Err((pointer, message))` when the bind is absent or not a string, number or
    /// boolean.
    fn key_of<'r>(&self, req: &LookupRequest<'r>) -> Result<Cow<'r, str>, (String, String)> {
        let Some(p) = &self.key else {
            return Ok(Cow::Borrowed(req.key));
        };
        let bad = |m: &str| (p.as_str().to_string(), m.to_string());
        let text = raw::get(req.record, p.tokens())
            .ok_or_else(|| bad("missing; the table is keyed by it"))?;
        let value: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        canonical_key(&value)
            .map(Cow::Owned)
            .ok_or_else(|| bad("must be a string, number or boolean to look up"))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn delay_for(&self, record: &str) -> Duration {
        if let Some(ms) = self
            .delay_field
            .as_ref()
            .and_then(|p| raw::get(record, p.tokens()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite())
        {
            return Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        }
        let (lo, hi) = self.delay_ms;
        if hi == 0 {
            Duration::ZERO
        } else if lo == hi {
            Duration::from_millis(lo)
        } else {
            Duration::from_millis(rand::rng().random_range(lo..=hi))
        }
    }

    fn fails(&self, req: &LookupRequest<'_>) -> Option<LookupError> {
        if let Some(n) = self
            .fail_field
            .as_ref()
            .and_then(|p| raw::get(req.record, p.tokens()))
            .and_then(|v| v.trim().parse::<u64>().ok())
            && u64::from(req.attempt) <= n
        {
            return Some(LookupError::Retryable(format!(
                "simulated failure of attempt {} of {n} (fail_field)",
                req.attempt
            )));
        }
        if self.fail_ratio > 0.0 && rand::rng().random_bool(self.fail_ratio) {
            return Some(LookupError::Retryable(
                "simulated failure (fail_ratio)".into(),
            ));
        }
        None
    }
}

/// serde_json's message without its "at line 1 column N" (the line is the table's):
/// "invalid JSON at column N: …".
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    format!("invalid JSON at column {}: {message}", e.column())
}

impl Lookup for MemoryTable {
    fn start(&self, req: &LookupRequest<'_>) -> Pending {
        let result: LookupResult = match (self.fails(req), self.key_of(req)) {
            (_, Err((p, m))) => Err(LookupError::Fatal(format!("{p}: {m}"))),
            (Some(e), _) => Err(e),
            (None, Ok(key)) => Ok(self.rows.get(key.as_ref()).cloned()),
        };
        let delay = self.delay_for(req.record);
        if delay.is_zero() {
            return Pending::Ready(result);
        }
        match self.delays.get_or_init(|| DelayLine::start().ok()) {
            Some(line) => {
                let done = line.after(delay);
                Pending::Later(Box::pin(async move {
                    let _ = done.await;
                    result
                }))
            }
            None => Pending::Later(Box::pin(async move {
                tokio::time::sleep(delay).await;
                result
            })),
        }
    }

    fn check(&self, record: &str) -> Result<(), (String, String)> {
        let req = LookupRequest {
            key: "",
            record,
            attempt: 1,
        };
        self.key_of(&req).map(|_| ())
    }

    fn describe(&self) -> String {
        format!("memory table `{}` ({} rows)", self.source, self.rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use std::io::Write;

    fn json(s: &str) -> &str {
        s
    }

    fn settings_for(text: &str) -> (tempfile::NamedTempFile, MemoryLookup) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let mut m = Settings::defaults().lookup.memory;
        m.table = f.path().display().to_string();
        (f, m)
    }

    fn ready(p: Pending) -> LookupResult {
        match p {
            Pending::Ready(r) => r,
            Pending::Later(_) => panic!("expected an immediate answer"),
        }
    }

    #[test]
    fn loads_rows_without_the_key_column() {
        let (_f, m) = settings_for(
            "{\"user_id\":\"u1\",\"name\":\"Ada\"}\n\n{\"user_id\":2,\"name\":\"Bo\"}\n",
        );
        let t = MemoryTable::load(&m).unwrap();
        assert_eq!(t.len(), 2);
        let rec = "{}";
        let r = ready(t.start(&LookupRequest {
            key: "u1",
            record: rec,
            attempt: 1,
        }));
        assert_eq!(r, Ok(Some(Row::from(r#"{"name":"Ada"}"#))));
        let r = ready(t.start(&LookupRequest {
            key: "2",
            record: rec,
            attempt: 1,
        }));
        assert_eq!(r, Ok(Some(Row::from(r#"{"name":"Bo"}"#))));
        let r = ready(t.start(&LookupRequest {
            key: "zz",
            record: rec,
            attempt: 1,
        }));
        assert_eq!(r, Ok(None));
    }

    #[test]
    fn bad_lines_are_named() {
        let (_f, m) = settings_for("{\"user_id\":\"u1\"}\nnot json\n");
        let e = MemoryTable::load(&m).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
        let (_f, m) = settings_for("{\"name\":\"x\"}\n");
        let e = MemoryTable::load(&m).err().unwrap().to_string();
        assert!(e.contains("no `user_id` column"), "{e}");
        let (_f, m) = settings_for("{\"user_id\":\"u1\"}\n\n{\"user_id\": \"u2\",}\n");
        let e = MemoryTable::load(&m).err().unwrap().to_string();
        assert!(
            e.starts_with("lookup.memory.table: ") && e.contains("line 3: invalid JSON at column"),
            "{e}"
        );
        assert!(!e.contains("line 1"), "only the table's line number: {e}");
    }

    #[test]
    fn a_directory_is_not_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Settings::defaults().lookup.memory;
        m.table = dir.path().display().to_string();
        let e = MemoryTable::load(&m).err().unwrap().to_string();
        assert!(e.ends_with("is a directory, not a JSONL file"), "{e}");
    }

    #[test]
    fn fail_field_fails_the_first_n_attempts() {
        let (_f, mut m) = settings_for("{\"user_id\":\"u1\",\"name\":\"Ada\"}\n");
        m.fail_field = "/_sim/fail".into();
        let t = MemoryTable::load(&m).unwrap();
        let rec = r#"{"_sim": {"fail": 2}}"#;
        for attempt in 1..=2 {
            let r = ready(t.start(&LookupRequest {
                key: "u1",
                record: rec,
                attempt,
            }));
            assert!(matches!(r, Err(LookupError::Retryable(_))));
        }
        let r = ready(t.start(&LookupRequest {
            key: "u1",
            record: rec,
            attempt: 3,
        }));
        assert!(r.is_ok());
    }

    #[test]
    fn delay_field_makes_the_lookup_asynchronous() {
        let (_f, mut m) = settings_for("{\"user_id\":\"u1\"}\n");
        m.delay_field = "/d".into();
        let t = MemoryTable::load(&m).unwrap();
        assert!(matches!(
            t.start(&LookupRequest {
                key: "u1",
                record: json(r#"{"d": 5}"#),
                attempt: 1
            }),
            Pending::Later(_)
        ));
        assert!(matches!(
            t.start(&LookupRequest {
                key: "u1",
                record: json(r#"{"d": 0}"#),
                attempt: 1
            }),
            Pending::Ready(_)
        ));
    }

    fn step_for(text: &str, bind: &str) -> (tempfile::NamedTempFile, Step) {
        let (f, m) = settings_for(text);
        let mut step = Step::new(crate::settings::StepBackend::Memory, "/plan");
        step.table = m.table;
        step.key_column = "plan".into();
        step.binds = vec![bind.into()];
        (f, step)
    }

    #[test]
    fn a_step_looks_up_the_canonical_text_of_its_bind() {
        let (_f, step) = step_for(
            "{\"plan\":\"pro\",\"seats\":5}\n{\"plan\":7,\"seats\":7}\n",
            "/account/plan",
        );
        let t = MemoryTable::load_step("plan", &step).unwrap();
        let at = |record: &str| {
            ready(t.start(&LookupRequest {
                key: "pro",
                record,
                attempt: 1,
            }))
        };
        assert_eq!(
            at(r#"{"account": {"plan": "pro"}}"#),
            Ok(Some(Row::from(r#"{"seats":5}"#)))
        );
        assert_eq!(
            at(r#"{"account": {"plan": 7}}"#),
            Ok(Some(Row::from(r#"{"seats":7}"#))),
            "the bind, not the request's key"
        );
        assert_eq!(at(r#"{"account": {"plan": "free"}}"#), Ok(None));
        assert_eq!(
            at(r#"{"account": {}}"#),
            Err(LookupError::Fatal(
                "/account/plan: missing; the table is keyed by it".into()
            ))
        );
        assert!(t.check(r#"{"account": {"plan": "x"}}"#).is_ok());
        assert_eq!(
            t.check(r#"{"account": {"plan": ["x"]}}"#),
            Err((
                "/account/plan".to_string(),
                "must be a string, number or boolean to look up".to_string()
            ))
        );
        assert_eq!(
            t.check("{}").unwrap_err().1,
            "missing; the table is keyed by it"
        );
        // The single lookup keeps looking up the request's key.
        let (_f, m) = settings_for("{\"user_id\":\"pro\",\"n\":1}\n");
        let single = MemoryTable::load(&m).unwrap();
        assert!(single.check("{}").is_ok());
    }

    #[test]
    fn a_steps_table_errors_name_the_step() {
        let (_f, step) = step_for("{\"plan\":\"pro\"}\n{\"name\":\"x\"}\n", "/p");
        let e = MemoryTable::load_step("plans", &step)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("lookup.steps.plans.table: ") && e.ends_with("line 2: no `plan` column"),
            "{e}"
        );
        let (_f, mut step) = step_for("{\"plan\":\"pro\"}\n", "/p");
        step.fail_field = "f".into();
        let e = MemoryTable::load_step("plans", &step)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("lookup.steps.plans.fail_field: "), "{e}");
    }
}
