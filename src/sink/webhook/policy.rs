//! The webhook sink's decisions, apart from any I/O so they can be tested alone: what an
//! answer means for a batch, how long to wait before a retry, and the batch's
//! `Idempotency-Key`.

use std::time::Duration;

use crate::envelope::Envelopes;

/// What to do with a batch after one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the receiver has the batch.
    Delivered,
    /// Send the same batch again (same key) after a delay; `Some` when the receiver named it.
    Retry(Option<Duration>),
    /// The receiver refused the batch for good: its envelopes go to the dead letter.
    Reject(String),
}

/// How many bytes of a refusing answer go into the dead letter's `error`.
pub const SNIPPET_BYTES: usize = 200;

/// Judge an HTTP answer: 2xx delivered; 408, 429 and 5xx retried (honouring a
/// `Retry-After` of delta-seconds); every other status refused, with the start of the body.
pub fn judge(status: u16, retry_after: Option<&str>, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry(retry_after.and_then(parse_retry_after)),
        _ => {
            let mut end = body.len().min(SNIPPET_BYTES);
            while end > 0 && std::str::from_utf8(&body[..end]).is_err() {
                end -= 1;
            }
            let snippet = String::from_utf8_lossy(&body[..end]);
            Verdict::Reject(format!("webhook answered {status}: {}", snippet.trim()))
        }
    }
}

/// `Retry-After: <seconds>` (the HTTP-date form is not honoured: the backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The delay before retry number `retry` (1-based) of one batch: the receiver's
/// `Retry-After` when it gave one, else `initial · 2^(retry-1)`, capped at `max`.
pub fn delay(retry: u32, asked: Option<Duration>, initial: Duration, max: Duration) -> Duration {
    if let Some(d) = asked {
        return d;
    }
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// The batch's `Idempotency-Key`: a digest of which records it holds (partition and seq of
/// each, in order), so a retry — and a batch sent again with the same envelopes after a
/// restart — carries the same key.
pub fn idempotency_key(role: &str, batch: &Envelopes) -> String {
    // FNV-1a, 64 bits, twice with different offsets: stable across builds and platforms.
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    let mut feed = |bytes: &[u8]| {
        for &x in bytes {
            a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(x))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(7);
        }
    };
    for it in batch.items() {
        feed(&it.partition.to_le_bytes());
        feed(&it.seq.to_le_bytes());
    }
    let first = batch.items().first();
    format!(
        "sluice-{role}-p{}-s{}-n{}-{a:016x}{b:016x}",
        first.map_or(0, |i| i.partition),
        first.map_or(0, |i| i.seq),
        batch.len()
    )
}
