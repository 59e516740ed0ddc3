//! Layering: embedded defaults < `--config FILE` < `SLUICE__SECTION__KEY` env vars.
//!
//! The `config` crate merges the layers and deserializes. Before that, every key of the
//! file and of the environment is checked against the embedded defaults, which are the
//! schema: a key is known when the defaults have it, and its value must have the type of
//! the default (integers are non-negative integers, floats may be written as integers,
//! strings, booleans, arrays of the default's element type, tables). Env values are parsed
//! by that type (so `SLUICE__PIPELINE__CAPACITY=abc` says "integer"). Enum-valued keys are
//! checked against their names. Nothing is coerced (`partitions = 1.5` is an error, not 2),
//! and every such problem is reported, one line each, before any value check runs.

use std::collections::BTreeMap;
use std::path::Path;

use config::{Config, File, FileFormat};

use super::{
    Ack, Backend, Mode, OnDamage, OnMiss, OnTimeout, RetryOn, Settings, SinkKind, validate,
};

/// The documented defaults, embedded so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/sluice.toml");

const ENV_PREFIX: &str = "SLUICE__";

/// Keys whose (string) values name an enum variant, and the names allowed; for an array
/// (`retry.on`) each item must be one of them.
const ENUMS: [(&str, &[&str]); 9] = [
    ("pipeline.mode", Mode::NAMES),
    ("pipeline.on_timeout", OnTimeout::NAMES),
    ("retry.on", RetryOn::NAMES),
    ("lookup.backend", Backend::NAMES),
    ("lookup.on_miss", OnMiss::NAMES),
    ("output.kind", SinkKind::NAMES),
    ("dead_letter.kind", SinkKind::NAMES),
    ("checkpoint.ack", Ack::NAMES),
    ("checkpoint.on_damage", OnDamage::NAMES),
];

/// Every problem found while loading, one line each, in the order found.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct LoadError {
    /// One human-readable line per problem, naming the key and where it came from.
    pub problems: Vec<String>,
}

impl LoadError {
    /// The problems, each kept on one line: control characters that came from the input
    /// (a key, an env variable's name or value, a string value) are shown escaped (`\n`).
    fn new(problems: Vec<String>) -> Self {
        let one_line = |p: String| {
            if p.contains(char::is_control) {
                p.chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            } else {
                p
            }
        };
        LoadError {
            problems: problems.into_iter().map(one_line).collect(),
        }
    }
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
    let settings = parse_from(path, env)?;
    let problems = validate(&settings);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(LoadError::new(problems))
    }
}

/// Layer an optional file and the process environment over the defaults, checking keys,
/// types and enum names, without the value checks of [`validate`].
pub fn parse(path: Option<&Path>) -> Result<Settings, LoadError> {
    parse_from(path, std::env::vars())
}

/// [`parse`] with the given environment.
pub fn parse_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, LoadError> {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML)
        .map_err(|e| LoadError::new(vec![format!("embedded defaults: {e}")]))?;
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
                    check_file(&table, &defaults, "", &origin, &mut problems);
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
        let value = match parse_env_value(default, &raw) {
            Ok(value) => value,
            Err(msg) => {
                problems.push(format!("env {var}: {msg}, got `{raw}`"));
                continue;
            }
        };
        if let Some(expected) = type_mismatch(default, &value) {
            problems.push(format!("env {var}: expected {expected}, got `{raw}`"));
            continue;
        }
        let bad = not_allowed(&key, &value);
        if !bad.is_empty() {
            problems.extend(bad.into_iter().map(|m| format!("env {var}: {m}")));
            continue;
        }
        match builder.set_override(key.as_str(), toml_to_config(&value)) {
            Ok(b) => builder = b,
            Err(e) => {
                problems.push(format!("env {var}: {e}"));
                return Err(LoadError::new(problems));
            }
        }
    }

    if !problems.is_empty() {
        return Err(LoadError::new(problems));
    }
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            LoadError::new(vec![format!(
                "{}: {e}",
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "config".into())
            )])
        })
}

/// Tables whose keys are the user's (header names): any key below them is allowed, with a
/// string value.
const FREE_FORM: [&str; 2] = ["output.webhook.headers", "dead_letter.webhook.headers"];

/// The free-form table `key` belongs to, if any.
fn free_form(key: &str) -> Option<&'static str> {
    FREE_FORM.into_iter().find(|t| {
        key.strip_prefix(t)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Check a file's table against the defaults' table at `prefix`: unknown keys, types,
/// enum names. Every problem is pushed, prefixed with `origin`.
fn check_file(
    file: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
    origin: &str,
    problems: &mut Vec<String>,
) {
    for (k, value) in file {
        let key = join(prefix, k);
        if FREE_FORM.contains(&prefix) {
            if !value.is_str() {
                problems.push(format!(
                    "{origin}: {key}: expected a string, got {}",
                    show(value)
                ));
            }
            continue;
        }
        match (defaults.get(k), value) {
            (None, toml::Value::Table(t)) if !t.is_empty() => {
                let mut keys = BTreeMap::new();
                flatten(t, &key, &mut keys);
                problems.extend(
                    keys.keys()
                        .map(|key| format!("{origin}: unknown key `{key}`")),
                );
            }
            (None, _) => problems.push(format!("{origin}: unknown key `{key}`")),
            (Some(toml::Value::Table(d)), toml::Value::Table(t)) => {
                check_file(t, d, &key, origin, problems)
            }
            (Some(default), value) => {
                if let Some(expected) = type_mismatch(default, value) {
                    problems.push(format!(
                        "{origin}: {key}: expected {expected}, got {}",
                        show(value)
                    ));
                } else {
                    problems.extend(
                        not_allowed(&key, value)
                            .into_iter()
                            .map(|m| format!("{origin}: {key}: {m}")),
                    );
                }
            }
        }
    }
}

/// What `value` should have been when it does not have the type of `default` (see the
/// module docs), e.g. "an integer"; `None` when it fits.
fn type_mismatch(default: &toml::Value, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    let expected = match (default, value) {
        (V::Integer(_), V::Integer(i)) if *i >= 0 => return None,
        (V::Integer(_), V::Integer(_)) => "a non-negative integer",
        (V::Integer(_), _) => "an integer",
        (V::Float(_), V::Integer(_) | V::Float(_)) => return None,
        (V::Float(_), _) => "a number",
        (V::String(_), V::String(_)) => return None,
        (V::String(_), _) => "a string",
        (V::Boolean(_), V::Boolean(_)) => return None,
        (V::Boolean(_), _) => "true or false",
        (V::Table(_), V::Table(_)) => return None,
        (V::Table(_), _) => "a table",
        (V::Array(items), value) => {
            // An empty default (`server.auth_tokens = []`) holds strings.
            let elem = items.first().cloned().unwrap_or(V::String(String::new()));
            if let V::Array(values) = value
                && values.iter().all(|v| type_mismatch(&elem, v).is_none())
            {
                return None;
            }
            return Some(format!(
                "an array of {}",
                match elem {
                    V::Integer(_) => "non-negative integers",
                    V::Float(_) => "numbers",
                    V::Boolean(_) => "booleans",
                    V::String(_) => "strings",
                    _ => "values",
                }
            ));
        }
        (V::Datetime(_), V::Datetime(_)) => return None,
        (V::Datetime(_), _) => "a date-time",
    };
    Some(expected.to_string())
}

/// For an enum-valued key: one line per value (or array item) that is not one of its names.
fn not_allowed(key: &str, value: &toml::Value) -> Vec<String> {
    let Some((_, names)) = ENUMS.iter().find(|(k, _)| *k == key) else {
        return Vec::new();
    };
    let items = match value {
        toml::Value::Array(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    items
        .iter()
        .filter(|v| v.as_str().is_some_and(|s| !names.contains(&s)))
        .map(|v| format!("{} is not one of {}", show(v), names.join(", ")))
        .collect()
}

/// A value as TOML writes it (strings quoted), shortened when long.
fn show(value: &toml::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// Collect `section.key` → leaf value; arrays are leaves, tables recurse.
fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = join(prefix, k);
        match v {
            toml::Value::Table(t) => flatten(t, &key, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// Why an env value does not parse as the type of the default it overrides (the problem
/// line adds the variable and the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum EnvValueError {
    #[error("expected an integer")]
    Integer,
    #[error("expected a number")]
    Number,
    #[error("expected true or false")]
    Boolean,
    #[error("expected a TOML array")]
    Array,
    #[error("expected comma-separated integers")]
    Integers,
}

/// Parse an env value by the type of the default it overrides.
fn parse_env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, EnvValueError> {
    let raw = raw.trim();
    Ok(match default {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.parse::<i64>().map_err(|_| EnvValueError::Integer)?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.parse::<f64>().map_err(|_| EnvValueError::Number)?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.parse::<bool>().map_err(|_| EnvValueError::Boolean)?)
        }
        toml::Value::Array(items) => {
            let elem = items.first();
            let parts: Vec<toml::Value> = if raw.starts_with('[') {
                let table: toml::Table =
                    toml::from_str(&format!("v = {raw}")).map_err(|_| EnvValueError::Array)?;
                match table.get("v") {
                    Some(toml::Value::Array(a)) => a.clone(),
                    _ => return Err(EnvValueError::Array),
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
                            .map_err(|_| EnvValueError::Integers),
                        _ => Ok(toml::Value::String(p.trim().to_string())),
                    })
                    .collect::<Result<_, _>>()?
            };
            toml::Value::Array(parts)
        }
        _ => toml::Value::String(raw.to_string()),
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
    fn every_problem_is_one_line_whatever_the_input_holds() {
        // Found by fuzzing (config_layers): a line break in an env variable's name was
        // echoed as is, so the problem spanned two lines.
        let err = load_from(None, env(&[("SLUICE__[server]\nauth_tokens ", "")])).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "env SLUICE__[server]\\nauth_tokens : unknown key `[server]\\nauth_tokens `"
                    .to_string()
            ]
        );
        // The same for env values, the file's keys and string values, and value checks.
        let err = load_from(None, env(&[("SLUICE__PIPELINE__CAPACITY", "1\r\n2")])).unwrap_err();
        assert_eq!(
            err.problems,
            vec!["env SLUICE__PIPELINE__CAPACITY: expected an integer, got `1\\r\\n2`".to_string()]
        );
        let f = file("\"x\\ny\" = 1\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.problems[0].ends_with("unknown key `x\\ny`"),
            "{:?}",
            err.problems
        );
        let f = file("[server]\nbind = \"a\\tb\\nc\"\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(
            err.problems,
            vec!["server.bind: expected HOST:PORT, got `a\\tb\\nc`".to_string()]
        );
    }

    #[test]
    fn env_values_parse_by_the_defaults_type_or_say_which_was_expected() {
        use toml::Value as V;
        let ints = V::Array(vec![V::Integer(1)]);
        let texts = V::Array(vec![V::String("a".into())]);
        assert_eq!(parse_env_value(&V::Integer(1), " 7 "), Ok(V::Integer(7)));
        assert_eq!(
            parse_env_value(&V::Integer(1), "7.5"),
            Err(EnvValueError::Integer)
        );
        assert_eq!(
            parse_env_value(&V::Float(1.0), "x"),
            Err(EnvValueError::Number)
        );
        assert_eq!(
            parse_env_value(&V::Boolean(true), "1"),
            Err(EnvValueError::Boolean)
        );
        assert_eq!(parse_env_value(&ints, "[1,"), Err(EnvValueError::Array));
        assert_eq!(parse_env_value(&ints, "1,x"), Err(EnvValueError::Integers));
        assert_eq!(
            parse_env_value(&ints, "1, 2"),
            Ok(V::Array(vec![V::Integer(1), V::Integer(2)]))
        );
        assert_eq!(
            parse_env_value(&texts, "a,b"),
            Ok(V::Array(vec![V::String("a".into()), V::String("b".into())]))
        );
        assert_eq!(
            EnvValueError::Integers.to_string(),
            "expected comma-separated integers"
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

    #[test]
    fn file_values_of_the_wrong_type_are_errors_naming_key_value_and_type() {
        let f = file(
            "[server]\nauth_tokens = [1]\n\
             [pipeline]\npartitions = 1.5\ncapacity = inf\nbacklog = true\ntimeout_ms = -5\nkey = 5\n\
             [retry]\njitter = \"x\"\n\
             [lookup.memory]\ndelay_ms = [1.5, 2]\n\
             [cluster]\nenabled = 1\n",
        );
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        let o = f.path().display().to_string();
        let want: Vec<String> = [
            "server.auth_tokens: expected an array of strings, got [1]",
            "pipeline.partitions: expected an integer, got 1.5",
            "pipeline.capacity: expected an integer, got inf",
            "pipeline.backlog: expected an integer, got true",
            "pipeline.timeout_ms: expected a non-negative integer, got -5",
            "pipeline.key: expected a string, got 5",
            "retry.jitter: expected a number, got \"x\"",
            "lookup.memory.delay_ms: expected an array of non-negative integers, got [1.5, 2]",
            "cluster.enabled: expected true or false, got 1",
        ]
        .iter()
        .map(|m| format!("{o}: {m}"))
        .collect();
        let mut got = err.problems.clone();
        got.sort();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(got, sorted);
    }

    #[test]
    fn tables_are_tables_and_headers_hold_strings() {
        let f = file(
            "pipeline = 5\n[output.webhook]\nheaders = { A = 5, B = \"ok\" }\n\
             [dead_letter.webhook]\nheaders = \"x\"\n",
        );
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        let o = f.path().display().to_string();
        let mut got = err.problems.clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                format!("{o}: dead_letter.webhook.headers: expected a table, got \"x\""),
                format!("{o}: output.webhook.headers.A: expected a string, got 5"),
                format!("{o}: pipeline: expected a table, got 5"),
            ]
        );
    }

    #[test]
    fn floats_may_be_written_as_integers() {
        let f = file("[retry]\nmultiplier = 3\n[lookup.memory]\nfail_ratio = 1\n");
        let s = load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.retry.multiplier, 3.0);
        assert_eq!(s.lookup.memory.fail_ratio, 1.0);
    }

    #[test]
    fn enum_values_are_named_with_their_choices_all_together() {
        let f = file(
            "[pipeline]\nmode = \"fifo\"\non_timeout = \"drop\"\n\
             [retry]\non = [\"error\", \"sometimes\"]\n\
             [lookup]\nbackend = \"redis\"\non_miss = \"skip\"\n\
             [output]\nkind = \"s3\"\n[dead_letter]\nkind = \"kafka\"\n\
             [checkpoint]\nack = \"maybe\"\n",
        );
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        let o = f.path().display().to_string();
        let want: Vec<String> = [
            "pipeline.mode: \"fifo\" is not one of ordered, unordered, key_ordered",
            "pipeline.on_timeout: \"drop\" is not one of dead_letter, pass_through",
            "retry.on: \"sometimes\" is not one of error, timeout, miss",
            "lookup.backend: \"redis\" is not one of memory, cql",
            "lookup.on_miss: \"skip\" is not one of emit, dead_letter",
            "output.kind: \"s3\" is not one of file, stdout, cql, webhook",
            "dead_letter.kind: \"kafka\" is not one of file, stdout, cql, webhook",
            "checkpoint.ack: \"maybe\" is not one of durable, received",
        ]
        .iter()
        .map(|m| format!("{o}: {m}"))
        .collect();
        let mut got = err.problems.clone();
        got.sort();
        let mut sorted = want;
        sorted.sort();
        assert_eq!(got, sorted);
    }

    #[test]
    fn every_enum_name_loads_as_itself() {
        for (key, names) in ENUMS {
            let var = format!("SLUICE__{}", key.replace('.', "__").to_ascii_uppercase());
            for name in names {
                let s = parse_from(None, env(&[(&var, name)]))
                    .unwrap_or_else(|e| panic!("{key} = {name}: {e}"));
                let rendered: toml::Table = toml::from_str(&s.to_toml()).unwrap();
                let (section, leaf) = key.split_once('.').unwrap();
                let value = &rendered[section][leaf];
                let got = match value {
                    toml::Value::Array(items) => items[0].as_str(),
                    v => v.as_str(),
                };
                assert_eq!(got, Some(*name), "{key}");
            }
        }
    }

    #[test]
    fn every_key_serde_restricts_to_names_is_listed_in_enums() {
        // A string (or array of strings) key whose type is an enum but that ENUMS misses
        // would reach serde with any value and fail there, in serde's words.
        let defaults: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let mut known = BTreeMap::new();
        flatten(&defaults, "", &mut known);
        for (key, default) in &known {
            let raw = match default {
                toml::Value::String(_) => "no-such-name",
                toml::Value::Array(_)
                    if type_mismatch(default, &toml::Value::Array(vec!["x".into()])).is_none() =>
                {
                    "[\"no-such-name\"]"
                }
                _ => continue,
            };
            let var = format!("SLUICE__{}", key.replace('.', "__").to_ascii_uppercase());
            if let Err(e) = parse_from(None, env(&[(&var, raw)])) {
                assert!(
                    ENUMS.iter().any(|(k, _)| k == key)
                        && e.problems
                            == vec![format!(
                                "env {var}: \"no-such-name\" is not one of {}",
                                ENUMS.iter().find(|(k, _)| k == key).unwrap().1.join(", ")
                            )],
                    "{key}: {:?}",
                    e.problems
                );
            }
        }
    }

    #[test]
    fn env_values_are_checked_by_type_and_name() {
        let err = load_from(
            None,
            env(&[
                ("SLUICE__PIPELINE__MODE", "fifo"),
                ("SLUICE__PIPELINE__CAPACITY", "-1"),
                ("SLUICE__RETRY__ON", "[1]"),
                ("SLUICE__LOOKUP__MEMORY__DELAY_MS", "[1.5, 2]"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "env SLUICE__LOOKUP__MEMORY__DELAY_MS: expected an array of non-negative integers, got `[1.5, 2]`"
                    .to_string(),
                "env SLUICE__PIPELINE__CAPACITY: expected a non-negative integer, got `-1`"
                    .to_string(),
                "env SLUICE__PIPELINE__MODE: \"fifo\" is not one of ordered, unordered, key_ordered"
                    .to_string(),
                "env SLUICE__RETRY__ON: expected an array of strings, got `[1]`".to_string(),
            ]
        );
    }
}
