//! The pipeline the settings describe, as the pure step graph (README "Pipelines"): the
//! `[lookup.steps.*]` in name order, or the single-lookup form as one step named `lookup`.

use super::{OnMiss, Settings, Step, StepBackend, StepOnMiss};
use crate::steps::{Graph, GraphError, MissRule, StepSpec};

/// The name of the one step of the single-lookup form.
pub const SINGLE_STEP: &str = "lookup";

/// The keys (and sections: everything below them) of the single-lookup form, which
/// `[lookup.steps.*]` replaces: set together with steps they are refused. `[lookup.cql]`
/// stays, as the connection the cql steps share, without its statement.
pub const SINGLE_LOOKUP_KEYS: [&str; 8] = [
    "lookup.backend",
    "lookup.into",
    "lookup.on_miss",
    "lookup.attempt_timeout_ms",
    "lookup.memory",
    "lookup.cache",
    "lookup.cql.query",
    "lookup.cql.binds",
];

/// Whether `key` (dotted) is one of [`SINGLE_LOOKUP_KEYS`] or lies below one.
pub fn is_single_lookup_key(key: &str) -> bool {
    SINGLE_LOOKUP_KEYS.iter().any(|k| {
        key.strip_prefix(k)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// A valid step name: `[a-z0-9_]+`.
pub fn valid_step_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether step key `key` is read by `backend`.
pub fn step_key_used(backend: StepBackend, key: &str) -> bool {
    Step::COMMON_KEYS.contains(&key) || backend.keys().contains(&key)
}

/// Remove from a rendered configuration (with steps) the single-lookup keys and each
/// step's keys of other backends.
pub(super) fn drop_unused_keys(rendered: &mut serde_json::Value) {
    let Some(lookup) = rendered.get_mut("lookup").and_then(|l| l.as_object_mut()) else {
        return;
    };
    for key in SINGLE_LOOKUP_KEYS {
        let path: Vec<&str> = key.split('.').skip(1).collect();
        match path.as_slice() {
            [leaf] => {
                lookup.shift_remove(*leaf);
            }
            [section, leaf] => {
                if let Some(t) = lookup.get_mut(*section).and_then(|t| t.as_object_mut()) {
                    t.shift_remove(*leaf);
                }
            }
            _ => {}
        }
    }
    if let Some(steps) = lookup.get_mut("steps").and_then(|s| s.as_object_mut()) {
        for step in steps.values_mut() {
            let Some(step) = step.as_object_mut() else {
                continue;
            };
            let backend = step
                .get("backend")
                .and_then(|b| b.as_str())
                .and_then(StepBackend::from_name);
            if let Some(backend) = backend {
                step.retain(|k, _| step_key_used(backend, k));
            }
        }
    }
}
impl Settings {
    /// Whether `[lookup.steps.*]` is used (else the single-lookup form).
    pub fn has_steps(&self) -> bool {
        !self.lookup.steps.is_empty()
    }

    /// The step graph: indices follow [`Settings::step_names`].
    pub fn step_graph(&self) -> Result<Graph, Vec<GraphError>> {
        if !self.has_steps() {
            return Graph::compile(&[StepSpec {
                name: SINGLE_STEP,
                binds: &[],
                after: &[],
                into: &self.lookup.into,
                on_miss: match self.lookup.on_miss {
                    OnMiss::Emit => MissRule::Emit,
                    OnMiss::DeadLetter => MissRule::DeadLetter,
                },
            }]);
        }
        let specs: Vec<StepSpec<'_>> = self
            .lookup
            .steps
            .iter()
            .map(|(name, s)| StepSpec {
                name,
                binds: &s.binds,
                after: &s.after,
                into: &s.into,
                on_miss: match s.on_miss {
                    StepOnMiss::Emit => MissRule::Emit,
                    StepOnMiss::DeadLetter => MissRule::DeadLetter,
                    StepOnMiss::SkipDependents => MissRule::SkipDependents,
                },
            })
            .collect();
        Graph::compile(&specs)
    }

    /// The step names in graph order.
    pub fn step_names(&self) -> Vec<String> {
        if self.has_steps() {
            self.lookup.steps.keys().cloned().collect()
        } else {
            vec![SINGLE_STEP.to_string()]
        }
    }
}
