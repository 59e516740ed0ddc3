//! `kind = "webhook"`: envelopes POSTed as NDJSON batches to an HTTP(S) receiver, at least
//! once. See README "Webhook sink" for what a receiver sees.

pub mod config;
mod policy;
mod sink;
#[cfg(test)]
mod tests;

pub use sink::WebhookSink;
