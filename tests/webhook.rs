//! Webhook sink against a real local receiver.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::webhook::Receiver;
use support::{Config, Service};

fn config(r: &Receiver, extra: &str) -> Config {
    Config {
        output_webhook: format!("url = \"{}\"\n{extra}", r.url),
        ..Config::default()
    }
}

fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "user_id": format!("u{}", i % 50 + 1)}))
        .collect()
}

#[test]
fn smoke_every_envelope_arrives() {
    let r = Receiver::start();
    let svc = Service::start(&config(&r, "batch_max_records = 50\nbatch_max_ms = 20\n"));
    let ids = svc.post_all(&records("a", 300), 100);
    svc.wait_quiescent(Duration::from_secs(30));
    let taken = r.wait_for_ids(ids.len(), Duration::from_secs(10));
    assert_eq!(taken.len(), 300);
    assert!(r.posts().iter().all(|p| p.envelopes.len() <= 50));
}
