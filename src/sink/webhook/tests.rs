use std::time::Duration;

use super::config::WebhookSettings;
use super::policy::{Verdict, delay, idempotency_key, judge, parse_retry_after};
use crate::envelope::{Envelopes, OutcomeKind};

fn batch(seqs: &[u64]) -> Envelopes {
    let mut b = Envelopes::new();
    for &s in seqs {
        b.push_with(format!("r{s}").into(), 2, s, OutcomeKind::Ok, true, |buf| {
            buf.extend_from_slice(b"{}")
        });
    }
    b
}

#[test]
fn answers_are_delivered_retried_or_refused_as_the_contract_says() {
    assert_eq!(judge(200, None, b""), Verdict::Delivered);
    assert_eq!(judge(204, None, b""), Verdict::Delivered);
    for s in [408, 429, 500, 502, 503, 599] {
        assert_eq!(judge(s, None, b""), Verdict::Retry(None), "{s}");
    }
    assert_eq!(
        judge(429, Some("3"), b""),
        Verdict::Retry(Some(Duration::from_secs(3)))
    );
    // An HTTP-date is not honoured: the backoff applies.
    assert_eq!(
        judge(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b""),
        Verdict::Retry(None)
    );
    for s in [301, 400, 401, 404, 413, 422] {
        assert!(matches!(judge(s, None, b"no"), Verdict::Reject(_)), "{s}");
    }
    let long = "é".repeat(400);
    let Verdict::Reject(reason) = judge(400, None, format!("bad field {long}").as_bytes()) else {
        panic!("400 must be refused");
    };
    assert!(
        reason.starts_with("webhook answered 400: bad field é"),
        "{reason}"
    );
    assert!(
        reason.len() <= 240,
        "the snippet is bounded: {}",
        reason.len()
    );
}

#[test]
fn backoff_doubles_up_to_the_cap_and_retry_after_wins() {
    let (i, m) = (Duration::from_millis(100), Duration::from_millis(1000));
    assert_eq!(delay(1, None, i, m), Duration::from_millis(100));
    assert_eq!(delay(2, None, i, m), Duration::from_millis(200));
    assert_eq!(delay(4, None, i, m), Duration::from_millis(800));
    assert_eq!(delay(5, None, i, m), m);
    assert_eq!(delay(500, None, i, m), m);
    assert_eq!(
        delay(3, Some(Duration::from_secs(7)), i, m),
        Duration::from_secs(7)
    );
    assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
    assert_eq!(parse_retry_after("-1"), None);
}

#[test]
fn the_idempotency_key_depends_on_which_records_a_batch_holds() {
    let a = idempotency_key("output", &batch(&[1, 2, 3]));
    assert_eq!(a, idempotency_key("output", &batch(&[1, 2, 3])));
    assert_ne!(a, idempotency_key("output", &batch(&[1, 2, 4])));
    assert_ne!(a, idempotency_key("output", &batch(&[1, 2])));
    assert_ne!(a, idempotency_key("dead_letter", &batch(&[1, 2, 3])));
    assert!(a.starts_with("sluice-output-p2-s1-n3-"), "{a}");
}

fn settings() -> WebhookSettings {
    crate::settings::Settings::defaults().output.webhook
}

#[test]
fn config_problems_name_the_key() {
    assert!(settings().problems("output.webhook").is_empty());
    let mut s = settings();
    s.url = "ftp://x/".into();
    s.concurrency = 0;
    s.max_backoff_ms = 1;
    s.headers.insert("bad header".into(), "v".into());
    let p = s.problems("output.webhook");
    for key in ["url", "concurrency", "max_backoff_ms", "headers"] {
        assert!(
            p.iter()
                .any(|l| l.starts_with(&format!("output.webhook.{key}"))),
            "{key}: {p:?}"
        );
    }
    s.url = "not a url".into();
    assert!(
        s.problems("dead_letter.webhook")[0].starts_with("dead_letter.webhook.url: `not a url`")
    );
}
