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
//!
//! Two additions to the defaults file: a few keys it leaves unwritten because their default
//! is another key's value (`lookup.cache.miss_ttl_ms`), and the steps of a pipeline:
//! `[lookup.steps.NAME]` takes any name `[a-z0-9_]+` (also from the environment,
//! `SLUICE__LOOKUP__STEPS__USER__QUERY`), and its keys are checked against one step with
//! every key at its default ([`Step::new`]). What the user's layers set (not the defaults)
//! is kept to refuse a step without `backend` or `into`, a key its backend does not read,
//! and single-lookup keys set together with steps.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use config::{Config, File, FileFormat};

use super::pipeline::{is_single_lookup_key, step_key_used, valid_step_name};
use super::{
    Ack, Backend, HttpMethod, Mode, OnDamage, OnMiss, OnTimeout, RetryOn, Settings, SinkKind, Step,
    StepBackend, StepOnMiss, validate,
};
use crate::steps::GraphError;

/// The documented defaults, embedded so the binary runs with no file at all.
pub const DEFAULT_TOML: &str = include_str!("../../config/sluice.toml");

const ENV_PREFIX: &str = "SLUICE__";

/// `[lookup.steps.NAME]`: the names are the user's, each step's keys are checked against
/// the step schema, which the schema holds under the name [`ANY_STEP`].
const STEPS: &str = "lookup.steps";
const ANY_STEP: &str = "*";

/// Keys whose (string) values name an enum variant, and the names allowed; for an array
/// (`retry.on`) each item must be one of them. Step keys are written with [`ANY_STEP`].
const ENUMS: [(&str, &[&str]); 12] = [
    ("pipeline.mode", Mode::NAMES),
    ("pipeline.on_timeout", OnTimeout::NAMES),
    ("retry.on", RetryOn::NAMES),
    ("lookup.backend", Backend::NAMES),
    ("lookup.on_miss", OnMiss::NAMES),
    ("lookup.steps.*.backend", StepBackend::NAMES),
    ("lookup.steps.*.on_miss", StepOnMiss::NAMES),
    ("lookup.steps.*.method", HttpMethod::NAMES),
    ("output.kind", SinkKind::NAMES),
    ("dead_letter.kind", SinkKind::NAMES),
    ("checkpoint.ack", Ack::NAMES),
    ("checkpoint.on_damage", OnDamage::NAMES),
];

/// Keys that are known though the defaults file gives them no value (their default is
/// another key's value), each with a value of its type.
fn unwritten_keys() -> [(&'static str, toml::Value); 1] {
    // Unset: `lookup.cache.ttl_ms`.
    [("lookup.cache.miss_ttl_ms", toml::Value::Integer(0))]
}

/// The schema keys are checked against: the embedded defaults, the keys they leave
/// unwritten, and under `lookup.steps.*` a step with every key at its default
/// ([`Step::new`]: the step's serde defaults are the one source of them).
fn schema() -> Result<toml::Table, LoadError> {
    let mut schema: toml::Table = toml::from_str(DEFAULT_TOML)
        .map_err(|e| LoadError::new(vec![format!("embedded defaults: {e}")]))?;
    for (key, value) in unwritten_keys() {
        insert_at(&mut schema, key, value);
    }
    let step = toml::Table::try_from(Step::new(StepBackend::Memory, ""))
        .map_err(|e| LoadError::new(vec![format!("step defaults: {e}")]))?;
    insert_at(
        &mut schema,
        &format!("{STEPS}.{ANY_STEP}"),
        toml::Value::Table(step),
    );
    Ok(schema)
}

/// Set the dotted `key` in `table`, creating the tables on the way.
fn insert_at(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(leaf) = parts.pop() else {
        return;
    };
    let mut at = table;
    for part in parts {
        let next = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = next else {
            return;
        };
        at = next;
    }
    at.insert(leaf.to_string(), value);
}

/// The step a dotted key belongs to and the rest of the key (`lookup.steps.user.cache.ttl_ms`
/// → `("user", "cache.ttl_ms")`; the rest is empty for the step itself).
fn step_of(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(STEPS)?.strip_prefix('.')?;
    Some(rest.split_once('.').unwrap_or((rest, "")))
}

/// The key as the schema spells it: a step's name replaced by [`ANY_STEP`].
fn schema_key(key: &str) -> Cow<'_, str> {
    match step_of(key) {
        Some((_, "")) => Cow::Owned(format!("{STEPS}.{ANY_STEP}")),
        Some((_, rest)) => Cow::Owned(format!("{STEPS}.{ANY_STEP}.{rest}")),
        None => Cow::Borrowed(key),
    }
}

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
    let schema = schema()?;
    let mut known = BTreeMap::new();
    flatten(&schema, "", &mut known);

    let mut problems = Vec::new();
    // What the user's layers set (not the defaults): keys with where they came from, and
    // per step the keys it was given.
    let mut user: Vec<(String, String)> = Vec::new();
    let mut steps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
                    check_file(&table, &schema, "", &origin, &mut problems);
                    if let Some(toml::Value::Table(defined)) =
                        table.get("lookup").and_then(|l| l.get("steps"))
                    {
                        for (name, step) in defined {
                            if let toml::Value::Table(keys) = step
                                && valid_step_name(name)
                            {
                                let given = steps.entry(name.clone()).or_default();
                                given.extend(keys.keys().cloned());
                            }
                        }
                    }
                    let mut keys = Vec::new();
                    set_keys(&table, "", &mut keys);
                    user.extend(keys.into_iter().map(|k| (k, origin.clone())));
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
            Some(end) => format!("{}.{}", &key[..end], key[end + 1..].replace('_', "-")),
            None => key,
        };
        let step = step_of(&key).map(|(name, rest)| (name.to_string(), rest.to_string()));
        if let Some((name, _)) = &step
            && !valid_step_name(name)
        {
            problems.push(format!("env {var}: {}", GraphError::BadName(name.clone())));
            continue;
        }
        let text = toml::Value::String(String::new());
        let Some(default) = known
            .get(schema_key(&key).as_ref())
            .or(free_form(&key).map(|_| &text))
        else {
            problems.push(format!("env {var}: unknown key `{key}`"));
            continue;
        };
        // Given, even when its value is refused below (then that is the one problem).
        if let Some((name, rest)) = step {
            let first = rest.split('.').next().unwrap_or_default().to_string();
            steps.entry(name).or_default().insert(first);
        }
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
        user.push((key, format!("env {var}")));
    }

    problems.extend(missing_step_keys(&steps));
    if !steps.is_empty() {
        problems.extend(mixed_forms(&user));
    }
    if !problems.is_empty() {
        return Err(LoadError::new(problems));
    }
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            LoadError::new(vec![format!(
                "{}: {e}",
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "config".into())
            )])
        })?;
    let problems = foreign_step_keys(&settings, &steps);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(LoadError::new(problems))
    }
}

/// A line per key a step must have and no layer gave it.
fn missing_step_keys(steps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut p = Vec::new();
    for (name, given) in steps {
        for key in Step::REQUIRED_KEYS {
            if given.contains(*key) {
                continue;
            }
            let what = if *key == "backend" {
                format!("one of {}", StepBackend::NAMES.join(", "))
            } else {
                format!("the pointer where the step's result is merged, e.g. \"/{name}\"")
            };
            p.push(format!("{STEPS}.{name}.{key}: required: {what}"));
        }
    }
    p
}

/// With steps: one line naming every single-lookup key the user set, and where.
fn mixed_forms(user: &[(String, String)]) -> Option<String> {
    let mixed: Vec<String> = user
        .iter()
        .filter(|(key, _)| is_single_lookup_key(key))
        .map(|(key, origin)| format!("{key} ({origin})"))
        .collect();
    (!mixed.is_empty()).then(|| {
        format!(
            "{}: single-lookup keys cannot be set with [lookup.steps.*]: each step has its own \
             backend, into, on_miss, attempt_timeout_ms, table and cache, and [lookup.cql] \
             keeps only the connection the cql steps share",
            mixed.join(", ")
        )
    })
}

/// A line per key a step was given that its backend does not read.
fn foreign_step_keys(s: &Settings, steps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut p = Vec::new();
    for (name, keys) in steps {
        let Some(step) = s.lookup.steps.get(name) else {
            continue;
        };
        for key in keys {
            if !step_key_used(step.backend, key) {
                let owner = StepBackend::owning(key).map_or("another backend", |b| b.as_str());
                p.push(format!(
                    "{STEPS}.{name}.{key}: not read by backend = \"{}\" (a key of {owner})",
                    step.backend.as_str()
                ));
            }
        }
    }
    p
}

/// Tables whose keys are the user's (header names): any key below them is allowed, with a
/// string value. Step keys are written with [`ANY_STEP`].
const FREE_FORM: [&str; 3] = [
    "output.webhook.headers",
    "dead_letter.webhook.headers",
    "lookup.steps.*.headers",
];

/// Whether the table at dotted `prefix` is a free-form one.
fn is_free_form(prefix: &str) -> bool {
    FREE_FORM.contains(&schema_key(prefix).as_ref())
}

/// When `key` lies below a free-form table: where that table's name ends in `key`.
fn free_form(key: &str) -> Option<usize> {
    FREE_FORM.into_iter().find_map(|t| {
        let depth = t.split('.').count();
        let end = key.match_indices('.').nth(depth - 1)?.0;
        (schema_key(&key[..end]) == t && end + 1 < key.len()).then_some(end)
    })
}

/// Every key a file sets, dotted: its leaves, and its empty tables (`[lookup.memory]`
/// alone sets that section).
fn set_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = join(prefix, k);
        match v {
            toml::Value::Table(t) if !t.is_empty() => set_keys(t, &key, out),
            _ => out.push(key),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Check a file's table against the schema's table at `prefix`: unknown keys, types,
/// enum names, step names. Every problem is pushed, prefixed with `origin`.
fn check_file(
    file: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
    origin: &str,
    problems: &mut Vec<String>,
) {
    for (k, value) in file {
        let key = join(prefix, k);
        if is_free_form(prefix) {
            if !value.is_str() {
                problems.push(format!(
                    "{origin}: {key}: expected a string, got {}",
                    show(value)
                ));
            }
            continue;
        }
        let schema_k = if prefix == STEPS {
            if !valid_step_name(k) {
                problems.push(format!("{origin}: {}", GraphError::BadName(k.clone())));
                continue;
            }
            ANY_STEP
        } else {
            k.as_str()
        };
        match (defaults.get(schema_k), value) {
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
    let key = schema_key(key);
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

    /// The env variable setting dotted `key` to `raw`, and for a step key (`lookup.steps.*`:
    /// step `s`) the others that step needs: a backend that reads the key, an `into`.
    fn env_setting(key: &str, raw: &str) -> Vec<(String, String)> {
        let key = key.replace(ANY_STEP, "s");
        let var = |k: &str| format!("SLUICE__{}", k.replace('.', "__").to_ascii_uppercase());
        let mut vars = vec![(var(&key), raw.to_string())];
        if let Some(("s", rest)) = step_of(&key) {
            let leaf = rest.split('.').next().unwrap_or_default();
            if leaf != "backend" {
                let backend = StepBackend::owning(leaf).unwrap_or(StepBackend::Http);
                vars.push((var("lookup.steps.s.backend"), backend.as_str().into()));
            }
            if leaf != "into" {
                vars.push((var("lookup.steps.s.into"), "/s".into()));
            }
        }
        vars
    }

    #[test]
    fn every_enum_name_loads_as_itself() {
        for (key, names) in ENUMS {
            for name in names {
                let s = parse_from(None, env_setting(key, name))
                    .unwrap_or_else(|e| panic!("{key} = {name}: {e}"));
                let rendered: toml::Table = toml::from_str(&s.to_toml()).unwrap();
                let mut value = &toml::Value::Table(rendered);
                for part in key.replace(ANY_STEP, "s").split('.') {
                    value = &value[part];
                }
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
        let mut known = BTreeMap::new();
        flatten(&schema().unwrap(), "", &mut known);
        assert!(known.contains_key("lookup.steps.*.query"), "{known:?}");
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
            let vars = env_setting(key, raw);
            let var = vars[0].0.clone();
            if let Err(e) = parse_from(None, vars) {
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

    /// A pipeline of two cql steps, the second reading the first's result.
    const TWO_STEPS: &str = "[lookup.cql]\ncontact_points = [\"db:9042\"]\n\
        [lookup.steps.user]\nbackend = \"cql\"\nquery = \"SELECT a FROM users WHERE id = ?\"\n\
        binds = [\"/user_id\"]\ninto = \"/user\"\n\
        cache = { max_entries = 10, miss_ttl_ms = 5 }\n\
        [lookup.steps.account]\nbackend = \"cql\"\nquery = \"SELECT p FROM accounts WHERE id = ?\"\n\
        binds = [\"/user/account_id\"]\ninto = \"/account\"\n";

    #[test]
    fn steps_load_from_the_file_with_every_other_key_at_its_default() {
        let f = file(TWO_STEPS);
        let s = load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.step_names(), vec!["account", "user"]);
        let user = &s.lookup.steps["user"];
        assert_eq!(user.backend, StepBackend::Cql);
        assert_eq!(user.binds, vec!["/user_id"]);
        assert_eq!(
            (
                user.cache.max_entries,
                user.cache.ttl_ms,
                user.cache.miss_ttl_ms
            ),
            (10, 60_000, 5)
        );
        let mut expected = Step::new(StepBackend::Cql, "/account");
        expected.query = "SELECT p FROM accounts WHERE id = ?".into();
        expected.binds = vec!["/user/account_id".into()];
        assert_eq!(s.lookup.steps["account"], expected);
        assert_eq!(s.lookup.cql.contact_points, vec!["db:9042"]);
    }

    #[test]
    fn env_overrides_a_step_key_and_can_define_a_whole_step() {
        let f = file(TWO_STEPS);
        let s = load_from(
            Some(f.path()),
            env(&[
                (
                    "SLUICE__LOOKUP__STEPS__USER__QUERY",
                    "SELECT b FROM users WHERE id = ?",
                ),
                ("SLUICE__LOOKUP__STEPS__USER__CACHE__TTL_MS", "9"),
                ("SLUICE__LOOKUP__STEPS__GEO__BACKEND", "http"),
                ("SLUICE__LOOKUP__STEPS__GEO__INTO", "/geo"),
                ("SLUICE__LOOKUP__STEPS__GEO__BINDS", "/ip"),
                ("SLUICE__LOOKUP__STEPS__GEO__URL", "http://geo:9100/ip/{0}"),
                ("SLUICE__LOOKUP__STEPS__GEO__METHOD", "GET"),
                ("SLUICE__LOOKUP__STEPS__GEO__HEADERS__X_API_KEY", "k1"),
            ]),
        )
        .unwrap();
        let user = &s.lookup.steps["user"];
        assert_eq!(user.query, "SELECT b FROM users WHERE id = ?");
        assert_eq!((user.cache.ttl_ms, user.cache.max_entries), (9, 10));
        let geo = &s.lookup.steps["geo"];
        assert_eq!(geo.backend, StepBackend::Http);
        assert_eq!(geo.binds, vec!["/ip"]);
        assert_eq!(geo.url, "http://geo:9100/ip/{0}");
        assert_eq!(geo.concurrency, 64, "the default");
        assert_eq!(
            geo.headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
                .collect::<Vec<_>>(),
            vec![("x-api-key".to_string(), "k1")]
        );
        // A step the environment alone defines.
        let s = load_from(
            None,
            env(&[
                ("SLUICE__LOOKUP__STEPS__ONLY__BACKEND", "cql"),
                ("SLUICE__LOOKUP__STEPS__ONLY__INTO", "/only"),
                (
                    "SLUICE__LOOKUP__STEPS__ONLY__QUERY",
                    "SELECT a FROM t WHERE k = ?",
                ),
                ("SLUICE__LOOKUP__STEPS__ONLY__BINDS", "/user_id"),
            ]),
        )
        .unwrap();
        assert_eq!(s.step_names(), vec!["only"]);
        assert_eq!(s.lookup.steps["only"].into, "/only");
    }

    #[test]
    fn step_keys_are_checked_by_the_step_schema() {
        let f = file(
            "[lookup.steps.a]\nbackend = \"grpc\"\ninto = 5\nqueryy = \"x\"\n\
             attempt_timeout_ms = \"soon\"\non_miss = \"skip\"\nmethod = \"PUT\"\n\
             cache = { max_entries = -1, nope = 1 }\nheaders = { A = 1 }\ndelay_ms = [1.5]\n\
             [lookup.steps.B-2]\nbackend = \"cql\"\n\
             [lookup.steps.c]\nbackend = \"cql\"\ninto = \"/c\"\n[lookup.steps.c.cache]\nttl_ms = true\n",
        );
        let err = load_from(
            Some(f.path()),
            env(&[
                ("SLUICE__LOOKUP__STEPS__A__CONCURRENCY", "many"),
                ("SLUICE__LOOKUP__STEPS__A__NOPE", "1"),
                ("SLUICE__LOOKUP__STEPS__X-Y__BACKEND", "cql"),
            ]),
        )
        .unwrap_err();
        let o = f.path().display().to_string();
        let mut want: Vec<String> = [
            "lookup.steps.a.attempt_timeout_ms: expected an integer, got \"soon\"",
            "lookup.steps.a.backend: \"grpc\" is not one of memory, cql, http",
            "lookup.steps.a.cache.max_entries: expected a non-negative integer, got -1",
            "unknown key `lookup.steps.a.cache.nope`",
            "lookup.steps.a.delay_ms: expected an array of non-negative integers, got [1.5]",
            "lookup.steps.a.headers.A: expected a string, got 1",
            "lookup.steps.a.into: expected a string, got 5",
            "lookup.steps.a.method: \"PUT\" is not one of GET, POST",
            "lookup.steps.a.on_miss: \"skip\" is not one of emit, dead_letter, skip_dependents",
            "unknown key `lookup.steps.a.queryy`",
            "lookup.steps.B-2: a step name is made of a-z, 0-9 and _ only",
            "lookup.steps.c.cache.ttl_ms: expected an integer, got true",
        ]
        .iter()
        .map(|m| format!("{o}: {m}"))
        .collect();
        want.extend([
            "env SLUICE__LOOKUP__STEPS__A__CONCURRENCY: expected an integer, got `many`".into(),
            "env SLUICE__LOOKUP__STEPS__A__NOPE: unknown key `lookup.steps.a.nope`".into(),
            "env SLUICE__LOOKUP__STEPS__X-Y__BACKEND: lookup.steps.x-y: a step name is made of \
             a-z, 0-9 and _ only"
                .into(),
        ]);
        let mut got = err.problems.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_step_needs_a_backend_and_an_into_from_some_layer() {
        let f = file("[lookup.steps.a]\nbinds = [\"/k\"]\n[lookup.steps.b]\n");
        let err = load_from(
            Some(f.path()),
            env(&[("SLUICE__LOOKUP__STEPS__A__INTO", "/a")]),
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "lookup.steps.a.backend: required: one of memory, cql, http".to_string(),
                "lookup.steps.b.backend: required: one of memory, cql, http".to_string(),
                "lookup.steps.b.into: required: the pointer where the step's result is merged, \
                 e.g. \"/b\""
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_step_key_its_backend_does_not_read_is_refused() {
        let f = file(&format!(
            "{TWO_STEPS}url = \"http://x\"\ntable = \"t.jsonl\"\nafter = [\"user\"]\n"
        ));
        let err = load_from(
            Some(f.path()),
            env(&[("SLUICE__LOOKUP__STEPS__USER__BATCH_MAX_KEYS", "3")]),
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "lookup.steps.account.table: not read by backend = \"cql\" (a key of memory)",
                "lookup.steps.account.url: not read by backend = \"cql\" (a key of http)",
                "lookup.steps.user.batch_max_keys: not read by backend = \"cql\" (a key of http)",
            ]
        );
    }

    #[test]
    fn single_lookup_keys_set_with_steps_are_refused_in_one_line_naming_them() {
        let f = file(&format!(
            "[lookup]\nbackend = \"memory\"\non_miss = \"emit\"\n[lookup.memory]\n{TWO_STEPS}\
             [lookup.cache]\nmax_entries = 5\n"
        ));
        let err = load_from(
            Some(f.path()),
            env(&[
                ("SLUICE__LOOKUP__INTO", "/x"),
                ("SLUICE__LOOKUP__CQL__QUERY", "SELECT 1"),
                ("SLUICE__LOOKUP__CQL__KEYSPACE", "ks"),
            ]),
        )
        .unwrap_err();
        let o = f.path().display().to_string();
        assert_eq!(
            err.problems,
            vec![format!(
                "lookup.backend ({o}), lookup.cache.max_entries ({o}), lookup.memory ({o}), \
                 lookup.on_miss ({o}), lookup.cql.query (env SLUICE__LOOKUP__CQL__QUERY), \
                 lookup.into (env SLUICE__LOOKUP__INTO): single-lookup keys cannot be set with \
                 [lookup.steps.*]: each step has its own backend, into, on_miss, \
                 attempt_timeout_ms, table and cache, and [lookup.cql] keeps only the \
                 connection the cql steps share"
            )]
        );
        // The same keys without steps, and steps beside the shared connection: fine.
        let f = file("[lookup]\nbackend = \"memory\"\n[lookup.cache]\nmax_entries = 5\n");
        assert!(parse_from(Some(f.path()), env(&[])).is_ok());
        let f = file(TWO_STEPS);
        assert!(
            parse_from(
                Some(f.path()),
                env(&[("SLUICE__LOOKUP__CQL__KEYSPACE", "ks")])
            )
            .is_ok()
        );
    }

    #[test]
    fn a_cached_miss_lasts_ttl_ms_unless_miss_ttl_ms_is_set() {
        let s = load_from(None, env(&[("SLUICE__LOOKUP__CACHE__TTL_MS", "700")])).unwrap();
        assert_eq!(s.lookup.cache.miss_ttl_ms, None);
        assert_eq!(
            s.lookup.cache.miss_ttl(),
            std::time::Duration::from_millis(700)
        );
        assert!(!s.to_toml().contains("miss_ttl_ms"), "unset stays unset");
        let f = file("[lookup.cache]\nmiss_ttl_ms = 0\n");
        let s = load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.lookup.cache.miss_ttl(), std::time::Duration::ZERO);
        let s = load_from(None, env(&[("SLUICE__LOOKUP__CACHE__MISS_TTL_MS", "5")])).unwrap();
        assert_eq!(s.lookup.cache.miss_ttl_ms, Some(5));
        let rendered: toml::Table = toml::from_str(&s.to_toml()).unwrap();
        assert_eq!(
            rendered["lookup"]["cache"]["miss_ttl_ms"].as_integer(),
            Some(5)
        );
        let f = file("[lookup.cache]\nmiss_ttl_ms = \"long\"\n");
        let err = load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.problems[0]
                .ends_with("lookup.cache.miss_ttl_ms: expected an integer, got \"long\""),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn the_printed_config_with_steps_loads_back_as_the_same_settings() {
        let f = file(TWO_STEPS);
        let s = load_from(Some(f.path()), env(&[])).unwrap();
        let printed = s.to_toml();
        let rendered: toml::Table = toml::from_str(&printed).unwrap();
        let lookup = rendered["lookup"].as_table().unwrap();
        assert_eq!(
            lookup.keys().collect::<Vec<_>>(),
            vec!["cql", "steps"],
            "no single-lookup keys: {printed}"
        );
        assert!(!lookup["cql"].as_table().unwrap().contains_key("query"));
        let user = lookup["steps"]["user"].as_table().unwrap();
        assert!(
            user.contains_key("query") && !user.contains_key("url"),
            "{user:?}"
        );
        let again = file(&printed);
        assert_eq!(load_from(Some(again.path()), env(&[])).unwrap(), s);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any mix of step keys from the environment loads, or is refused with one-line
        /// problems; what loads prints as a file that loads back the same.
        #[test]
        fn env_defined_steps_load_or_are_refused_and_print_stably(
            base in proptest::collection::btree_map(
                proptest::sample::select(vec!["A", "B", "USER"]),
                proptest::sample::select(vec!["memory", "cql", "http"]),
                0..3,
            ),
            vars in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["A", "B", "USER", "X-Y"]),
                    proptest::sample::select(vec![
                        "BACKEND", "INTO", "BINDS", "QUERY", "URL", "METHOD", "ON_MISS", "AFTER",
                        "CACHE__MAX_ENTRIES", "CACHE__MISS_TTL_MS", "HEADERS__X_K", "TABLE",
                        "DELAY_MS", "BATCH_MAX_KEYS", "NOPE",
                    ]),
                    proptest::sample::select(vec![
                        "memory", "cql", "http", "/a", "/b/x", "/user", "GET", "POST", "emit",
                        "skip_dependents", "a,b", "5", "-1", "[1, 2]", "SELECT x FROM t WHERE k = ?",
                        "http://h/{0}", "", "x\ny",
                    ]),
                ),
                0..6,
            ),
            single in proptest::bool::ANY,
        ) {
            let var = |step: &str, key: &str| format!("SLUICE__LOOKUP__STEPS__{step}__{key}");
            let mut pairs = BTreeMap::new();
            for (step, backend) in &base {
                pairs.insert(var(step, "BACKEND"), backend.to_string());
                pairs.insert(var(step, "INTO"), format!("/{}", step.to_ascii_lowercase()));
            }
            for (step, key, value) in &vars {
                pairs.insert(var(step, key), value.to_string());
            }
            let mut pairs: Vec<(String, String)> = pairs.into_iter().collect();
            if single {
                pairs.push(("SLUICE__LOOKUP__BACKEND".into(), "memory".into()));
            }
            match parse_from(None, pairs) {
                Err(e) => {
                    proptest::prop_assert!(!e.problems.is_empty());
                    for p in &e.problems {
                        proptest::prop_assert!(!p.trim().is_empty() && !p.contains(['\n', '\r']), "{p:?}");
                    }
                }
                Ok(s) => {
                    proptest::prop_assert!(!(single && s.has_steps()), "the mix was refused");
                    let printed = file(&s.to_toml());
                    let again = parse_from(Some(printed.path()), env(&[]));
                    proptest::prop_assert_eq!(again.ok(), Some(s));
                }
            }
        }
    }
}
