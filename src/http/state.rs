//! What every handler shares: the node's state, the checks run before any work (bearer
//! token, readiness) and the translation of the engine's refusals into problems. The
//! handler modules import it; it imports none of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use tokio::sync::watch;

use super::problem::ApiError;
use crate::engine::{Engine, SubmitError};
use crate::settings::Settings;

/// What every handler shares.
pub struct AppState {
    /// The running engine.
    pub engine: Arc<Engine>,
    /// The effective configuration.
    pub settings: Arc<Settings>,
    /// Node name for `/v1/status`.
    pub node: String,
    /// Turns `true` when the shutdown grace is over: requests still waiting for records
    /// (`/v1/enrich`) answer 503 at once instead of holding the stop up.
    pub grace_over: watch::Receiver<bool>,
}

/// The state as the handlers extract it.
pub(crate) type Data = web::Data<AppState>;

/// 401 unless `server.auth_tokens` is empty or the request's bearer token is one of them.
pub(crate) fn authorize(req: &HttpRequest, settings: &Settings) -> Result<(), ApiError> {
    let tokens = &settings.server.auth_tokens;
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(t)
            if tokens
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), t.as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 503 while the node restores or drains.
pub(crate) fn ensure_ready(state: &AppState) -> Result<(), ApiError> {
    let shared = state.engine.shared();
    if shared.draining.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the node is shutting down".into()));
    }
    if !shared.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the node is not ready yet".into()));
    }
    Ok(())
}

/// Count `records` refused now as fencing refusals (`sluice_cluster_fencing_refusals_total`)
/// when the node is fenced: a cluster member without a live lease refuses every record.
pub(crate) fn count_if_fenced(state: &AppState, records: usize) {
    let shared = state.engine.shared();
    if shared.ownership.is_fenced() {
        shared.metrics.fencing_refusals.inc_by(records as u64);
    }
}

/// [`submit_error`] for a request of `records` records, counting a refusal for want of an
/// owner while this node is fenced.
pub(crate) fn refusal(state: &AppState, records: usize, e: SubmitError) -> ApiError {
    if matches!(e, SubmitError::Unavailable(_)) {
        count_if_fenced(state, records);
    }
    submit_error(e)
}

/// The problem for an engine's refusal of a submit or an enrich.
pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Overloaded { reason, .. } if !reason.can_ever_fit() => {
            ApiError::PayloadTooLarge(format!(
                "{} of the records go to partition {}, which holds at most {} \
                 (pipeline.capacity + pipeline.backlog); send smaller batches",
                reason.wanted, reason.partition, reason.limit
            ))
        }
        SubmitError::Overloaded { reason, .. } => ApiError::Overloaded {
            detail: format!("{reason}; nothing was accepted, retry later"),
            retry_after_secs: 1,
        },
        SubmitError::Stopped => ApiError::Unavailable("the engine is stopping".into()),
        SubmitError::Unavailable(why) => {
            ApiError::Unavailable(format!("{why}; nothing was accepted, retry shortly"))
        }
        SubmitError::Journal(e) => ApiError::Unavailable(format!(
            "the records could not be made durable ({e}); nothing of this request was \
             processed, retry it"
        )),
    }
}
