//! The API's typed answers — what the handlers build — and their OpenAPI schemas. The
//! document at `GET /openapi.json` (see `openapi.rs`) is generated from these types and from
//! the handlers' `#[utoipa::path]` attributes, so it cannot drift from what is served.
//!
//! Answers that carry JSON texts exactly as they were sent or rendered (ids, envelopes) keep
//! them as text and write their body directly ([`RecordsAccepted::into_body`]): ingest is the
//! hot path and these texts are valid JSON already.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, schema::AdditionalProperties};
use utoipa::{PartialSchema, ToSchema};

use crate::durability::journal::CheckpointInfo;

/// A JSON schema of one of `types` (a doc-only helper for ids and keys).
fn one_of(description: &str, types: &[(Type, Option<usize>)]) -> RefOr<Schema> {
    let mut b = OneOfBuilder::new().description(Some(description));
    for (t, min_len) in types {
        b = b.item(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(t.clone()))
                .min_length(*min_len),
        );
    }
    b.into()
}

/// A record's id as the client sent it (a non-empty string or a number, kept exactly), or a
/// generated string `sluice:p{partition}-{seq}`.
pub struct RecordId;

impl PartialSchema for RecordId {
    fn schema() -> RefOr<Schema> {
        one_of(
            "The record's id exactly as sent (a non-empty string not starting with `sluice:`, \
             or a number with every digit kept), or a generated `sluice:p{partition}-{seq}`.",
            &[(Type::String, Some(1)), (Type::Number, None)],
        )
    }
}
impl ToSchema for RecordId {}

/// A record's lookup key (`pipeline.key`): a string, number or boolean.
pub struct RecordKey;

impl PartialSchema for RecordKey {
    fn schema() -> RefOr<Schema> {
        one_of(
            "The record's key (the member at `pipeline.key`), as sent.",
            &[
                (Type::String, None),
                (Type::Number, None),
                (Type::Boolean, None),
            ],
        )
    }
}
impl ToSchema for RecordKey {}

/// One input record: a JSON object with the key at `pipeline.key`, optionally an id at
/// `pipeline.id`. The served document names this deployment's pointers (`openapi.rs`).
pub struct Record;

impl PartialSchema for Record {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "A JSON object. It must hold the lookup key at `pipeline.key` (a string, number \
                 or boolean); the id at `pipeline.id` is optional (generated when absent); the \
                 result is merged at `lookup.into`, whose parents must be objects.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}
impl ToSchema for Record {}

/// `202` of `POST /v1/records`: every record was accepted, in request order.
#[derive(Debug, ToSchema)]
pub struct RecordsAccepted {
    /// How many records were accepted (all of the request's).
    pub accepted: usize,
    /// Their ids in request order, each its JSON text exactly as sent (or generated).
    #[schema(value_type = Vec<RecordId>)]
    pub ids: Vec<std::sync::Arc<str>>,
}

impl RecordsAccepted {
    /// The JSON body, with each id written as its JSON text.
    pub fn into_body(self) -> Vec<u8> {
        let len: usize = self.ids.iter().map(|i| i.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 32);
        body.extend_from_slice(b"{\"accepted\":");
        body.extend_from_slice(self.accepted.to_string().as_bytes());
        body.extend_from_slice(b",\"ids\":[");
        for (i, id) in self.ids.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(id.as_bytes());
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// `200` of `POST /v1/enrich`: one envelope per record, in request order.
#[derive(Debug, ToSchema)]
pub struct EnrichResults {
    /// The envelopes as rendered (JSON objects), in request order.
    #[schema(value_type = Vec<Envelope>)]
    pub results: Vec<Vec<u8>>,
}

impl EnrichResults {
    /// The JSON body, each envelope written as rendered.
    pub fn into_body(self) -> Vec<u8> {
        let len: usize = self.results.iter().map(|r| r.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 16);
        body.extend_from_slice(b"{\"results\":[");
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// How a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The row was found and merged at `lookup.into`.
    Ok,
    /// No row: `null` at `lookup.into`.
    Miss,
    /// The deadline passed, or the last attempt timed out; the record as it came.
    Timeout,
    /// A non-retryable error, or retries exhausted; the record as it came.
    Failed,
}

/// How one pipeline step ended for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Found its row.
    Ok,
    /// Looked up, no row.
    Miss,
    /// Not looked up: a bind read `null`, a step it depends on missed with
    /// `skip_dependents`, or the record ended before it.
    Skipped,
    /// Its last attempt timed out, or the record's deadline passed while it ran.
    Timeout,
    /// Failed for good.
    Failed,
}

/// A pipeline step's part of an envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct StepReport {
    pub outcome: StepOutcome,
    /// Attempts this step made.
    pub attempts: u32,
}

/// What is emitted for each record: one JSON object per line in the sinks, one per record in
/// a `/v1/enrich` answer. Rendered directly by the engine; this type describes it and checks
/// renders in tests.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct Envelope {
    /// The record's id (see `RecordId`).
    #[schema(value_type = RecordId)]
    pub id: serde_json::Value,
    /// The partition the record was routed to (a hash of its key).
    pub partition: u32,
    /// Its sequence number in the partition, assigned at acceptance.
    pub seq: u64,
    /// Cluster mode only: the node that emitted it.
    #[schema(required = false)]
    pub node: Option<String>,
    /// Cluster mode only: that node's ownership epoch of the partition.
    #[schema(required = false)]
    pub epoch: Option<u64>,
    /// The record's key, as sent.
    #[schema(value_type = RecordKey)]
    pub key: serde_json::Value,
    /// How the record ended.
    pub outcome: Outcome,
    /// Lookup attempts made (in a pipeline of several steps: summed over the steps).
    pub attempts: u32,
    /// Pipelines of several steps only: each step's outcome and attempts, by step name.
    #[schema(required = false)]
    pub steps: Option<std::collections::BTreeMap<String, StepReport>>,
    /// From acceptance to the outcome, in milliseconds.
    pub latency_ms: f64,
    /// The record, with the lookup's row merged at `lookup.into` (`ok`) or `null` there
    /// (`miss`) — with steps, every step's row at its `into` (`null` for a step that missed
    /// or was skipped); unchanged on `timeout` and `failed`.
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
    /// Dead letters only: why the record went there.
    #[schema(required = false)]
    pub error: Option<String>,
}

/// One partition in `GET /v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionStatus {
    /// Partition number.
    pub id: usize,
    /// Lookups running now.
    pub in_flight: u64,
    /// Records waiting behind them.
    pub backlog: u64,
    /// Records accepted since the start.
    pub accepted: u64,
    /// Records delivered to the output or dead letter since the start.
    pub emitted: u64,
}

/// A durable snapshot of the pending records.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoint {
    /// When it was taken (RFC 3339, UTC).
    pub at: String,
    /// Pending records it holds.
    pub records: u64,
    /// Its size on disk.
    pub bytes: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

impl From<&CheckpointInfo> for Checkpoint {
    fn from(c: &CheckpointInfo) -> Checkpoint {
        Checkpoint {
            at: c.at.clone(),
            records: c.records,
            bytes: c.bytes,
            duration_ms: c.duration_ms,
        }
    }
}

/// Processing mode (`pipeline.mode`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Strictly by `seq` within a partition.
    Ordered,
    /// As completed.
    Unordered,
    /// Equal keys in acceptance order.
    KeyOrdered,
}

impl From<crate::settings::Mode> for Mode {
    fn from(m: crate::settings::Mode) -> Mode {
        match m {
            crate::settings::Mode::Ordered => Mode::Ordered,
            crate::settings::Mode::Unordered => Mode::Unordered,
            crate::settings::Mode::KeyOrdered => Mode::KeyOrdered,
        }
    }
}

/// `200` of `GET /v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// Whether it takes records now.
    pub ready: bool,
    /// `pipeline.mode`.
    pub mode: Mode,
    /// Each partition served here.
    pub partitions: Vec<PartitionStatus>,
    /// Records accepted and not yet delivered.
    pub pending: u64,
    /// Cluster: records held here for other nodes' partitions.
    pub staged: u64,
    /// The newest checkpoint, if one was taken since the start.
    pub last_checkpoint: Option<Checkpoint>,
    /// What is wrong with the sinks (empty: healthy).
    pub sink_problems: Vec<String>,
}

/// `200` of `GET /healthz`: the process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `200` of `GET /readyz`: the node takes records.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `true` (not ready is a 503 problem saying why).
    pub ready: bool,
}

/// `200` of `POST /internal/v1/import`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReceipt {
    /// Records in the body.
    pub received: usize,
    /// Records taken now (the others this node held already).
    pub accepted: usize,
}

/// An RFC 9457 problem: every answer that is not a success.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:sluice:problem:<slug>`; one slug per kind of problem (see the responses).
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:sluice:problem:[a-z-]+$")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and what to do.
    pub detail: String,
    /// `422` only: each bad record's problems (at most 100 listed; the detail gives the total).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub errors: Option<Vec<crate::engine::admit::FieldError>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::outcome::{EnvelopeParts, Outcome as Ended, OutcomeRules};
    use crate::lookup::Row;
    use crate::settings::Settings;

    /// Every envelope the engine renders — standalone and clustered, each outcome, with and
    /// without `error` — is what [`Envelope`] (and so the document) describes.
    #[test]
    fn rendered_envelopes_are_what_the_document_describes() {
        let mut clustered = Settings::defaults();
        clustered.cluster.enabled = true;
        for settings in [Settings::defaults(), clustered] {
            let rules = OutcomeRules::from_settings(&settings).unwrap();
            let parts = EnvelopeParts {
                id: "18446744073709551617",
                partition: 3,
                seq: 42,
                epoch: 7,
                key: "true",
                attempts: 2,
                latency_ms: 1.5,
                record: r#"{"user_id":true}"#,
                splice: true,
                steps: None,
            };
            let ended = [
                (Ended::ok(Row::from(r#"{"name":"Ada"}"#)), Outcome::Ok),
                (Ended::miss(), Outcome::Miss),
                (Ended::timeout("deadline".into()), Outcome::Timeout),
                (Ended::failed("refused".into()), Outcome::Failed),
            ];
            for (o, kind) in ended {
                for error in [None, Some("why")] {
                    let mut buf = Vec::new();
                    rules.write_envelope(&mut buf, &parts, &o, error);
                    let e: Envelope = serde_json::from_slice(&buf)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buf)));
                    assert_eq!(e.outcome, kind);
                    assert_eq!(e.node.is_some(), settings.cluster.enabled);
                    assert_eq!(e.error.as_deref(), error);
                    assert!(e.id.is_number() && e.key.is_boolean() && e.record.is_object());
                    assert_eq!((e.partition, e.seq, e.attempts), (3, 42, 2));
                    assert!(e.latency_ms > 0.0);
                }
            }
        }
    }

    #[test]
    fn ids_and_envelopes_are_written_as_their_json_texts() {
        let body = RecordsAccepted {
            accepted: 3,
            ids: vec![
                "\"a\"".into(),
                "18446744073709551617".into(),
                "\"sluice:p0-1\"".into(),
            ],
        }
        .into_body();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"accepted":3,"ids":["a",18446744073709551617,"sluice:p0-1"]}"#
        );
        let body = EnrichResults {
            results: vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()],
        }
        .into_body();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"results": [{"a": 1}, {}]})
        );
        let empty = EnrichResults { results: vec![] }.into_body();
        assert_eq!(empty, b"{\"results\":[]}");
    }
}
