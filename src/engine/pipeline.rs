//! The configured pipeline as the partitions run it: the step graph, one backend per step,
//! and what depends on the form (README "Pipelines"). The single-lookup form is a
//! pipeline of one step named `lookup` whose envelopes and messages stay as they always
//! were (no `steps` member, no step names in errors, record-level journal entries).

use std::sync::Arc;
use std::time::Duration;

use crate::json::raw;
use crate::lookup::Lookup;
use crate::record::Record;
use crate::settings::Settings;
use crate::steps::{Graph, Progress, Status};

/// The steps and their backends.
pub struct Pipeline {
    graph: Graph,
    lookups: Vec<Arc<dyn Lookup>>,
    attempt_timeouts: Vec<Duration>,
    /// `[lookup.steps.*]` (else the single-lookup form).
    steps_form: bool,
    /// Per step: its `into`'s one member name as a JSON string text, when `into` names a
    /// top-level member (results are then appended to the record in one pass).
    top_keys: Option<Vec<String>>,
    /// Per step: its name as a JSON string text (the envelope's `steps` member).
    names_json: Vec<String>,
}

/// Why the pipeline cannot be assembled.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Graph(Vec<crate::steps::GraphError>),
    #[error("{steps} steps but {lookups} lookup backends")]
    Backends { steps: usize, lookups: usize },
}

impl Pipeline {
    /// Assemble from validated settings and one backend per step (in `step_names()` order).
    pub fn new(settings: &Settings, lookups: Vec<Arc<dyn Lookup>>) -> Result<Self, PipelineError> {
        let graph = settings.step_graph().map_err(PipelineError::Graph)?;
        if graph.len() != lookups.len() {
            return Err(PipelineError::Backends {
                steps: graph.len(),
                lookups: lookups.len(),
            });
        }
        let attempt_timeouts = if settings.has_steps() {
            settings
                .lookup
                .steps
                .values()
                .map(|s| Duration::from_millis(s.attempt_timeout_ms))
                .collect()
        } else {
            vec![Duration::from_millis(settings.lookup.attempt_timeout_ms)]
        };
        let top_keys = (0..graph.len())
            .map(|i| match graph.into_pointer(i).tokens() {
                [name] => serde_json::to_string(name).ok(),
                _ => None,
            })
            .collect();
        let names_json = (0..graph.len())
            .map(|i| serde_json::to_string(graph.name(i)).unwrap_or_default())
            .collect();
        Ok(Pipeline {
            graph,
            lookups,
            attempt_timeouts,
            steps_form: settings.has_steps(),
            top_keys,
            names_json,
        })
    }

    /// The step graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Step `i`'s backend.
    pub fn lookup(&self, i: usize) -> &Arc<dyn Lookup> {
        &self.lookups[i]
    }

    /// Every step's backend, by step index.
    pub fn lookups(&self) -> &[Arc<dyn Lookup>] {
        &self.lookups
    }

    /// How long one attempt of step `i` may take.
    pub fn attempt_timeout(&self, i: usize) -> Duration {
        self.attempt_timeouts[i]
    }

    /// Whether this is the `[lookup.steps.*]` form (envelopes carry `steps`).
    pub fn steps_form(&self) -> bool {
        self.steps_form
    }

    /// What a message about step `i` starts with: `step NAME: ` (nothing in the
    /// single-lookup form, whose messages stay as they were).
    pub fn label(&self, i: usize) -> String {
        if self.steps_form {
            format!("step {}: ", self.graph.name(i))
        } else {
            String::new()
        }
    }

    /// A record's progress as it enters the in-flight queue: fresh, or resumed from what
    /// the journal kept.
    pub fn progress_of(&self, rec: &Record) -> Progress {
        if self.steps_form {
            Progress::restore(&self.graph, &rec.steps)
        } else {
            let mut p = Progress::new(&self.graph);
            p.set_attempts(0, rec.attempts);
            p
        }
    }

    /// The record's text with the results found so far merged at their steps' `into`
    /// (what a step reading earlier results binds against). `None` when step `i` reads
    /// nothing but the record.
    pub fn view_for(&self, i: usize, text: &str, progress: &Progress) -> Option<String> {
        if !self.graph.reads_results(i) {
            return None;
        }
        Some(self.merged(text, progress, false))
    }

    /// Whether a bind of step `i` that reads an earlier result finds `null` or nothing
    /// in `view` (then the step is skipped).
    pub fn reads_null(&self, i: usize, view: &str) -> bool {
        self.graph
            .binds(i)
            .iter()
            .zip(self.graph.bind_sources(i))
            .filter(|(_, src)| src.is_some())
            .any(|(b, _)| {
                raw::get(view, b.tokens())
                    .map(str::trim)
                    .is_none_or(|v| v == "null")
            })
    }

    /// Step `i`'s name as a JSON string text.
    pub fn name_json(&self, i: usize) -> &str {
        &self.names_json[i]
    }

    /// Write `text` with every step's result at its `into` (a found row, else `null`).
    /// `splice`: admission found every `into` a top-level member the record does not
    /// have, so the results are appended in one pass; otherwise they are merged one by one.
    pub fn write_merged(&self, out: &mut Vec<u8>, text: &str, progress: &Progress, splice: bool) {
        if splice
            && let Some(keys) = &self.top_keys
            && progress.slots().len() == keys.len()
        {
            let members = keys.iter().zip(progress.slots()).map(|(k, slot)| {
                let value = match &slot.status {
                    Status::Found(row) => row.as_ref(),
                    _ => "null",
                };
                (k.as_str(), value)
            });
            if raw::append_members(out, text, members) {
                return;
            }
        }
        out.extend_from_slice(self.merged(text, progress, true).as_bytes());
    }

    /// `text` with every step's result merged at its `into`: a found row, or `null` for a
    /// step that missed or was skipped (and, with `nulls_for_all`, for any other step).
    pub fn merged(&self, text: &str, progress: &Progress, nulls_for_all: bool) -> String {
        let mut cur = text.to_string();
        for (i, slot) in progress.slots().iter().enumerate() {
            let value = match &slot.status {
                Status::Found(row) => row.as_ref(),
                Status::Missed | Status::Skipped => "null",
                _ if nulls_for_all => "null",
                _ => continue,
            };
            let mut out = Vec::with_capacity(cur.len() + value.len() + 16);
            raw::write_merged(&mut out, &cur, self.graph.into_pointer(i), false, value);
            cur = String::from_utf8(out).unwrap_or(cur);
        }
        cur
    }
}
