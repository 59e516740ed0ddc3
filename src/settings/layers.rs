//! Layering: embedded defaults < `--config FILE` < `SLUICE__SECTION__KEY` env vars.
//!
//! The `config` crate merges the layers and deserializes; before that, every key of the
//! file and of the environment is checked against the keys of the embedded defaults so
//! an unknown key is reported with where it came from, and env values are parsed by the
//! type of the default they replace (so `SLUICE__PIPELINE__CAPACITY=abc` says "integer").

use std::collections::BTreeMap;
use std::path::Path;

use config::{Config, File, FileFormat};

use super::{Settings, validate};

/// The documented defaults, embedded so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/sluice.toml");

const ENV_PREFIX: &str = "SLUICE__";

/// Every problem found while loading, one line each, in the order found.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct LoadError {
    /// One human-readable line per problem, naming the key and where it came from.
    pub problems: Vec<String>,
}

/// Load from an optional file and the process environment, then validate.
pub fn load(path: Option<&Path>) -> Result<Settings, LoadError> {
    load_from(path, std::env::vars())
}

/// Load from an optional file and the given environment (tests pass their own), then validate.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, LoadError> {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).map_err(|e| LoadError {
        problems: vec![format!("embedded defaults: {e}")],
    })?;
    let mut known = BTreeMap::new();
    flatten(&defaults, "", &mut known);

    let mut problems = Vec::new();
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));

    if let Some(path) = path {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => problems.push(format!("{origin}: cannot read: {e}")),
            Ok(text) => match toml::from_str::<toml::Table>(&text) {
                Err(e) => problems.push(format!(
                    "{origin}: invalid TOML: {}",
                    e.to_string().replace('\n', " ")
                )),
                Ok(table) => {
                    let mut keys = BTreeMap::new();
                    flatten(&table, "", &mut keys);
                    for key in keys.keys() {
                        if !known.contains_key(key) && free_form(key).is_none() {
                            problems.push(format!("{origin}: unknown key `{key}`"));
                        }
                    }
                    builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
                }
            },
        }
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (var, raw) in env {
        let key = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        // Header names cannot hold `-` in an env variable's name: `X_TENANT` means `x-tenant`.
        let key = match free_form(&key) {
            Some(table) => format!("{table}.{}", key[table.len() + 1..].replace('_', "-")),
            None => key,
        };
        let text = toml::Value::String(String::new());
        let Some(default) = known.get(&key).or(free_form(&key).map(|_| &text)) else {
            problems.push(format!("env {var}: unknown key `{key}`"));
            continue;
        };
        match parse_env_value(default, &raw) {
            Ok(value) => match builder.set_override(key.as_str(), value) {
                Ok(b) => builder = b,
                Err(e) => {
                    problems.push(format!("env {var}: {e}"));
                    return Err(LoadError { problems });
                }
            },
            Err(msg) => problems.push(format!("env {var}: {msg}, got `{raw}`")),
        }
    }

    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| LoadError {
            problems: vec![format!(
                "{}: {e}",
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "config".into())
            )],
        })?;
    let problems = validate(&settings);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(LoadError { problems })
    }
}

/// Tables whose keys are the user's (header names): any key below them is allowed, with a
/// string value (checked when the settings are deserialized and validated).
const FREE_FORM: [&str; 2] = ["output.webhook.headers", "dead_letter.webhook.headers"];

/// The free-form table `key` belongs to, if any.
fn free_form(key: &str) -> Option<&'static str> {
    FREE_FORM.into_iter().find(|t| {
        key.strip_prefix(t)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
    })
}

/// Collect `section.key` → leaf value; arrays are leaves, tables recurse.
fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(t, &key, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// Parse an env value by the type of the default it overrides.
fn parse_env_value(default: &toml::Value, raw: &str) -> Result<config::Value, String> {
    let raw = raw.trim();
    Ok(match default {
        toml::Value::Integer(_) => raw
            .parse::<i64>()
            .map_err(|_| "expected an integer".to_string())?
            .into(),
        toml::Value::Float(_) => raw
            .parse::<f64>()
            .map_err(|_| "expected a number".to_string())?
            .into(),
        toml::Value::Boolean(_) => raw
            .parse::<bool>()
            .map_err(|_| "expected true or false".to_string())?
            .into(),
        toml::Value::Array(items) => {
            let elem = items.first();
            let parts: Vec<toml::Value> = if raw.starts_with('[') {
                let table: toml::Table = toml::from_str(&format!("v = {raw}"))
                    .map_err(|_| "expected a TOML array".to_string())?;
                match table.get("v") {
                    Some(toml::Value::Array(a)) => a.clone(),
                    _ => return Err("expected a TOML array".into()),
                }
            } else if raw.is_empty() {
                Vec::new()
            } else {
                raw.split(',')
                    .map(|p| match elem {
                        Some(toml::Value::Integer(_)) => p
                            .trim()
                            .parse::<i64>()
                            .map(toml::Value::Integer)
                            .map_err(|_| "expected comma-separated integers".to_string()),
                        _ => Ok(toml::Value::String(p.trim().to_string())),
                    })
                    .collect::<Result<_, _>>()?
            };
            config::Value::from(parts.iter().map(toml_to_config).collect::<Vec<_>>())
        }
        _ => raw.to_string().into(),
    })
}

fn toml_to_config(v: &toml::Value) -> config::Value {
    match v {
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Array(a) => a.iter().map(toml_to_config).collect::<Vec<_>>().into(),
        other => other.as_str().unwrap_or_default().to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Mode;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_load_and_match_the_documented_values() {
        let s = load_from(None, env(&[])).unwrap();
        assert_eq!(s.pipeline.partitions, 4);
        assert_eq!(s.pipeline.mode, Mode::Ordered);
        assert_eq!(s.pipeline.capacity, 100);
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.lookup.memory.table, "config/sample-users.jsonl");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let f = file("[pipeline]\ncapacity = 7\nmode = \"unordered\"\n");
        let s = load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.pipeline.capacity, 7);
        assert_eq!(s.pipeline.mode, Mode::Unordered);
        assert_eq!(s.pipeline.partitions, 4, "untouched keys keep defaults");

        let s = load_from(
            Some(f.path()),
            env(&[
                ("SLUICE__PIPELINE__CAPACITY", "200"),
                ("SLUICE__RETRY__ON", "error,miss"),
                ("SLUICE__LOOKUP__MEMORY__DELAY_MS", "[5, 9]"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.pipeline.capacity, 200);
        assert_eq!(s.pipeline.mode, Mode::Unordered);
        assert_eq!(s.retry.on.len(), 2);
        assert_eq!(s.lookup.memory.delay_ms, vec![5, 9]);
    }

    #[test]
    fn unknown_keys_are_named_with_their_origin() {
        let f = file("[pipeline]\ncapcity = 7\n[nope]\nx = 1\n");
        let err =
            load_from(Some(f.path()), env(&[("SLUICE__PIPELINE__CAPACITYY", "3")])).unwrap_err();
        let origin = f.path().display().to_string();
        assert!(
            err.problems
                .contains(&format!("{origin}: unknown key `pipeline.capcity`")),
            "{:?}",
            err.problems
        );
        assert!(
            err.problems
                .contains(&format!("{origin}: unknown key `nope.x`"))
        );
        assert!(
            err.problems.contains(
                &"env SLUICE__PIPELINE__CAPACITYY: unknown key `pipeline.capacityy`".into()
            )
        );
    }

    #[test]
    fn webhook_headers_take_any_name_from_the_file_and_the_environment() {
        let f = file(
            "[output]\nkind = \"webhook\"\n[output.webhook]\nheaders = { Authorization = \"Bearer a\" }\n",
        );
        let s = load_from(
            Some(f.path()),
            env(&[("SLUICE__DEAD_LETTER__WEBHOOK__HEADERS__X_TENANT", "t1")]),
        )
        .unwrap();
        let name = |m: &std::collections::BTreeMap<String, String>, v: &str| {
            m.iter()
                .find(|(_, value)| value.as_str() == v)
                .map(|(k, _)| k.to_ascii_lowercase())
        };
        assert_eq!(
            name(&s.output.webhook.headers, "Bearer a").as_deref(),
            Some("authorization")
        );
        assert_eq!(
            name(&s.dead_letter.webhook.headers, "t1").as_deref(),
            Some("x-tenant")
        );
        // Only below `headers`: a typo beside it is still an unknown key.
        let f = file("[output.webhook]\nheader = { A = \"b\" }\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.problems[0].ends_with("unknown key `output.webhook.header.A`"),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn bad_env_values_name_the_expected_type() {
        let err = load_from(None, env(&[("SLUICE__PIPELINE__CAPACITY", "lots")])).unwrap_err();
        assert_eq!(
            err.problems,
            vec!["env SLUICE__PIPELINE__CAPACITY: expected an integer, got `lots`".to_string()]
        );
    }

    #[test]
    fn bad_enum_value_in_file_is_an_error_naming_the_key() {
        let f = file("[pipeline]\nmode = \"sideways\"\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(
            err.problems[0].contains("pipeline.mode"),
            "{}",
            err.problems[0]
        );
    }

    #[test]
    fn invalid_toml_and_missing_file_are_reported() {
        let f = file("[pipeline\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.problems[0].contains("invalid TOML"),
            "{:?}",
            err.problems
        );
        let err = load_from(Some(Path::new("/nonexistent/sluice.toml")), env(&[])).unwrap_err();
        assert!(
            err.problems[0].contains("cannot read"),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn validation_problems_come_one_per_line() {
        let f = file("[pipeline]\ncapacity = 0\npartitions = 0\nkey = \"user_id\"\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{:?}", err.problems);
    }
}
