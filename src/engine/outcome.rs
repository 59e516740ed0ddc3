//! Terminal outcomes, where they go (output or dead letter) and the emitted envelope
//! (DESIGN.md §2, contract).

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use crate::pointer::Pointer;
use crate::settings::{OnMiss, OnTimeout, Settings};

/// The four terminal outcomes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Ok,
    Miss,
    Timeout,
    Failed,
}

impl OutcomeKind {
    /// All outcomes, in metric-label order.
    pub const ALL: [OutcomeKind; 4] = [
        OutcomeKind::Ok,
        OutcomeKind::Miss,
        OutcomeKind::Timeout,
        OutcomeKind::Failed,
    ];

    /// The name used in envelopes and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Miss => "miss",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Failed => "failed",
        }
    }

    /// Index into [`OutcomeKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A record's single terminal outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Which outcome.
    pub kind: OutcomeKind,
    /// The lookup result (`ok` only).
    pub enrichment: Option<Value>,
    /// Why the record did not succeed (`timeout`, `failed`).
    pub error: Option<String>,
}

impl Outcome {
    /// Found a row.
    pub fn ok(enrichment: Value) -> Self {
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
    into: Pointer,
    on_miss: OnMiss,
    on_timeout: OnTimeout,
}

/// Everything an envelope says about one record, borrowed from where it lives.
pub struct EnvelopeParts<'a> {
    pub id: &'a str,
    pub partition: u32,
    pub seq: u64,
    pub key: &'a Value,
    pub attempts: u32,
    pub latency_ms: f64,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    partition: u32,
    seq: u64,
    key: &'a Value,
    outcome: &'static str,
    attempts: u32,
    latency_ms: f64,
    record: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl OutcomeRules {
    /// Compile from validated settings.
    pub fn from_settings(s: &Settings) -> Result<Self, crate::pointer::PointerError> {
        Ok(OutcomeRules {
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

    /// Merge the outcome into the record: the result on `ok`, `null` on `miss`; a record
    /// that timed out or failed is left as it came.
    pub fn merge(&self, record: &mut Value, o: &mut Outcome) {
        let value = match o.kind {
            OutcomeKind::Ok => o.enrichment.take().unwrap_or(Value::Null),
            OutcomeKind::Miss => Value::Null,
            OutcomeKind::Timeout | OutcomeKind::Failed => return,
        };
        // Checked at ingest (`RecordRules::admit`), so this cannot fail; if it ever did the
        // record would still be emitted, un-enriched, rather than lost.
        let _ = self.into.set(record, value);
    }

    /// Append the envelope as one NDJSON line to `buf`.
    pub fn write_line(
        &self,
        buf: &mut Vec<u8>,
        parts: &EnvelopeParts<'_>,
        kind: OutcomeKind,
        record: &Value,
        error: Option<&str>,
    ) {
        let env = Envelope {
            id: parts.id,
            partition: parts.partition,
            seq: parts.seq,
            key: parts.key,
            outcome: kind.as_str(),
            attempts: parts.attempts,
            latency_ms: parts.latency_ms,
            record,
            error,
        };
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &env);
        let _ = buf.write_all(b"\n");
    }

    /// The envelope as a JSON value (for `/v1/enrich` responses).
    pub fn to_value(
        &self,
        parts: &EnvelopeParts<'_>,
        kind: OutcomeKind,
        record: &Value,
        error: Option<&str>,
    ) -> Value {
        let env = Envelope {
            id: parts.id,
            partition: parts.partition,
            seq: parts.seq,
            key: parts.key,
            outcome: kind.as_str(),
            attempts: parts.attempts,
            latency_ms: parts.latency_ms,
            record,
            error,
        };
        serde_json::to_value(&env).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_matches_the_contract() {
        let rules = OutcomeRules::from_settings(&Settings::defaults()).unwrap();
        let mut record = json!({"id": "r-17", "user_id": "u1"});
        let mut o = Outcome::ok(json!({"name": "Ada"}));
        rules.merge(&mut record, &mut o);
        let key = json!("u1");
        let parts = EnvelopeParts {
            id: "r-17",
            partition: 3,
            seq: 42,
            key: &key,
            attempts: 1,
            latency_ms: 12.5,
        };
        let mut buf = Vec::new();
        rules.write_line(&mut buf, &parts, o.kind, &record, None);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"id\":\"r-17\",\"partition\":3,\"seq\":42,\"key\":\"u1\",\"outcome\":\"ok\",\"attempts\":1,\
             \"latency_ms\":12.5,\"record\":{\"id\":\"r-17\",\"user_id\":\"u1\",\"enrichment\":{\"name\":\"Ada\"}}}\n"
        );
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

    #[test]
    fn miss_sets_null_and_failures_leave_the_record() {
        let rules = OutcomeRules::from_settings(&Settings::defaults()).unwrap();
        let mut r = json!({"user_id": "u"});
        rules.merge(&mut r, &mut Outcome::miss());
        assert_eq!(r, json!({"user_id": "u", "enrichment": null}));
        let mut r = json!({"user_id": "u"});
        rules.merge(&mut r, &mut Outcome::failed("x".into()));
        assert_eq!(r, json!({"user_id": "u"}));
    }
}
