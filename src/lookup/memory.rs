//! `lookup.backend = "memory"`: a JSONL table held in memory, with simulated latency and
//! failures. It is the embedded default and doubles as Flink's simulated async function
//! in tests and benchmarks.

use rustc_hash::FxHashMap as HashMap;
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
use crate::settings::MemoryLookup;

/// Why the table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("lookup.memory.table: cannot read `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("lookup.memory.table: `{path}` is a directory, not a JSONL file")]
    Directory { path: String },
    #[error("lookup.memory.table: `{path}` line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("lookup.memory: {0}")]
    Pointer(#[from] crate::pointer::PointerError),
}

/// The embedded table and its simulation knobs.
pub struct MemoryTable {
    rows: HashMap<String, Row>,
    delay_ms: (u64, u64),
    fail_ratio: f64,
    delay_field: Option<Pointer>,
    fail_field: Option<Pointer>,
    source: String,
    /// Started on first use; most runs (delay 0) never need the thread.
    delays: std::sync::OnceLock<Option<DelayLine>>,
}

impl MemoryTable {
    /// Load `settings.table` (one JSON object per line; blank lines skipped). The key column
    /// is removed from each row: the row minus its key is what gets merged.
    pub fn load(settings: &MemoryLookup) -> Result<Self, TableError> {
        let path = settings.table.clone();
        let file = std::fs::File::open(Path::new(&path)).map_err(|source| TableError::Io {
            path: path.clone(),
            source,
        })?;
        // A directory opens on Unix; reading it would fail with a less telling message.
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(TableError::Directory { path });
        }
        let mut rows = HashMap::default();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| TableError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| TableError::Line {
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
        Self::from_rows(rows, settings, path)
    }

    /// Build from rows already in memory (keys canonical, values the merged objects).
    pub fn from_rows(
        rows: HashMap<String, Row>,
        settings: &MemoryLookup,
        source: String,
    ) -> Result<Self, TableError> {
        let opt = |p: &str| -> Result<Option<Pointer>, TableError> {
            if p.is_empty() {
                Ok(None)
            } else {
                Ok(Some(Pointer::parse(p)?))
            }
        };
        let (lo, hi) = match settings.delay_ms.as_slice() {
            [lo, hi] => (*lo, *hi),
            _ => (0, 0),
        };
        Ok(MemoryTable {
            rows,
            delay_ms: (lo, hi.max(lo)),
            fail_ratio: settings.fail_ratio,
            delay_field: opt(&settings.delay_field)?,
            fail_field: opt(&settings.fail_field)?,
            source,
            delays: std::sync::OnceLock::new(),
        })
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
        let result: LookupResult = match self.fails(req) {
            Some(e) => Err(e),
            None => Ok(self.rows.get(req.key).cloned()),
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
}
