//! Tests of the `http` lookup backend: the pure parts alone ([`pure`]), and the backend
//! against a real HTTP service started by each test ([`live`], [`server`]).

mod live;
mod pure;
// The same real service the integration tests use (tests/support).
#[path = "../../../../tests/support/lookup_http.rs"]
mod server;
