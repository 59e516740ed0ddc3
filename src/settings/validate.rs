//! Value checks that types alone cannot express: ranges, pointers, readable files, where
//! the sinks' files and the checkpoint directory are. A pipeline's steps are checked by
//! `validate_steps`.

use std::path::{Path, PathBuf};

use super::paths::{existing_ancestor, resolve, same_file};
use super::validate_steps::step_problems;
use super::{Backend, Settings, SinkKind};
use crate::pointer::Pointer;
use crate::sink::cql::config::consistency_problem;

/// Most HTTP worker threads: actix-web panics above this.
pub const MAX_WORKERS: u64 = 512;

/// Every problem with the settings, one line each naming the key; empty when valid.
pub fn validate(s: &Settings) -> Vec<String> {
    let mut p = Vec::new();
    let mut need = |ok: bool, msg: String| {
        if !ok {
            p.push(msg);
        }
    };

    let port_ok = s
        .server
        .bind
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    need(
        port_ok,
        format!("server.bind: expected HOST:PORT, got `{}`", s.server.bind),
    );
    need(
        s.server.max_body_bytes >= 1,
        "server.max_body_bytes: must be at least 1".into(),
    );
    need(
        s.server.max_records_per_request >= 1,
        "server.max_records_per_request: must be at least 1".into(),
    );
    need(
        s.server.workers <= MAX_WORKERS,
        format!(
            "server.workers: must be at most {MAX_WORKERS} (0 = one per core), got {}",
            s.server.workers
        ),
    );
    need(
        s.server.auth_tokens.iter().all(|t| !t.trim().is_empty()),
        "server.auth_tokens: tokens must not be empty".into(),
    );

    if s.cluster.enabled {
        need(
            !s.cluster.etcd.is_empty() && s.cluster.etcd.iter().all(|e| !e.trim().is_empty()),
            "cluster.etcd: list at least one endpoint, e.g. [\"http://127.0.0.1:2379\"]".into(),
        );
        need(
            s.cluster.prefix.starts_with('/') && s.cluster.prefix.len() > 1,
            format!(
                "cluster.prefix: must start with `/` and name the cluster, got `{}`",
                s.cluster.prefix
            ),
        );
        need(
            s.cluster.lease_ttl_ms >= 1000,
            format!(
                "cluster.lease_ttl_ms: must be at least 1000 (etcd leases count whole seconds), got {}",
                s.cluster.lease_ttl_ms
            ),
        );
        need(
            s.cluster.peer_timeout_ms == 0 || s.cluster.peer_timeout_ms >= 500,
            format!(
                "cluster.peer_timeout_ms: must be 0 (= lease_ttl_ms) or at least 500 (peers probe \
                 each other every 250 ms), got {}",
                s.cluster.peer_timeout_ms
            ),
        );
        need(
            s.cluster.max_staged_records >= 1,
            "cluster.max_staged_records: must be at least 1".to_string(),
        );
        need(
            s.cluster.advertise.is_empty()
                || s.cluster.advertise.starts_with("http://")
                || s.cluster.advertise.starts_with("https://"),
            format!(
                "cluster.advertise: must be a base URL like http://host:port, got `{}`",
                s.cluster.advertise
            ),
        );
        need(
            s.cluster
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            format!(
                "cluster.node: use letters, digits, `-`, `_` and `.` only, got `{}`",
                s.cluster.node
            ),
        );
    }
    need(
        (1..=65_536).contains(&s.pipeline.partitions),
        format!(
            "pipeline.partitions: must be between 1 and 65536, got {}",
            s.pipeline.partitions
        ),
    );
    need(
        s.pipeline.capacity >= 1,
        "pipeline.capacity: must be at least 1".into(),
    );
    need(
        s.pipeline.backlog >= 1,
        "pipeline.backlog: must be at least 1".into(),
    );
    need(
        s.pipeline.timeout_ms >= 1,
        "pipeline.timeout_ms: must be at least 1".into(),
    );
    let mut pointers = vec![
        ("pipeline.key", &s.pipeline.key),
        ("pipeline.id", &s.pipeline.id),
    ];
    if !s.has_steps() {
        pointers.push(("lookup.into", &s.lookup.into));
    }
    for (key, value) in pointers {
        if let Err(e) = Pointer::parse(value) {
            need(false, format!("{key}: {e}"));
        } else if value.is_empty() {
            need(
                false,
                format!("{key}: must point into the record, not be the whole record"),
            );
        }
    }

    need(
        s.retry.max_attempts >= 1,
        "retry.max_attempts: must be at least 1 (1 = no retry)".into(),
    );
    need(
        s.retry.initial_backoff_ms <= s.retry.max_backoff_ms,
        format!(
            "retry.initial_backoff_ms: {} is above retry.max_backoff_ms {}",
            s.retry.initial_backoff_ms, s.retry.max_backoff_ms
        ),
    );
    need(
        s.retry.multiplier.is_finite() && s.retry.multiplier >= 1.0,
        format!(
            "retry.multiplier: must be at least 1.0, got {}",
            s.retry.multiplier
        ),
    );
    need(
        s.retry.jitter.is_finite() && (0.0..1.0).contains(&s.retry.jitter),
        format!("retry.jitter: must be in [0, 1), got {}", s.retry.jitter),
    );

    if s.has_steps() {
        for problem in step_problems(s) {
            need(false, problem);
        }
    } else {
        single_lookup(s, &mut need);
    }

    for (section, sink) in [("output", &s.output), ("dead_letter", &s.dead_letter)] {
        for problem in sink.problems(section) {
            need(false, problem);
        }
    }
    need(
        s.checkpoint.interval_ms >= 1,
        "checkpoint.interval_ms: must be at least 1".into(),
    );
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    p.extend(file_problems(s, &base));
    p
}

/// `[lookup]` of the single-lookup form (no `[lookup.steps.*]`) and its backend's section.
fn single_lookup(s: &Settings, need: &mut impl FnMut(bool, String)) {
    need(
        s.lookup.attempt_timeout_ms >= 1,
        "lookup.attempt_timeout_ms: must be at least 1".into(),
    );
    match s.lookup.backend {
        Backend::Memory => {
            let m = &s.lookup.memory;
            need(
                m.delay_ms.len() == 2 && m.delay_ms[0] <= m.delay_ms[1],
                format!(
                    "lookup.memory.delay_ms: expected [min, max] with min <= max, got {:?}",
                    m.delay_ms
                ),
            );
            need(
                m.fail_ratio.is_finite() && (0.0..=1.0).contains(&m.fail_ratio),
                format!(
                    "lookup.memory.fail_ratio: must be in [0, 1], got {}",
                    m.fail_ratio
                ),
            );
            need(
                !m.key_column.is_empty(),
                "lookup.memory.key_column: must not be empty".into(),
            );
            for (key, value) in [
                ("lookup.memory.delay_field", &m.delay_field),
                ("lookup.memory.fail_field", &m.fail_field),
            ] {
                if !value.is_empty()
                    && let Err(e) = Pointer::parse(value)
                {
                    need(false, format!("{key}: {e}"));
                }
            }
            if let Err(e) = std::fs::metadata(&m.table) {
                need(
                    false,
                    format!("lookup.memory.table: cannot read `{}`: {e}", m.table),
                );
            }
        }
        Backend::Cql => {
            let c = &s.lookup.cql;
            need(
                !c.contact_points.is_empty(),
                "lookup.cql.contact_points: at least one HOST:PORT".into(),
            );
            need(
                !c.query.trim().is_empty(),
                "lookup.cql.query: must not be empty".into(),
            );
            for b in &c.binds {
                if let Err(e) = Pointer::parse(b) {
                    need(false, format!("lookup.cql.binds: {e}"));
                }
            }
            if let Some(problem) = consistency_problem("lookup.cql.consistency", &c.consistency) {
                need(false, problem);
            }
        }
    }
}

/// The checkpoint directory and the file sinks' files, with relative paths resolved against
/// `base` (the working directory): each must be creatable as what it is (a directory, a
/// file), no two file sinks may write one file however it is spelled, and no sink file may
/// be in (or be) the checkpoint directory.
fn file_problems(s: &Settings, base: &Path) -> Vec<String> {
    let mut p = Vec::new();
    let checkpoint = if s.checkpoint.dir.trim().is_empty() {
        p.push("checkpoint.dir: must not be empty".to_string());
        None
    } else {
        let dir = resolve(base, Path::new(&s.checkpoint.dir));
        match existing_ancestor(&dir) {
            Some(a) if a == dir && !dir.is_dir() => p.push(format!(
                "checkpoint.dir: `{}` is not a directory",
                s.checkpoint.dir
            )),
            Some(a) if !a.is_dir() => p.push(format!(
                "checkpoint.dir: cannot create `{}`: `{}` is not a directory",
                s.checkpoint.dir,
                a.display()
            )),
            _ => {}
        }
        Some(dir)
    };

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (section, sink) in [("output", &s.output), ("dead_letter", &s.dead_letter)] {
        // An empty path is reported by the sink's own checks.
        if sink.kind != SinkKind::File || sink.path.is_empty() {
            continue;
        }
        let key = format!("{section}.path");
        let file = resolve(base, Path::new(&sink.path));
        match existing_ancestor(&file) {
            Some(a) if a == file && file.is_dir() => {
                p.push(format!("{key}: `{}` is a directory, not a file", sink.path))
            }
            Some(a) if a != file && !a.is_dir() => p.push(format!(
                "{key}: cannot create `{}`: `{}` is not a directory",
                sink.path,
                a.display()
            )),
            _ if sink.path.ends_with('/') => p.push(format!(
                "{key}: `{}` names a directory, not a file",
                sink.path
            )),
            _ => {}
        }
        if let Some(dir) = &checkpoint {
            if file == *dir {
                p.push(format!(
                    "{key}: `{}` is checkpoint.dir `{}`; a sink's file must be outside the checkpoint directory",
                    sink.path,
                    dir.display()
                ));
            } else if file.starts_with(dir) {
                p.push(format!(
                    "{key}: `{}` is inside checkpoint.dir `{}`; a sink's file must be outside the checkpoint directory",
                    sink.path,
                    dir.display()
                ));
            } else if dir.starts_with(&file) {
                p.push(format!(
                    "checkpoint.dir: `{}` is inside {key} `{}`",
                    s.checkpoint.dir,
                    file.display()
                ));
            }
        }
        files.push((key, file));
    }
    if let [(a, fa), (b, fb)] = files.as_slice()
        && same_file(fa, fb)
    {
        p.push(format!(
            "{a} and {b} are the same file `{}`: each file sink needs a file of its own \
             (on a restart one would cut away the other's records)",
            fa.display()
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults with the sinks and the checkpoint directory set as given.
    fn with(output: &str, dead: &str, checkpoint: &str) -> Settings {
        let mut s = Settings::defaults();
        s.output.path = output.into();
        s.dead_letter.path = dead.into();
        s.checkpoint.dir = checkpoint.into();
        s
    }

    #[test]
    fn two_file_sinks_on_one_file_are_refused_however_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let real = std::fs::canonicalize(base).unwrap().join("data/out.jsonl");
        let abs = real.display().to_string();
        for other in ["./data/out.jsonl", "data/../data/out.jsonl", abs.as_str()] {
            let p = file_problems(&with("data/out.jsonl", other, "ck"), base);
            assert_eq!(
                p,
                vec![format!(
                    "output.path and dead_letter.path are the same file `{abs}`: each file sink \
                     needs a file of its own (on a restart one would cut away the other's records)"
                )],
                "{other}"
            );
        }
        #[cfg(unix)]
        {
            std::fs::create_dir(base.join("data")).unwrap();
            std::os::unix::fs::symlink(&real, base.join("link.jsonl")).unwrap();
            let p = file_problems(&with("data/out.jsonl", "link.jsonl", "ck"), base);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains(&abs), "{p:?}");
        }
        // Different files, or a sink that is not a file: fine.
        assert!(file_problems(&with("data/out.jsonl", "data/dead.jsonl", "ck"), base).is_empty());
        let mut s = with("data/out.jsonl", "data/out.jsonl", "ck");
        s.dead_letter.kind = SinkKind::Stdout;
        assert!(file_problems(&s, base).is_empty());
    }

    #[test]
    fn a_sink_file_in_the_checkpoint_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let ck = std::fs::canonicalize(base).unwrap().join("data");
        let p = file_problems(&with("./data/out.jsonl", "dead.jsonl", "data/"), base);
        assert_eq!(
            p,
            vec![format!(
                "output.path: `./data/out.jsonl` is inside checkpoint.dir `{}`; a sink's file \
                 must be outside the checkpoint directory",
                ck.display()
            )]
        );
        let p = file_problems(&with("out.jsonl", "data", "./data"), base);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("dead_letter.path: `data` is checkpoint.dir"));
        // A sibling whose name starts like the directory is outside it.
        assert!(file_problems(&with("data2/out.jsonl", "dead.jsonl", "data"), base).is_empty());
    }

    #[test]
    fn the_checkpoint_dir_and_sink_files_must_be_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::write(base.join("plain"), "").unwrap();
        std::fs::create_dir(base.join("folder")).unwrap();
        let p = file_problems(&with("folder", "plain/dead.jsonl", "plain"), base);
        let plain = std::fs::canonicalize(base.join("plain")).unwrap();
        assert_eq!(
            p,
            vec![
                "checkpoint.dir: `plain` is not a directory".to_string(),
                "output.path: `folder` is a directory, not a file".to_string(),
                format!(
                    "dead_letter.path: cannot create `plain/dead.jsonl`: `{}` is not a directory",
                    plain.display()
                ),
                format!(
                    "dead_letter.path: `plain/dead.jsonl` is inside checkpoint.dir `{}`; a sink's \
                     file must be outside the checkpoint directory",
                    plain.display()
                ),
            ]
        );
        let p = file_problems(&with("out/", "dead.jsonl", ""), base);
        assert_eq!(
            p,
            vec![
                "checkpoint.dir: must not be empty".to_string(),
                "output.path: `out/` names a directory, not a file".to_string(),
            ]
        );
    }

    #[test]
    fn workers_are_capped() {
        let mut s = Settings::defaults();
        s.server.workers = MAX_WORKERS + 1;
        let p = validate(&s);
        assert!(
            p.contains(&"server.workers: must be at most 512 (0 = one per core), got 513".into()),
            "{p:?}"
        );
        s.server.workers = MAX_WORKERS;
        assert!(!validate(&s).iter().any(|p| p.starts_with("server.workers")));
    }
}
