//! The operational routes: `/v1/status`, `POST /v1/checkpoint`, `/metrics`, `/healthz` and
//! `/readyz`.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse};

use super::problem::ApiError;
use super::state::{Data, authorize, ensure_ready};
use super::{api, responses};
use crate::engine::OpError;

/// The node's counters per partition, pending records and last checkpoint.
#[utoipa::path(
    method(get, head),
    path = "/v1/status",
    tag = "operations",
    responses((status = 200, description = "This node's state.", body = api::Status)),
)]
pub async fn get_status(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    let partitions = shared
        .partitions
        .iter()
        .enumerate()
        .map(|(id, p)| api::PartitionStatus {
            id,
            in_flight: p.in_flight.load(Ordering::Acquire) as u64,
            backlog: p.backlog.load(Ordering::Acquire) as u64,
            accepted: p.accepted.load(Ordering::Acquire),
            emitted: p.emitted.load(Ordering::Acquire),
        })
        .collect();
    let pending = shared.pending();
    shared.metrics.pending.set(pending as i64);
    HttpResponse::Ok().json(api::Status {
        node: state.node.clone(),
        ready: shared.accepting(),
        mode: state.settings.pipeline.mode.into(),
        partitions,
        pending,
        staged: shared.staged(),
        last_checkpoint: shared
            .last_checkpoint
            .lock()
            .as_ref()
            .map(api::Checkpoint::from),
        sink_problems: shared.sink_problems.lock().clone(),
    })
}

/// Take a snapshot of the pending records now.
#[utoipa::path(
    post,
    path = "/v1/checkpoint",
    tag = "operations",
    responses(
        (status = 200, description = "The snapshot is durable.", body = api::Checkpoint),
        (status = 401, response = responses::Unauthorized),
        (status = 501, response = responses::NotImplemented),
        (status = 503, response = responses::Unavailable),
    ),
    security((), ("bearer" = [])),
)]
pub async fn post_checkpoint(req: HttpRequest, state: Data) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state.settings)?;
    ensure_ready(&state)?;
    let own = &state.engine.shared().ownership;
    if own.is_clustered() && !own.lease_live() {
        return Err(ApiError::Unavailable(
            "no live etcd lease: this node commits nothing while fenced; retry shortly".into(),
        ));
    }
    match state.engine.checkpoint().await {
        Ok(Some(info)) => Ok(HttpResponse::Ok().json(api::Checkpoint::from(&info))),
        Ok(None) => Err(ApiError::NotImplemented(
            "this engine runs without a journal".into(),
        )),
        Err(e @ OpError::Fenced) => Err(ApiError::Unavailable(format!(
            "checkpoint not taken: {e}; retry shortly"
        ))),
        // A sink or the journal cannot be made durable now (disk full, I/O error): nothing
        // was committed; the pending records are safe in the journal.
        Err(e) => Err(ApiError::Unavailable(format!(
            "checkpoint not taken: {e}; retry once the sink or disk recovers"
        ))),
    }
}

/// Prometheus metrics (`sluice_*`).
#[utoipa::path(
    method(get, head),
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String)),
)]
pub async fn get_metrics(state: Data) -> HttpResponse {
    let shared = state.engine.shared();
    shared.metrics.pending.set(shared.pending() as i64);
    let m = &shared.metrics;
    let pipeline = state.engine.pipeline();
    for (i, lookup) in pipeline.lookups().iter().enumerate() {
        let step = pipeline.graph().name(i);
        m.catch_up(
            &m.lookup_coalesced.with_label_values(&[step]),
            lookup.coalesced(),
        );
        let (hits, misses) = lookup.cache_stats();
        for (label, now) in [("hit", hits), ("miss", misses)] {
            m.catch_up(&m.lookup_cache.with_label_values(&[step, label]), now);
        }
    }
    if let Some(c) = &*shared.last_checkpoint.lock() {
        let now = crate::durability::journal::unix_ms() as f64 / 1000.0;
        shared
            .metrics
            .checkpoint_age
            .set((now - c.unix_secs).max(0.0));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(shared.metrics.render())
}

/// Liveness: the process answers.
#[utoipa::path(
    method(get, head),
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = api::Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(api::Health { status: "ok" })
}

/// Readiness: whether the node takes records now, and if not, why.
#[utoipa::path(
    method(get, head),
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The node takes records.", body = api::Ready),
        (status = 503, response = responses::Unavailable),
    ),
)]
pub async fn readyz(state: Data) -> Result<HttpResponse, ApiError> {
    ensure_ready(&state)?;
    let own = &state.engine.shared().ownership;
    if own.is_clustered() {
        if !own.lease_live() {
            return Err(ApiError::Unavailable(
                "no live etcd lease: this node has fenced itself (503 until etcd answers)".into(),
            ));
        }
        if !own.known() {
            return Err(ApiError::Unavailable(
                "the partition owners are not known yet".into(),
            ));
        }
    }
    let pipeline = state.engine.pipeline();
    for (i, lookup) in pipeline.lookups().iter().enumerate() {
        if !lookup.is_ready() {
            return Err(ApiError::Unavailable(format!(
                "the lookup backend {}is unreachable ({})",
                if pipeline.steps_form() {
                    format!("of step {} ", pipeline.graph().name(i))
                } else {
                    String::new()
                },
                lookup.describe()
            )));
        }
    }
    if let Some(why) = state.engine.shared().journal_health.lock().clone() {
        return Err(ApiError::Unavailable(format!(
            "the journal cannot write ({why}): new records are refused until it can"
        )));
    }
    let sinks = state.engine.shared().sink_problems.lock().clone();
    if !sinks.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "a sink is unhealthy; its records stay pending and are retried: {}",
            sinks.join("; ")
        )));
    }
    Ok(HttpResponse::Ok().json(api::Ready { ready: true }))
}
