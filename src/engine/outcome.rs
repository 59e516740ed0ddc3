//! Terminal outcomes, where they go (output or dead letter) and the emitted envelope
//! (README "The envelope").

pub use crate::envelope::OutcomeKind;
use crate::json::raw;
use crate::lookup::Row;
use crate::pointer::Pointer;
use crate::settings::{OnMiss, OnTimeout, Settings};

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
    on_miss: OnMiss,
    on_timeout: OnTimeout,
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
}

impl OutcomeRules {
    /// Compile from validated settings.
    pub fn from_settings(s: &Settings) -> Result<Self, crate::pointer::PointerError> {
        Ok(OutcomeRules {
            node: s.cluster.enabled.then(|| s.node_id()),
            into: Pointer::parse(&s.lookup.into)?,
            on_miss: s.lookup.on_miss,
            on_timeout: s.pipeline.on_timeout,
        })
    }

    /// Output or dead letter, and the `error` a dead letter carries.
    pub fn route(&self, o: &Outcome) -> (Route, Option<String>) {
        match o.kind {
            OutcomeKind::Ok => (Route::Output, None),
            OutcomeKind::Miss => match self.on_miss {
                OnMiss::Emit => (Route::Output, None),
                OnMiss::DeadLetter => (Route::DeadLetter, Some("lookup found no row".into())),
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
        buf.extend_from_slice(b",\"latency_ms\":");
        let _ = serde_json::to_writer(&mut *buf, &p.latency_ms);
        buf.extend_from_slice(b",\"record\":");
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
        if let Some(e) = error {
            buf.extend_from_slice(b",\"error\":");
            let _ = serde_json::to_writer(&mut *buf, e);
        }
        buf.push(b'}');
    }
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
        s.lookup.on_miss = OnMiss::DeadLetter;
        s.pipeline.on_timeout = OnTimeout::PassThrough;
        let rules = OutcomeRules::from_settings(&s).unwrap();
        assert_eq!(rules.route(&Outcome::miss()).0, Route::DeadLetter);
        assert_eq!(rules.route(&Outcome::timeout("t".into())).0, Route::Output);
    }
}
