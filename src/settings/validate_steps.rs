//! Value checks of a pipeline's steps (`[lookup.steps.*]`, README "Pipelines") that types
//! alone cannot express: the step graph (cycles, unknown `after`, one `into` for two steps),
//! then per step the keys its backend needs, and `[lookup.cql]` as the connection the cql
//! steps share. One line per problem, naming the step and the key.

use super::{CqlLookup, HttpMethod, Settings, Step, StepBackend};
use crate::pointer::Pointer;
use crate::sink::cql::config::consistency_problem;

/// Every problem with the steps; empty for the single-lookup form.
pub fn step_problems(s: &Settings) -> Vec<String> {
    let mut p = Vec::new();
    if !s.has_steps() {
        return p;
    }
    // A bind of the whole record overlaps every `into`, its own too: reported below, not
    // as the cycle the graph would see.
    let whole_record = s
        .lookup
        .steps
        .values()
        .any(|st| st.binds.iter().any(String::is_empty));
    if !whole_record && let Err(errors) = s.step_graph() {
        p.extend(errors.iter().map(ToString::to_string));
    }
    for (name, step) in &s.lookup.steps {
        p.extend(one_step(name, step));
    }
    if s.lookup
        .steps
        .values()
        .any(|step| step.backend == StepBackend::Cql)
    {
        p.extend(shared_session(&s.lookup.cql));
    }
    p
}

/// The problems of step `name`.
fn one_step(name: &str, s: &Step) -> Vec<String> {
    let mut p = Vec::new();
    let mut need = |ok: bool, key: &str, msg: String| {
        if !ok {
            p.push(format!("lookup.steps.{name}.{key}: {msg}"));
        }
    };
    need(
        s.attempt_timeout_ms >= 1,
        "attempt_timeout_ms",
        "must be at least 1".into(),
    );
    // Pointer syntax is the graph's to report; the whole record is no value to bind.
    need(
        !s.binds.iter().any(String::is_empty),
        "binds",
        "\"\" is the whole record; a bind points at one value in it".into(),
    );
    need(
        s.cache.max_entries == 0 || s.cache.ttl_ms >= 1,
        "cache.ttl_ms",
        "must be at least 1 when cache.max_entries > 0".into(),
    );
    match s.backend {
        StepBackend::Memory => {
            need(
                s.binds.len() == 1,
                "binds",
                format!(
                    "a memory step looks up exactly one value in key_column, got {} bind(s)",
                    s.binds.len()
                ),
            );
            if s.table.is_empty() {
                need(false, "table", "must name a JSONL file".into());
            } else if let Err(e) = std::fs::metadata(&s.table) {
                need(false, "table", format!("cannot read `{}`: {e}", s.table));
            }
            need(
                !s.key_column.is_empty(),
                "key_column",
                "must not be empty".into(),
            );
            need(
                s.delay_ms.len() == 2 && s.delay_ms[0] <= s.delay_ms[1],
                "delay_ms",
                format!("expected [min, max] with min <= max, got {:?}", s.delay_ms),
            );
            need(
                s.fail_ratio.is_finite() && (0.0..=1.0).contains(&s.fail_ratio),
                "fail_ratio",
                format!("must be in [0, 1], got {}", s.fail_ratio),
            );
            for (key, value) in [
                ("delay_field", &s.delay_field),
                ("fail_field", &s.fail_field),
            ] {
                if !value.is_empty()
                    && let Err(e) = Pointer::parse(value)
                {
                    need(false, key, e.to_string());
                }
            }
        }
        StepBackend::Cql => {
            let markers = bind_markers(&s.query);
            if s.query.trim().is_empty() {
                need(false, "query", "must not be empty".into());
            } else if s.binds.is_empty() {
                need(
                    false,
                    "binds",
                    "a cql step needs a bind per `?` of its query (at least one)".into(),
                );
            } else {
                need(
                    markers == s.binds.len(),
                    "query",
                    format!(
                        "has {markers} bind marker(s) `?` but binds has {} pointer(s)",
                        s.binds.len()
                    ),
                );
            }
        }
        StepBackend::Http => http_step(s, &mut need),
    }
    p
}

/// The keys of an `http` step.
fn http_step(s: &Step, need: &mut impl FnMut(bool, &str, String)) {
    need(
        !s.binds.is_empty(),
        "binds",
        "an http step needs at least one bind".into(),
    );
    match placeholders(&s.url) {
        Err(bad) => need(
            false,
            "url",
            format!("`{bad}` is not a placeholder: write {{N}} for binds[N]"),
        ),
        Ok(used) => {
            for n in used.iter().filter(|n| **n >= s.binds.len()) {
                need(
                    false,
                    "url",
                    format!(
                        "{{{n}}} has no bind: binds has {} pointer(s)",
                        s.binds.len()
                    ),
                );
            }
            if s.method == HttpMethod::Get {
                for (i, b) in s.binds.iter().enumerate() {
                    need(
                        used.contains(&i),
                        "url",
                        format!("binds[{i}] `{b}` is not sent: a GET sends {{{i}}} in the url"),
                    );
                }
            }
            need(
                s.batch_max_keys == 0 || used.is_empty(),
                "url",
                "{N} placeholders cannot be used with batch_max_keys > 0 (one POST carries \
                 many records' keys)"
                    .into(),
            );
            let url = fill_placeholders(&s.url);
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => need(
                    false,
                    "url",
                    format!("`{}` must be an http:// or https:// URL with a host", s.url),
                ),
                Err(e) => need(false, "url", format!("`{}` is not a URL: {e}", s.url)),
            }
        }
    }
    need(
        s.concurrency >= 1,
        "concurrency",
        "must be at least 1".into(),
    );
    need(
        s.batch_max_keys == 0 || s.method == HttpMethod::Post,
        "batch_max_keys",
        "batches are sent as POST {\"keys\": [...]}: set method = \"POST\" (or batch_max_keys = 0)"
            .into(),
    );
    if let Err(e) = Pointer::parse(&s.result) {
        need(false, "result", e.to_string());
    }
    for (name, value) in &s.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            need(
                false,
                "headers",
                format!("`{name}` is not a valid header name"),
            );
        } else if reqwest::header::HeaderValue::from_str(value).is_err() {
            need(
                false,
                &format!("headers.{name}"),
                "the value is not a valid header value".into(),
            );
        }
    }
    if !s.ca_file.is_empty() {
        match std::fs::read(&s.ca_file) {
            Err(e) => need(
                false,
                "ca_file",
                format!("cannot read `{}`: {e}", s.ca_file),
            ),
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => need(
                    !certs.is_empty(),
                    "ca_file",
                    format!("`{}` holds no certificate", s.ca_file),
                ),
                Err(e) => need(
                    false,
                    "ca_file",
                    format!("`{}` is not a PEM certificate bundle: {e}", s.ca_file),
                ),
            },
        }
    }
}

/// `[lookup.cql]` as the cql steps' connection.
fn shared_session(c: &CqlLookup) -> Vec<String> {
    let mut p = Vec::new();
    if c.contact_points.is_empty() || c.contact_points.iter().any(|h| h.trim().is_empty()) {
        p.push(
            "lookup.cql.contact_points: at least one HOST:PORT (the cql steps connect through it)"
                .to_string(),
        );
    }
    p.extend(consistency_problem(
        "lookup.cql.consistency",
        &c.consistency,
    ));
    p
}

/// The bind markers `?` of a CQL statement, outside string literals and quoted names.
fn bind_markers(query: &str) -> usize {
    let mut quote = None;
    let mut n = 0;
    for c in query.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => n += 1,
            // A doubled quote inside a literal closes and reopens it: counts the same.
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    n
}

/// The bind indices `{N}` a URL uses, in order; `Err` with the first brace that is not a
/// placeholder.
fn placeholders(url: &str) -> Result<Vec<usize>, String> {
    let mut used = Vec::new();
    let mut rest = url;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        let end = tail.find('}').filter(|_| tail.starts_with('{'));
        let Some(end) = end else {
            return Err(tail.chars().take(12).collect());
        };
        let digits = &tail[1..end];
        match digits.parse::<usize>() {
            Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => used.push(n),
            _ => return Err(tail[..=end].to_string()),
        }
        rest = &tail[end + 1..];
    }
    Ok(used)
}

/// The URL with each placeholder replaced by a value, to parse it as a URL.
fn fill_placeholders(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        match rest[i..].find('}') {
            Some(end) => {
                out.push('0');
                rest = &rest[i + end + 1..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_markers_skip_literals_and_quoted_names() {
        assert_eq!(bind_markers("SELECT a FROM t WHERE k = ?"), 1);
        assert_eq!(bind_markers("SELECT a FROM t WHERE k = ? AND c = ?"), 2);
        assert_eq!(
            bind_markers("SELECT a FROM t WHERE k = 'why?' AND c = ?"),
            1
        );
        assert_eq!(
            bind_markers("SELECT \"a?\" FROM t WHERE k = 'it''s?' AND c = ?"),
            1
        );
        assert_eq!(bind_markers("SELECT a FROM t"), 0);
    }

    #[test]
    fn placeholders_are_bind_indices_in_braces() {
        assert_eq!(
            placeholders("http://h/geo/{0}?x={1}&y={0}"),
            Ok(vec![0, 1, 0])
        );
        assert_eq!(placeholders("http://h/geo"), Ok(vec![]));
        assert_eq!(placeholders("http://h/{ip}"), Err("{ip}".into()));
        assert_eq!(placeholders("http://h/{+1}"), Err("{+1}".into()));
        assert_eq!(placeholders("http://h/{0"), Err("{0".into()));
        assert_eq!(placeholders("http://h/0}"), Err("}".into()));
        assert_eq!(fill_placeholders("http://h:1/{0}/x{12}"), "http://h:1/0/x0");
    }

    fn plans() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/plans.jsonl").to_string()
    }

    fn memory(into: &str, bind: &str) -> Step {
        let mut s = Step::new(StepBackend::Memory, into);
        s.table = plans();
        s.key_column = "plan".into();
        s.binds = vec![bind.into()];
        s
    }

    fn cql(into: &str, query: &str, binds: &[&str]) -> Step {
        let mut s = Step::new(StepBackend::Cql, into);
        s.query = query.into();
        s.binds = binds.iter().map(|b| b.to_string()).collect();
        s
    }

    fn http(into: &str, url: &str, binds: &[&str]) -> Step {
        let mut s = Step::new(StepBackend::Http, into);
        s.url = url.into();
        s.binds = binds.iter().map(|b| b.to_string()).collect();
        s
    }

    fn problems(steps: Vec<(&str, Step)>) -> Vec<String> {
        let mut s = Settings::defaults();
        s.lookup.steps = steps
            .into_iter()
            .map(|(n, st)| (n.to_string(), st))
            .collect();
        step_problems(&s)
    }

    #[test]
    fn a_valid_pipeline_has_no_problems_and_the_single_form_none_here() {
        assert!(step_problems(&Settings::defaults()).is_empty());
        let p = problems(vec![
            (
                "user",
                cql("/user", "SELECT a FROM u WHERE k = ?", &["/user_id"]),
            ),
            ("plan", memory("/plan", "/user/plan")),
            ("geo", http("/geo", "https://geo.example/ip/{0}", &["/ip"])),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let s = super::super::load_from(
            Some(std::path::Path::new("config/pipeline-example.toml")),
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.step_names(), vec!["account", "geo", "plan", "user"]);
    }

    #[test]
    fn the_graphs_problems_are_named_by_step() {
        let mut a = memory("/a", "/b/x");
        a.after = vec!["nobody".into()];
        let p = problems(vec![("a", a.clone()), ("b", memory("/b", "/a/y"))]);
        assert_eq!(
            p,
            vec!["lookup.steps.a.after: no step is named `nobody`".to_string()]
        );
        let p = problems(vec![
            ("a", memory("/a", "/b/x")),
            ("b", memory("/b", "/a/y")),
        ]);
        assert_eq!(
            p,
            vec![
                "lookup.steps: the steps depend on each other in a cycle: a -> b -> a".to_string()
            ]
        );
        let p = problems(vec![("a", memory("/x", "/k")), ("b", memory("/x", "/k"))]);
        assert_eq!(
            p,
            vec![
                "lookup.steps.a.into and lookup.steps.b.into: both merge at `/x` (each step \
                 needs a place of its own)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn every_step_needs_a_timeout_real_binds_and_a_cache_ttl() {
        let mut a = memory("/a", "");
        a.attempt_timeout_ms = 0;
        a.cache.max_entries = 10;
        a.cache.ttl_ms = 0;
        assert_eq!(
            problems(vec![("a", a)]),
            vec![
                "lookup.steps.a.attempt_timeout_ms: must be at least 1",
                "lookup.steps.a.binds: \"\" is the whole record; a bind points at one value in it",
                "lookup.steps.a.cache.ttl_ms: must be at least 1 when cache.max_entries > 0",
            ]
        );
    }

    #[test]
    fn a_memory_step_needs_its_table_one_bind_and_sane_simulation() {
        let mut a = memory("/a", "/k");
        a.binds.push("/j".into());
        a.table = String::new();
        a.key_column = String::new();
        a.delay_ms = vec![5, 1];
        a.fail_ratio = 1.5;
        a.delay_field = "d".into();
        let mut b = memory("/b", "/k");
        b.table = "/no/such/table.jsonl".into();
        let p = problems(vec![("a", a), ("b", b)]);
        assert_eq!(
            p,
            vec![
                "lookup.steps.a.binds: a memory step looks up exactly one value in key_column, \
                 got 2 bind(s)",
                "lookup.steps.a.table: must name a JSONL file",
                "lookup.steps.a.key_column: must not be empty",
                "lookup.steps.a.delay_ms: expected [min, max] with min <= max, got [5, 1]",
                "lookup.steps.a.fail_ratio: must be in [0, 1], got 1.5",
                "lookup.steps.a.delay_field: a JSON pointer must be empty or start with '/', got `d`",
                "lookup.steps.b.table: cannot read `/no/such/table.jsonl`: No such file or \
                 directory (os error 2)",
            ]
        );
    }

    #[test]
    fn a_cql_step_needs_a_query_with_a_marker_per_bind_and_a_connection() {
        let mut s = Settings::defaults();
        s.lookup.cql.contact_points = Vec::new();
        s.lookup.cql.consistency = "SOMETIMES".into();
        for (name, step) in [
            ("a", cql("/a", "", &["/k"])),
            ("b", cql("/b", "SELECT a FROM t WHERE k = ?", &[])),
            (
                "c",
                cql("/c", "SELECT a FROM t WHERE k = ? AND j = ?", &["/k"]),
            ),
            ("d", cql("/d", "SELECT a FROM t WHERE k = 'x?'", &["/k"])),
        ] {
            s.lookup.steps.insert(name.into(), step);
        }
        let p = step_problems(&s);
        assert_eq!(p.len(), 6, "{p:?}");
        assert_eq!(
            p[..5],
            [
                "lookup.steps.a.query: must not be empty",
                "lookup.steps.b.binds: a cql step needs a bind per `?` of its query (at least one)",
                "lookup.steps.c.query: has 2 bind marker(s) `?` but binds has 1 pointer(s)",
                "lookup.steps.d.query: has 0 bind marker(s) `?` but binds has 1 pointer(s)",
                "lookup.cql.contact_points: at least one HOST:PORT (the cql steps connect through it)",
            ]
        );
        assert!(p[5].starts_with("lookup.cql.consistency: \"SOMETIMES\" is not one of"));
    }

    #[test]
    fn an_http_step_needs_a_url_its_binds_fill_and_sane_batching() {
        let mut bad = http("/a", "ftp://h/{0}", &["/k"]);
        bad.concurrency = 0;
        bad.result = "r".into();
        bad.headers.insert("a b".into(), "v".into());
        bad.headers.insert("ok".into(), "line\nbreak".into());
        bad.ca_file = "/no/such/ca.pem".into();
        let mut batch_get = http("/c", "http://h/batch", &["/k"]);
        batch_get.batch_max_keys = 10;
        let mut batch_post = http("/d", "http://h/b/{0}", &["/k"]);
        batch_post.batch_max_keys = 10;
        batch_post.method = HttpMethod::Post;
        let mut post = http("/e", "http://h/lookup", &["/k", "/j"]);
        post.method = HttpMethod::Post;
        let p = problems(vec![
            ("a", bad),
            ("b", http("/b", "http://h/{0}/{2}", &["/k", "/j"])),
            ("c", batch_get),
            ("d", batch_post),
            ("e", post),
            ("f", http("/f", "http://h/{x}", &[])),
            ("g", http("/g", "not a url {0}", &["/k"])),
        ]);
        assert_eq!(
            p,
            vec![
                "lookup.steps.a.url: `ftp://h/{0}` must be an http:// or https:// URL with a host",
                "lookup.steps.a.concurrency: must be at least 1",
                "lookup.steps.a.result: a JSON pointer must be empty or start with '/', got `r`",
                "lookup.steps.a.headers: `a b` is not a valid header name",
                "lookup.steps.a.headers.ok: the value is not a valid header value",
                "lookup.steps.a.ca_file: cannot read `/no/such/ca.pem`: No such file or directory \
                 (os error 2)",
                "lookup.steps.b.url: {2} has no bind: binds has 2 pointer(s)",
                "lookup.steps.b.url: binds[1] `/j` is not sent: a GET sends {1} in the url",
                "lookup.steps.c.url: binds[0] `/k` is not sent: a GET sends {0} in the url",
                "lookup.steps.c.batch_max_keys: batches are sent as POST {\"keys\": [...]}: set \
                 method = \"POST\" (or batch_max_keys = 0)",
                "lookup.steps.d.url: {N} placeholders cannot be used with batch_max_keys > 0 (one \
                 POST carries many records' keys)",
                "lookup.steps.f.binds: an http step needs at least one bind",
                "lookup.steps.f.url: `{x}` is not a placeholder: write {N} for binds[N]",
                "lookup.steps.g.url: `not a url {0}` is not a URL: relative URL without a base",
            ]
        );
    }
}
