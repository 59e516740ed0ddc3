//! The record routes: `POST /v1/records` (accept, then enrich and emit to the sinks) and
//! `POST /v1/enrich` (enrich and answer with the envelopes). Both admit a request whole or
//! refuse it whole.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::body::{format_of, parse_records, read_body};
use super::problem::ApiError;
use super::state::{AppState, Data, authorize, refusal};
use super::{api, cluster, responses};
use crate::engine::admit::Admitted;

/// Send records to be enriched and emitted to the sinks.
#[utoipa::path(
    post,
    path = "/v1/records",
    tag = "records",
    description = "All records are accepted (202, their ids in request order) or none. With \
                   `checkpoint.ack = \"durable\"` the 202 comes once they are in the journal.",
    request_body(
        description = "A JSON array of records, or NDJSON: one record per line, blank lines \
                       skipped (its schema describes the lines as the items of an array).",
        content(
            (Vec<api::Record> = "application/json"),
            (Vec<api::Record> = "application/x-ndjson", example = "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n"),
        ),
    ),
    responses(
        (status = 202, description = "Every record was accepted.", body = api::RecordsAccepted),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 408, response = responses::RequestTimeout),
        (status = 413, response = responses::PayloadTooLarge),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 422, response = responses::InvalidRecords),
        (status = 429, response = responses::Overloaded),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_records(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let n = records.len();
    let ids = state
        .engine
        .submit(records)
        .await
        .map_err(|e| refusal(&state, n, e))?;
    let answer = api::RecordsAccepted {
        accepted: ids.len(),
        ids,
    };
    Ok(HttpResponse::Accepted()
        .content_type("application/json")
        .body(answer.into_body()))
}

/// Enrich records and answer with their envelopes (not written to the sinks).
#[utoipa::path(
    post,
    path = "/v1/enrich",
    tag = "records",
    description = "Waits for every record's outcome and answers with the envelopes in request \
                   order. Nothing is journaled or written to the sinks.",
    request_body(
        description = "A JSON array of records, or NDJSON: one record per line (its schema \
                       describes the lines as the items of an array).",
        content(
            (Vec<api::Record> = "application/json"),
            (Vec<api::Record> = "application/x-ndjson", example = "{\"user_id\":\"u1\"}\n"),
        ),
    ),
    responses(
        (status = 200, description = "One envelope per record, in request order.", body = api::EnrichResults),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 408, response = responses::RequestTimeout),
        (status = 413, response = responses::PayloadTooLarge),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 422, response = responses::InvalidRecords),
        (status = 429, response = responses::Overloaded),
        (status = 500, response = responses::Internal),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_enrich(
    req: HttpRequest,
    payload: web::Payload,
    state: Data,
) -> Result<HttpResponse, ApiError> {
    let records = admitted_records(&req, payload, &state).await?;
    let n = records.len();
    // Dropped with the handler when the client goes away: say so (the records themselves
    // end at their outcome or deadline; their envelopes then go nowhere).
    let mut waiting = WaitGuard {
        records: n,
        done: false,
    };
    let enrich = async {
        if state.engine.shared().ownership.is_clustered() {
            cluster::enrich_across(&req, &state, records).await
        } else {
            state
                .engine
                .enrich(records)
                .await
                .map_err(|e| refusal(&state, n, e))
        }
    };
    let mut grace_over = state.grace_over.clone();
    let answer = tokio::select! {
        r = enrich => r,
        _ = grace_over.wait_for(|over| *over) => Err(ApiError::Unavailable(format!(
            "the node is shutting down and its grace period (server.shutdown_grace_ms) is \
             over: {n} record(s) were not enriched; retry on another node"
        ))),
    };
    waiting.done = true;
    let answer = api::EnrichResults { results: answer? };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(answer.into_body()))
}

/// Logs a `/v1/enrich` request whose client went away before its answer.
struct WaitGuard {
    records: usize,
    done: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(
                records = self.records,
                "/v1/enrich: the client went away before its answer"
            );
        }
    }
}

/// Everything `/v1/records` and `/v1/enrich` share: auth, readiness, body, validation.
async fn admitted_records(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Vec<Admitted>, ApiError> {
    authorize(req, &state.settings)?;
    if let Some(why) = state.engine.shared().refusing_records() {
        return Err(ApiError::Unavailable(why.into()));
    }
    let format = format_of(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let server = &state.settings.server;
    let bytes = read_body(req, payload, server.max_body_bytes).await?;
    state
        .engine
        .shared()
        .metrics
        .http_body_bytes
        .observe(bytes.len() as f64);
    let records = parse_records(format, &bytes, server.max_records_per_request as usize)?;
    let rules = state.engine.rules();
    let mut admitted = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        match rules.admit(i, r.get()) {
            Ok(a) => admitted.push(a),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        let bad: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
        return Err(ApiError::InvalidRecords {
            detail: format!(
                "{} of {} record(s) are invalid; nothing was accepted",
                bad.len(),
                admitted.len() + bad.len()
            ),
            errors,
        });
    }
    Ok(admitted)
}
