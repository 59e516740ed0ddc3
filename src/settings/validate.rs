//! Value checks that types alone cannot express: ranges, pointers, readable files.

use super::{Backend, Settings};
use crate::pointer::Pointer;

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
    for (key, value) in [
        ("pipeline.key", &s.pipeline.key),
        ("pipeline.id", &s.pipeline.id),
        ("lookup.into", &s.lookup.into),
    ] {
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
            need(
                [
                    "ANY",
                    "ONE",
                    "TWO",
                    "THREE",
                    "QUORUM",
                    "ALL",
                    "LOCAL_QUORUM",
                    "EACH_QUORUM",
                    "LOCAL_ONE",
                ]
                .contains(&c.consistency.to_ascii_uppercase().as_str()),
                format!("lookup.cql.consistency: unknown level `{}`", c.consistency),
            );
        }
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
    p
}
