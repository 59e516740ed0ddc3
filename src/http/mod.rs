//! The REST API (README "REST API") on actix-web. Handlers only translate HTTP to engine calls;
//! every failure leaves through [`problem::ApiError`].
//!
//! Slow and odd clients are bounded here: the request head must arrive within
//! [`HEAD_TIMEOUT`], the body within [`BODY_TIMEOUT`] with no pause over [`BODY_IDLE_TIMEOUT`]
//! (408), at most [`MAX_CONNECTIONS`] connections are open (fewer when the process may open
//! fewer files), and a client that closes its connection has its handler dropped at once.
//!
//! Imports flow one way: `server` mounts the handler modules (`records`, `ops`, `cluster`,
//! `openapi`); they share `state`, `body`, `problem`, `api` and `responses`, which import no
//! handler module.

pub mod api;
pub mod body;
pub mod cluster;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod records;
pub mod responses;
pub mod server;
pub mod state;
pub mod stopped;
#[cfg(test)]
mod tests;

pub use body::{BODY_IDLE_TIMEOUT, BODY_TIMEOUT};
pub use server::{
    FD_RESERVE, HEAD_TIMEOUT, KEEP_ALIVE, Limits, MAX_CONNECTIONS, STOP_TIMEOUT_SECS, serve,
};
pub use state::AppState;
