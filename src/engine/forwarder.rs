//! The forwarder actor, one per remote node: ships batches of a partition's outbox to the
//! node that owns it (`POST /internal/v1/import`) and tells the ingress how it went. The
//! body is the journal's own frame encoding (length, CRC32C, record), so the receiver checks
//! every record's integrity for free and no second wire format exists.
//!
//! Each request names the source node (for the owner's resend watermark), the partition and
//! the epoch the sender believes the owner holds; an owner at another epoch refuses (409)
//! and the ingress re-routes once its view catches up. It names the body's format version
//! too (`durability::versions`): the oldest that holds the batch whole (version 1 unless a
//! record carries pipeline step marks, [`forward_body`]), so peers of an earlier release
//! keep taking batches during a rolling upgrade; a receiver that does not read it answers
//! 415, and the records stay here like after any other refusal (README "Upgrades").

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::outbox::{Sent, ShipResult};
use super::shared::Shared;
use crate::durability::codec::{self, Layout};
use crate::durability::versions::FORWARD_HEADER;
use crate::peer_api::{H_EPOCH, H_HANDOVER, H_IMPORTED_UPTO, H_INCARNATION, H_PARTITION, H_SOURCE};
use crate::record::Record;

/// What the receiver's answer means. Only a 200 lets the records go; anything but a 409
/// (another owner) keeps them here to be sent again — a 415 from a node that does not read
/// this batch's format version included.
fn answered(status: u16, taken_upto: u64, text: String) -> ShipResult {
    match status {
        200 => ShipResult::Taken,
        409 => ShipResult::NotOwner {
            why: text,
            taken_upto,
        },
        _ => ShipResult::Retry(format!("HTTP {status}: {text}")),
    }
}

/// A batch's body (its records as `Staged` journal frames) and its format version: that of
/// the oldest layout that holds every record whole ([`Layout::carrying`]).
pub fn forward_body(records: &[Arc<Record>]) -> (u32, Vec<u8>) {
    let layout = Layout::carrying(records.iter().map(|r| &**r));
    let mut body = Vec::with_capacity(records.iter().map(|r| r.text.len() + 96).sum());
    for r in records {
        codec::encode_staged_in(r, layout, &mut body);
    }
    (layout.version(), body)
}

/// A forwarder's answer for one shipped batch (to the ingress).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shipped {
    /// Where the batch went (echoed from [`Ship`]).
    pub sent: Sent,
    pub partition: u32,
    pub records: usize,
    pub result: ShipResult,
    /// The incarnation the answer came from (`x-sluice-incarnation` of the answer; none
    /// without an answer, or from a first incarnation).
    pub answered_by: Option<String>,
}

/// Ship one batch of a partition's outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ship {
    pub partition: u32,
    /// Where it goes and which range it is (echoed in [`Shipped`]).
    pub sent: Sent,
    pub epoch: u64,
    pub handover: bool,
    pub records: Vec<Arc<Record>>,
}

/// See module docs.
pub struct Forwarder {
    source: String,
    url: String,
    token: Option<String>,
    ingress: Recipient<Shipped>,
    shared: Arc<Shared>,
    client: awc::Client,
}

impl Forwarder {
    /// A forwarder from node `source` to the node at `base` (the advertised URL it was reached at).
    pub fn new(
        source: String,
        base: String,
        token: Option<String>,
        ingress: Recipient<Shipped>,
        shared: Arc<Shared>,
    ) -> Self {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .disable_redirects()
            .finish();
        Forwarder {
            source,
            url: format!("{}/internal/v1/import", base.trim_end_matches('/')),
            token,
            ingress,
            shared,
            client,
        }
    }
}

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<Ship> for Forwarder {
    type Result = ();

    fn handle(&mut self, msg: Ship, ctx: &mut Self::Context) {
        let (version, body) = forward_body(&msg.records);
        let mut req = self
            .client
            .post(&self.url)
            .insert_header(("content-type", "application/octet-stream"))
            .insert_header((H_SOURCE, self.source.as_str()))
            .insert_header((H_PARTITION, msg.partition.to_string()))
            .insert_header((H_EPOCH, msg.epoch.to_string()))
            .insert_header((H_HANDOVER, if msg.handover { "1" } else { "0" }))
            .insert_header((FORWARD_HEADER, version.to_string()));
        let incarnation = self.shared.ownership.incarnation();
        if !incarnation.is_empty() {
            req = req.insert_header((H_INCARNATION, incarnation));
        }
        if let Some(t) = &self.token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        let ingress = self.ingress.clone();
        let shared = self.shared.clone();
        let (partition, records, sent) = (msg.partition, msg.records.len(), msg.sent);
        let mut answered_by = None;
        let started = Instant::now();
        ctx.spawn(
            async move {
                let result = match req.send_body(body).await {
                    Ok(mut res) => {
                        let status = res.status().as_u16();
                        answered_by = Some(
                            res.headers()
                                .get(H_INCARNATION)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string(),
                        );
                        let taken_upto = res
                            .headers()
                            .get(H_IMPORTED_UPTO)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let text = res
                            .body()
                            .limit(4096)
                            .await
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        answered(status, taken_upto, text)
                    }
                    // Never connected: nothing was sent. (awc also reports a connection closed
                    // before the answer as `Connect(Disconnected)`: that one is in doubt.)
                    Err(
                        e @ awc::error::SendRequestError::Connect(
                            awc::error::ConnectError::Io(_)
                            | awc::error::ConnectError::Timeout
                            | awc::error::ConnectError::Resolver(_)
                            | awc::error::ConnectError::Unresolved,
                        ),
                    ) => ShipResult::Unreachable(e.to_string()),
                    Err(e) => ShipResult::InDoubt(e.to_string()),
                };
                if result == ShipResult::Taken {
                    shared
                        .metrics
                        .cluster_forward_duration
                        .observe(started.elapsed().as_secs_f64());
                }
                ingress.do_send(Shipped {
                    sent,
                    partition,
                    records,
                    result,
                    answered_by,
                });
            }
            .into_actor(self),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::versions::Format;
    use crate::record::{StepDone, StepMark};

    fn staged(seq: u64, steps: Vec<StepMark>) -> Arc<Record> {
        Arc::new(Record {
            partition: 1,
            seq,
            accepted_ms: 5,
            first_attempt_ms: 6,
            attempts: steps.iter().map(|m| m.attempts).sum(),
            splice: true,
            id: format!("r{seq}").into(),
            key: "\"k\"".into(),
            canonical: "k".into(),
            text: "{\"user_id\":\"k\"}".into(),
            decided: None,
            steps,
        })
    }

    #[test]
    fn a_batch_without_step_marks_goes_as_version_1_and_one_with_them_as_version_2() {
        let plain = vec![staged(0, Vec::new()), staged(1, Vec::new())];
        let (version, body) = forward_body(&plain);
        assert_eq!(version, 1, "every peer reads it");
        let mut v1 = Vec::new();
        for r in &plain {
            codec::encode_staged_in(r, Layout::V1, &mut v1);
        }
        assert_eq!(body, v1, "as b6dd6cc sent it");
        let marks = vec![
            StepMark {
                attempts: 1,
                done: Some(StepDone::Found("{\"a\":1}".into())),
            },
            StepMark {
                attempts: 2,
                done: None,
            },
        ];
        let mixed = vec![staged(0, Vec::new()), staged(1, marks)];
        let (version, body) = forward_body(&mixed);
        assert_eq!(version, Format::Forward.current());
        let layout = Format::Forward.layout("batch", version).unwrap();
        let (entries, err) = codec::decode_all(&body, layout);
        assert_eq!(err, None);
        let back: Vec<Record> = entries
            .into_iter()
            .map(|e| match e {
                codec::Entry::Staged(r) => r,
                e => panic!("not staged: {e:?}"),
            })
            .collect();
        assert_eq!(
            back,
            mixed.iter().map(|r| (**r).clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_refused_format_version_keeps_the_records_for_a_retry() {
        let detail =
            "the forwarded batch has format version 1; this sluice (9.0.0) reads version 2";
        assert_eq!(
            answered(415, 0, detail.into()),
            ShipResult::Retry(format!("HTTP 415: {detail}"))
        );
        assert_eq!(answered(200, 0, String::new()), ShipResult::Taken);
        assert_eq!(
            answered(409, 7, "other owner".into()),
            ShipResult::NotOwner {
                why: "other owner".into(),
                taken_upto: 7
            }
        );
        for status in [400, 401, 404, 413, 429, 500, 503] {
            assert!(matches!(
                answered(status, 0, String::new()),
                ShipResult::Retry(_)
            ));
        }
    }
}
