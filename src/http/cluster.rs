//! The cluster's part of the API: `GET /v1/cluster`, the internal import route other nodes
//! forward records to, and `/v1/enrich` records sent on to their partitions' owners.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse};

use super::body::read_body;
use super::problem::ApiError;
use super::state::{AppState, Data, authorize, count_if_fenced, refusal};
use super::{api, responses};
use crate::cluster::controller::ClusterStatus;
use crate::durability::codec::{self, Entry, Layout};
use crate::durability::versions::{FORWARD_HEADER, Format};
use crate::engine::admit::Admitted;
use crate::engine::ingress::{Import, ImportRefused};
use crate::engine::outbox::Source;
use crate::engine::ownership::Route;
use crate::engine::{ImportError, reply};
use crate::peer_api::{H_EPOCH, H_FORWARDED, H_HANDOVER, H_INCARNATION, H_PARTITION, H_SOURCE};

/// `GET /v1/cluster`: members and partition owners as this node sees them.
#[utoipa::path(
    method(get, head),
    path = "/v1/cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "Members and partition owners as this node sees them.", body = ClusterStatus),
        (status = 404, response = responses::NotFound),
    ),
)]
pub async fn get_cluster(state: Data) -> Result<HttpResponse, ApiError> {
    let own = &state.engine.shared().ownership;
    if !own.is_clustered() {
        return Err(ApiError::NotFound(
            "this node runs standalone (cluster.enabled = false)".into(),
        ));
    }
    let (members, owners) = own.view();
    Ok(HttpResponse::Ok().json(ClusterStatus::new(own.node(), &members, &owners)))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("the {name} header is missing")))
}

fn number<T: std::str::FromStr>(req: &HttpRequest, name: &str) -> Result<T, ApiError> {
    header(req, name)?
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("the {name} header is not a number")))
}

/// `POST /internal/v1/import`: records of a partition this node owns (or will own, for a
/// handover), in the journal's frame encoding; answers once they are durable here.
#[utoipa::path(
    post,
    path = "/internal/v1/import",
    tag = "cluster",
    description = "Node to node: staged records of one partition, forwarded to its owner (or \
                   to the node taking it over). Not for clients.",
    params(
        ("x-sluice-source" = String, Header, description = "The sending node."),
        ("x-sluice-partition" = u32, Header, description = "The records' partition."),
        ("x-sluice-epoch" = u64, Header, description = "The owner's epoch the sender saw."),
        ("x-sluice-handover" = String, Header, description = "`1`: a handover to the next owner."),
        ("x-sluice-incarnation" = Option<String>, Header, nullable = false, description = "The sender's incarnation (absent: its first): a node started on an empty checkpoint.dir is a new incarnation of its id, whose batches are never taken for resends of its former life's."),
        ("x-sluice-format" = Option<u32>, Header, nullable = false, minimum = 1, maximum = 2, description = "The body's format version (absent: 1, as sent up to commit b6dd6cc); this build reads versions 1 and 2 (2: records with pipeline step marks) and answers 415 to any other."),
    ),
    request_body(description = "Staged records in the journal's frame encoding.", content_type = "application/octet-stream", content = Vec<u8>),
    responses(
        (status = 200, description = "The records are durable here.", body = api::ImportReceipt),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 408, response = responses::RequestTimeout),
        (status = 409, response = responses::NotOwner),
        (status = 413, response = responses::PayloadTooLarge),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 429, response = responses::Overloaded),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_import(
    req: HttpRequest,
    payload: actix_web::web::Payload,
    state: Data,
) -> HttpResponse {
    let mine = state.engine.shared().ownership.incarnation().to_string();
    let mut res = match import(req, payload, state).await {
        Ok(res) => res,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    // Every answer names the incarnation that gave it: a sender asking about a batch in
    // doubt must not take another incarnation's answer (a new volume at the same address).
    if !mine.is_empty()
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&mine)
    {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(H_INCARNATION),
            v,
        );
    }
    res
}

async fn import(
    req: HttpRequest,
    payload: actix_web::web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state.settings)?;
    // The request's own form first (400), whatever this node is: then 404 on a standalone
    // node and 503 before restore finished.
    let node = header(&req, H_SOURCE)?;
    let incarnation = req
        .headers()
        .get(H_INCARNATION)
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| ApiError::BadRequest(format!("the {H_INCARNATION} header is not text")))?
        .unwrap_or("");
    // Resend watermarks are kept per incarnation of the sender.
    let source = Source {
        node: node.to_string(),
        incarnation: incarnation.to_string(),
    };
    let partition: u32 = number(&req, H_PARTITION)?;
    let epoch: u64 = number(&req, H_EPOCH)?;
    let handover = header(&req, H_HANDOVER)? == "1";
    let layout = forward_format(&req)?;
    if !state.engine.shared().ownership.is_clustered() {
        return Err(ApiError::NotFound("this node runs standalone".into()));
    }
    // Until restore finished the resend watermarks are not known: taking records now
    // could take some twice.
    if !state
        .engine
        .shared()
        .ready
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err(ApiError::Unavailable("the node is not ready yet".into()));
    }
    // Batches are bounded by the sender; allow generously more than a client body.
    let limit = state.settings.server.max_body_bytes.saturating_mul(8);
    let body = read_body(&req, payload, limit).await?;
    let records = forwarded_records(&body, partition, layout)?;
    let n = records.len();
    let accepted = state
        .engine
        .import(Import {
            source,
            partition,
            epoch,
            handover,
            records,
        })
        .await
        .map_err(|e| match e {
            ImportError::Refused(ImportRefused::NotOwner(why, upto)) => {
                count_if_fenced(&state, n);
                ApiError::Conflict(why, upto)
            }
            ImportError::Refused(ImportRefused::Overloaded(o)) => ApiError::Overloaded {
                detail: o.to_string(),
                retry_after_secs: 1,
            },
            ImportError::Stopped => ApiError::Unavailable("the engine is stopping".into()),
            ImportError::Journal(e) => ApiError::Unavailable(e.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(api::ImportReceipt {
        received: n,
        accepted,
    }))
}

/// The forwarded batch's format version (`x-sluice-format`, absent: 1), refused (415, the
/// sender keeps the records and retries) unless this node reads it: a batch of a newer
/// peer is never decoded as if it were of this one's version. Its frames' layout.
fn forward_format(req: &HttpRequest) -> Result<Layout, ApiError> {
    let version = match req.headers().get(FORWARD_HEADER) {
        None => 1,
        Some(_) => number(req, FORWARD_HEADER)?,
    };
    Format::Forward
        .layout("the forwarded batch", version)
        .map_err(|e| ApiError::UnsupportedFormat(e.to_string()))
}

/// The records of a forwarded batch: `Staged` journal frames of `partition`, in `layout`
/// (version 2: with their step marks).
fn forwarded_records(
    body: &[u8],
    partition: u32,
    layout: Layout,
) -> Result<Vec<crate::record::Record>, ApiError> {
    let (entries, damage) = codec::decode_all(body, layout);
    if let Some((at, why)) = damage {
        return Err(ApiError::BadRequest(format!(
            "frame at byte {at} is damaged: {why}"
        )));
    }
    let mut records = Vec::with_capacity(entries.len());
    for e in entries {
        match e {
            Entry::Staged(r) if r.partition == partition => records.push(r),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "the body must hold staged records of partition {partition} only"
                )));
            }
        }
    }
    Ok(records)
}

/// `/v1/enrich` in a cluster: records of partitions served here go through the local
/// engine, the others to their owners' `/v1/enrich`; the answer keeps request order.
/// Nothing is journaled, so a failure anywhere simply fails the request.
pub async fn enrich_across(
    req: &HttpRequest,
    state: &AppState,
    records: Vec<Admitted>,
) -> Result<Vec<reply::Envelope>, ApiError> {
    let own = state.engine.shared().ownership.clone();
    let forwarded = req.headers().contains_key(H_FORWARDED);
    let mut local = Vec::new();
    let mut local_at = Vec::new();
    let mut remote: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let total = records.len();
    for (i, r) in records.into_iter().enumerate() {
        match own.route(r.partition) {
            Route::Local(_) => {
                local_at.push(i);
                local.push(r);
            }
            Route::Remote { advertise, .. } if !forwarded => {
                let (idx, body) = remote.entry(advertise).or_default();
                idx.push(i);
                body.extend_from_slice(r.text.as_bytes());
                body.push(b'\n');
            }
            Route::Remote { node, .. } => {
                return Err(ApiError::Unavailable(format!(
                    "partition {} is served by {node}, not here",
                    r.partition
                )));
            }
            Route::Unavailable(why) => {
                count_if_fenced(state, total);
                return Err(ApiError::Unavailable(format!(
                    "{why}; nothing was enriched, retry shortly"
                )));
            }
        }
    }
    let mut out: Vec<Option<reply::Envelope>> = vec![None; total];
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .finish();
    let token = state.settings.server.auth_tokens.first().cloned();
    let calls = remote.into_iter().map(|(base, (idx, body))| {
        let mut r = client
            .post(format!("{}/v1/enrich", base.trim_end_matches('/')))
            .insert_header(("content-type", "application/x-ndjson"))
            .insert_header((H_FORWARDED, "1"));
        if let Some(t) = &token {
            r = r.insert_header(("authorization", format!("Bearer {t}")));
        }
        async move {
            let mut res = r
                .send_body(body)
                .await
                .map_err(|e| ApiError::Unavailable(format!("owner at {base} unreachable: {e}")))?;
            let status = res.status();
            let bytes = res
                .body()
                .limit(usize::MAX >> 1)
                .await
                .map_err(|e| ApiError::Unavailable(format!("owner at {base}: {e}")))?;
            if !status.is_success() {
                return Err(ApiError::Unavailable(format!(
                    "owner at {base} answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )));
            }
            #[derive(serde::Deserialize)]
            struct Results<'a> {
                #[serde(borrow)]
                results: Vec<&'a serde_json::value::RawValue>,
            }
            let parsed: Results = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Unavailable(format!("owner at {base}: {e}")))?;
            Ok::<_, ApiError>(
                idx.into_iter()
                    .zip(
                        parsed
                            .results
                            .into_iter()
                            .map(|r| r.get().as_bytes().to_vec()),
                    )
                    .collect::<Vec<_>>(),
            )
        }
    });
    let (remote_results, local_results) =
        futures_util::future::join(futures_util::future::join_all(calls), async {
            if local.is_empty() {
                Ok(Vec::new())
            } else {
                let n = local.len();
                state
                    .engine
                    .enrich(local)
                    .await
                    .map_err(|e| refusal(state, n, e))
            }
        })
        .await;
    for (i, env) in local_at.into_iter().zip(local_results?) {
        out[i] = Some(env);
    }
    for r in remote_results {
        for (i, env) in r? {
            out[i] = Some(env);
        }
    }
    out.into_iter()
        .map(|e| e.ok_or_else(|| ApiError::Internal("an owner answered fewer results".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use actix_web::test::TestRequest;

    /// The batch `b6dd6cc`'s forwarder sent (tests/fixtures/README.md).
    const V1_BODY: &[u8] = include_bytes!("../../tests/fixtures/v1/forward/import-body.bin");
    const V1_HEADERS: &str = include_str!("../../tests/fixtures/v1/forward/import-headers.txt");

    fn v1_header(name: &str) -> &'static str {
        V1_HEADERS
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .unwrap_or_else(|| panic!("{name} not in the fixture's headers"))
    }

    #[test]
    fn a_batch_forwarded_by_b6dd6cc_is_read_as_version_1() {
        let req = V1_HEADERS
            .lines()
            .filter_map(|l| l.split_once(": "))
            .fold(TestRequest::post(), |r, h| r.insert_header(h))
            .to_http_request();
        assert!(
            req.headers().get(FORWARD_HEADER).is_none(),
            "sent no version"
        );
        assert_eq!(forward_format(&req).ok(), Some(Layout::V1));
        let partition: u32 = v1_header("x-sluice-partition").parse().unwrap();
        let records = forwarded_records(V1_BODY, partition, Layout::V1).unwrap();
        let got: Vec<(&str, u32, u64, &str)> = records
            .iter()
            .map(|r| (&*r.id, r.partition, r.seq, &*r.canonical))
            .collect();
        assert_eq!(
            got,
            vec![("\"fwd-3\"", 0, 0, "u4"), ("\"fwd-7\"", 0, 1, "u8")],
            "ids, partition, stage numbers and keys as sent"
        );
        assert_eq!(
            &*records[0].text,
            r#"{"id": "fwd-3", "user_id": "u4", "_sim": {"delay_ms": 3600000}}"#
        );
        assert!(
            records
                .iter()
                .all(|r| r.decided.is_none() && r.attempts == 0)
        );
        // Records of another partition than the header's are refused whole.
        assert!(matches!(
            forwarded_records(V1_BODY, partition + 1, Layout::V1),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn a_version_2_batch_arrives_with_its_records_step_marks() {
        use crate::record::{StepDone, StepMark};
        let mut r = forwarded_records(V1_BODY, 0, Layout::V1).unwrap().remove(0);
        r.steps = vec![
            StepMark {
                attempts: 1,
                done: Some(StepDone::Found("{\"account\":\"a\"}".into())),
            },
            StepMark {
                attempts: 2,
                done: Some(StepDone::Miss),
            },
            StepMark {
                attempts: 0,
                done: Some(StepDone::Skipped),
            },
            StepMark {
                attempts: 2,
                done: None,
            },
        ];
        r.attempts = 5;
        let records = vec![std::sync::Arc::new(r.clone())];
        let (version, body) = crate::engine::forwarder::forward_body(&records);
        let req = TestRequest::post()
            .insert_header((FORWARD_HEADER, version.to_string()))
            .to_http_request();
        let layout = forward_format(&req).unwrap();
        assert_eq!(layout, Layout::V2);
        assert_eq!(forwarded_records(&body, 0, layout).unwrap(), vec![r]);
        // Read as version 1 (a sender naming the wrong version) it is not taken.
        assert!(matches!(
            forwarded_records(&body, 0, Layout::V1),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn a_forwarded_batch_of_a_version_this_node_does_not_read_is_refused_naming_both() {
        let with = |v: &str| {
            TestRequest::post()
                .insert_header((FORWARD_HEADER, v))
                .to_http_request()
        };
        assert_eq!(forward_format(&with("1")).ok(), Some(Layout::V1));
        assert_eq!(forward_format(&with("2")).ok(), Some(Layout::V2));
        for v in ["3", "0"] {
            let e = forward_format(&with(v)).unwrap_err();
            assert_eq!(e.status_code().as_u16(), 415);
            assert_eq!(e.slug(), "unsupported-format-version");
            let detail = e.to_string();
            assert!(
                detail.starts_with(&format!(
                    "the forwarded batch has format version {v}; this sluice ("
                )) && detail.contains("reads versions 1..2"),
                "{detail}"
            );
        }
        assert!(matches!(
            forward_format(&with("one")),
            Err(ApiError::BadRequest(_))
        ));
    }
}
