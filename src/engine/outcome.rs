//! Terminal outcomes, where they go (output or dead letter) and the emitted envelope
//! (README "The envelope").

use super::pipeline::Pipeline;
pub use crate::envelope::OutcomeKind;
use crate::json::raw;
use crate::lookup::Row;
use crate::pointer::Pointer;
use crate::settings::{OnTimeout, Settings};
use crate::steps::{Progress, Status};

/// A record's single terminal outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Which outcome.
    pub kind: OutcomeKind,
    /// The lookup result (`ok` only).
    pub enrichment: Option<Row>,
    /// Why the record did not succeed (`timeout`, `failed`).
    pub error: Option<String>,
}

impl Outcome {
    /// Found a row.
    pub fn ok(enrichment: Row) -> Self {
        Outcome {
            kind: OutcomeKind::Ok,
            enrichment: Some(enrichment),
            error: None,
        }
    }

    /// No row.
    pub fn miss() -> Self {
        Outcome {
            kind: OutcomeKind::Miss,
            enrichment: None,
            error: None,
        }
    }

    /// Deadline passed or the last attempt timed out.
    pub fn timeout(error: String) -> Self {
        Outcome {
            kind: OutcomeKind::Timeout,
            enrichment: None,
            error: Some(error),
        }
    }

    /// The lookup failed for good.
    pub fn failed(error: String) -> Self {
        Outcome {
            kind: OutcomeKind::Failed,
            enrichment: None,
            error: Some(error),
        }
    }
}

/// Which sink a terminal record is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Output,
    DeadLetter,
}

/// How outcomes are shaped and routed: `lookup.into`, `lookup.on_miss`, `pipeline.on_timeout`.
#[derive(Debug, Clone)]
pub struct OutcomeRules {
    /// Cluster mode: the node id envelopes name (with the epoch they were written under).
    node: Option<String>,
    into: Pointer,
    on_timeout: OnTimeout,
}

/// A pipeline record's steps, for the envelope's `steps` member and its merged results.
pub struct StepsPart<'a> {
    pub pipeline: &'a Pipeline,
    pub progress: &'a Progress,
}

/// Everything an envelope says about one record, borrowed from where it lives.
pub struct EnvelopeParts<'a> {
    /// The id's JSON text.
    pub id: &'a str,
    pub partition: u32,
    pub seq: u64,
    /// Ownership epoch the partition was written under (cluster mode).
    pub epoch: u64,
    /// The key's JSON text.
    pub key: &'a str,
    pub attempts: u32,
    pub latency_ms: f64,
    /// The record's JSON text.
    pub record: &'a str,
    /// The result can be appended as a new member (see `raw::write_merged`).
    pub splice: bool,
    /// `[lookup.steps.*]`: every step's outcome and result (else the single lookup's
    /// result is the outcome's `enrichment`).
    pub steps: Option<StepsPart<'a>>,
}

impl OutcomeRules {
    /// Compile from validated settings.
    pub fn from_settings(s: &Settings) -> Result<Self, crate::pointer::PointerError> {
        Ok(OutcomeRules {
            node: s.cluster.enabled.then(|| s.node_id()),
            into: Pointer::parse(&s.lookup.into)?,
            on_timeout: s.pipeline.on_timeout,
        })
    }

    /// Output or dead letter, and the `error` a dead letter carries.
    pub fn route(&self, o: &Outcome) -> (Route, Option<String>) {
        match o.kind {
            OutcomeKind::Ok => (Route::Output, None),
            // A miss that carries an error is one `on_miss = "dead_letter"` sends there.
            OutcomeKind::Miss => match &o.error {
                None => (Route::Output, None),
                Some(e) => (Route::DeadLetter, Some(e.clone())),
            },
            OutcomeKind::Timeout => match self.on_timeout {
                OnTimeout::PassThrough => (Route::Output, None),
                OnTimeout::DeadLetter => (Route::DeadLetter, o.error.clone()),
            },
            OutcomeKind::Failed => (Route::DeadLetter, o.error.clone()),
        }
    }

    /// Append the envelope (one JSON object, no newline) to `buf`: the record with the
    /// result merged at `lookup.into` on `ok`, `null` there on `miss`, unchanged otherwise.
    pub fn write_envelope(
        &self,
        buf: &mut Vec<u8>,
        p: &EnvelopeParts<'_>,
        o: &Outcome,
        error: Option<&str>,
    ) {
        // Writing plain data into a Vec cannot fail.
        // The id's JSON text, exactly as the client sent it (or as generated).
        buf.extend_from_slice(b"{\"id\":");
        buf.extend_from_slice(p.id.as_bytes());
        buf.extend_from_slice(b",\"partition\":");
        let _ = serde_json::to_writer(&mut *buf, &p.partition);
        buf.extend_from_slice(b",\"seq\":");
        let _ = serde_json::to_writer(&mut *buf, &p.seq);
        if let Some(node) = &self.node {
            buf.extend_from_slice(b",\"node\":");
            let _ = serde_json::to_writer(&mut *buf, node);
            buf.extend_from_slice(b",\"epoch\":");
            let _ = serde_json::to_writer(&mut *buf, &p.epoch);
        }
        buf.extend_from_slice(b",\"key\":");
        buf.extend_from_slice(p.key.as_bytes());
        buf.extend_from_slice(b",\"outcome\":\"");
        buf.extend_from_slice(o.kind.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"attempts\":");
        let _ = serde_json::to_writer(&mut *buf, &p.attempts);
        if let Some(steps) = &p.steps {
            write_steps(buf, steps, o.kind);
        }
        buf.extend_from_slice(b",\"latency_ms\":");
        let _ = serde_json::to_writer(&mut *buf, &p.latency_ms);
        buf.extend_from_slice(b",\"record\":");
        if let Some(steps) = &p.steps {
            match o.kind {
                OutcomeKind::Ok | OutcomeKind::Miss => {
                    steps
                        .pipeline
                        .write_merged(buf, p.record, steps.progress, p.splice)
                }
                OutcomeKind::Timeout | OutcomeKind::Failed => {
                    buf.extend_from_slice(p.record.as_bytes())
                }
            }
        } else {
            self.write_record(buf, p, o);
        }
        if let Some(e) = error {
            buf.extend_from_slice(b",\"error\":");
            let _ = serde_json::to_writer(&mut *buf, e);
        }
        buf.push(b'}');
    }

    /// The single lookup's record: its result merged at `lookup.into`.
    fn write_record(&self, buf: &mut Vec<u8>, p: &EnvelopeParts<'_>, o: &Outcome) {
        match o.kind {
            OutcomeKind::Ok => {
                let value = o.enrichment.as_deref().unwrap_or("null");
                raw::write_merged(buf, p.record, &self.into, p.splice, value);
            }
            OutcomeKind::Miss => raw::write_merged(buf, p.record, &self.into, p.splice, "null"),
            OutcomeKind::Timeout | OutcomeKind::Failed => {
                buf.extend_from_slice(p.record.as_bytes())
            }
        }
    }
}

/// `,"steps":{"name":{"outcome":"ok","attempts":1},...}`. A step still running when the
/// record's deadline passed is `timeout`; one the record did not get to is `skipped`.
fn write_steps(buf: &mut Vec<u8>, steps: &StepsPart<'_>, kind: OutcomeKind) {
    let graph = steps.pipeline.graph();
    buf.extend_from_slice(b",\"steps\":{");
    for i in 0..graph.len() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(steps.pipeline.name_json(i).as_bytes());
        let (name, attempts) = match steps.progress.slots().get(i) {
            Some(slot) => {
                let running = matches!(slot.status, Status::Running | Status::Backoff);
                let name = if running && kind == OutcomeKind::Timeout {
                    "timeout"
                } else {
                    slot.status.outcome_name()
                };
                (name, slot.attempts)
            }
            None => ("skipped", 0),
        };
        buf.extend_from_slice(b":{\"outcome\":\"");
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\",\"attempts\":");
        let _ = serde_json::to_writer(&mut *buf, &attempts);
        buf.push(b'}');
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(record: &str, o: &Outcome, error: Option<&str>) -> String {
        let rules = OutcomeRules::from_settings(&Settings::defaults()).unwrap();
        let parts = EnvelopeParts {
            id: "\"r-17\"",
            partition: 3,
            seq: 42,
            epoch: 0,
            key: "\"u1\"",
            attempts: 1,
            latency_ms: 12.5,
            record,
            splice: true,
            steps: None,
        };
        let mut buf = Vec::new();
        rules.write_envelope(&mut buf, &parts, o, error);
        String::from_utf8(buf).unwrap()
    }

    fn envelope(record: &str, o: &Outcome, error: Option<&str>) -> serde_json::Value {
        serde_json::from_str(&render(record, o, error)).unwrap()
    }

    #[test]
    fn envelope_matches_the_contract() {
        let o = Outcome::ok(Row::from(r#"{"name":"Ada"}"#));
        assert_eq!(
            render(r#"{"id":"r-17","user_id":"u1"}"#, &o, None),
            "{\"id\":\"r-17\",\"partition\":3,\"seq\":42,\"key\":\"u1\",\"outcome\":\"ok\",\"attempts\":1,\
             \"latency_ms\":12.5,\"record\":{\"id\":\"r-17\",\"user_id\":\"u1\",\"enrichment\":{\"name\":\"Ada\"}}}"
        );
    }

    #[test]
    fn miss_sets_null_failures_leave_the_record_and_errors_are_escaped() {
        let e = envelope(r#"{"user_id":"u"}"#, &Outcome::miss(), None);
        assert_eq!(e["record"], json!({"user_id": "u", "enrichment": null}));
        assert!(e.get("error").is_none());
        let e = envelope(
            r#"{"user_id":"u"}"#,
            &Outcome::failed("x".into()),
            Some("bad \"q\"\n"),
        );
        assert_eq!(e["record"], json!({"user_id": "u"}));
        assert_eq!(e["outcome"], "failed");
        assert_eq!(e["error"], "bad \"q\"\n");
    }

    #[test]
    fn routes_follow_the_settings() {
        let mut s = Settings::defaults();
        let rules = OutcomeRules::from_settings(&s).unwrap();
        assert_eq!(rules.route(&Outcome::miss()).0, Route::Output);
        assert_eq!(
            rules.route(&Outcome::timeout("t".into())).0,
            Route::DeadLetter
        );
        assert_eq!(
            rules.route(&Outcome::failed("f".into())),
            (Route::DeadLetter, Some("f".into()))
        );
        s.pipeline.on_timeout = OnTimeout::PassThrough;
        let rules = OutcomeRules::from_settings(&s).unwrap();
        let dead_miss = Outcome {
            error: Some("lookup found no row".into()),
            ..Outcome::miss()
        };
        assert_eq!(
            rules.route(&dead_miss),
            (Route::DeadLetter, Some("lookup found no row".into()))
        );
        assert_eq!(rules.route(&Outcome::timeout("t".into())).0, Route::Output);
    }

    /// A pipeline of three steps: `user` found, `account` (after user) missed, `geo`
    /// skipped; the record merges each at its `into`, `steps` lists all, `attempts` sums.
    #[test]
    fn pipeline_envelopes_list_every_step_and_merge_every_result() {
        use crate::settings::{Step, StepBackend};
        use crate::steps::{End, Progress};
        let mut s = Settings::defaults();
        let step = |into: &str, binds: &[&str]| -> Step {
            let mut t: Step = toml::from_str(&format!(
                "backend = \"memory\"\ninto = \"{into}\"\ntable = \"t\"\nkey_column = \"k\""
            ))
            .unwrap();
            t.binds = binds.iter().map(|b| b.to_string()).collect();
            t
        };
        s.lookup
            .steps
            .insert("user".into(), step("/user", &["/user_id"]));
        s.lookup
            .steps
            .insert("account".into(), step("/account", &["/user/account_id"]));
        s.lookup.steps.insert("geo".into(), step("/geo", &["/ip"]));
        assert!(
            s.lookup
                .steps
                .values()
                .all(|t| t.backend == StepBackend::Memory)
        );
        let table = |_: ()| -> std::sync::Arc<dyn crate::lookup::Lookup> {
            std::sync::Arc::new(
                crate::lookup::memory::MemoryTable::from_rows(
                    Default::default(),
                    &s.lookup.memory,
                    "t".into(),
                )
                .unwrap(),
            )
        };
        let lookups = vec![table(()), table(()), table(())];
        let pipeline = Pipeline::new(&s, lookups).unwrap();
        let g = pipeline.graph();
        let (account, geo, user) = (0, 1, 2);
        assert_eq!(
            (g.name(account), g.name(geo), g.name(user)),
            ("account", "geo", "user")
        );
        let mut p = Progress::new(g);
        p.begin(g, user).unwrap();
        p.back_off(user).unwrap();
        p.begin(g, user).unwrap();
        p.finish(g, user, End::Found(Row::from(r#"{"account_id":7}"#)))
            .unwrap();
        p.begin(g, account).unwrap();
        p.finish(g, account, End::Miss).unwrap();
        p.finish(g, geo, End::Skipped).unwrap();
        let rules = OutcomeRules::from_settings(&s).unwrap();
        let parts = EnvelopeParts {
            id: "\"r\"",
            partition: 0,
            seq: 1,
            epoch: 0,
            key: "\"u1\"",
            attempts: p.attempts(),
            latency_ms: 1.0,
            record: r#"{"id":"r","user_id":"u1"}"#,
            splice: false,
            steps: Some(StepsPart {
                pipeline: &pipeline,
                progress: &p,
            }),
        };
        let mut buf = Vec::new();
        rules.write_envelope(&mut buf, &parts, &Outcome::miss(), None);
        let e: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(e["attempts"], 3);
        assert_eq!(
            e["steps"],
            json!({"account": {"outcome": "miss", "attempts": 1},
                   "geo": {"outcome": "skipped", "attempts": 0},
                   "user": {"outcome": "ok", "attempts": 2}})
        );
        assert_eq!(
            e["record"],
            json!({"id": "r", "user_id": "u1", "account": null, "geo": null,
                   "user": {"account_id": 7}})
        );
        // A deadline that passed while a step ran: that step is `timeout`.
        let mut q = Progress::new(g);
        q.begin(g, user).unwrap();
        let parts = EnvelopeParts {
            steps: Some(StepsPart {
                pipeline: &pipeline,
                progress: &q,
            }),
            ..parts
        };
        let mut buf = Vec::new();
        rules.write_envelope(&mut buf, &parts, &Outcome::timeout("d".into()), Some("d"));
        let e: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(e["steps"]["user"]["outcome"], "timeout");
        assert_eq!(e["steps"]["geo"]["outcome"], "skipped");
        assert_eq!(e["record"], json!({"id": "r", "user_id": "u1"}));
    }
}
