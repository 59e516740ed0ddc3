//! What an HTTP answer means for a lookup, apart from any I/O: status, `Retry-After` and body
//! in, [`LookupResult`] out (README "Pipelines", HTTP lookups):
//!
//! - `200` with a JSON body: found — the `result` pointer into it (`""` = all of it); `null`
//!   or nothing there is a miss;
//! - `404`: a miss;
//! - `408`, `429`, `5xx`: retryable, waiting at least `Retry-After` (seconds or an HTTP date)
//!   when the service names it;
//! - anything else, or a `200` that is not JSON (for a batch: not `{"results": [...]}` with
//!   one entry per key): failed, naming the status and the start of the body.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::raw;
use crate::lookup::{LookupError, LookupResult, Row};
use crate::pointer::Pointer;

/// How much of a body an error message quotes, in characters.
pub const SNIPPET_CHARS: usize = 200;

/// One HTTP answer as received.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// The `Retry-After` header's value, if any.
    pub retry_after: Option<&'a str>,
    pub body: &'a [u8],
}

/// The result of a single lookup's answer.
pub fn single(a: &Answer<'_>, result: &Pointer, now: SystemTime) -> LookupResult {
    match json_body(a, now)? {
        None => Ok(None),
        Some(text) => Ok(pick(text, result)),
    }
}

/// The results of a batch's answer, one per key in the order sent: `{"results": [r|null,
/// ...]}` with exactly `keys` entries, each read through `result` as a single answer is.
pub fn batch(a: &Answer<'_>, keys: usize, result: &Pointer, now: SystemTime) -> Vec<LookupResult> {
    #[derive(Deserialize)]
    struct Results<'a> {
        #[serde(borrow)]
        results: Vec<&'a RawValue>,
    }
    let text = match json_body(a, now) {
        Ok(Some(text)) => text,
        Ok(None) => return vec![Ok(None); keys],
        Err(e) => return vec![Err(e); keys],
    };
    match serde_json::from_str::<Results<'_>>(text) {
        Ok(r) if r.results.len() == keys => r
            .results
            .iter()
            .map(|v| Ok(pick(v.get(), result)))
            .collect(),
        _ => {
            let e = LookupError::Fatal(format!(
                "HTTP {}: the answer is not {{\"results\": [...]}} with {keys} entries: {}",
                a.status,
                snippet(a.body)
            ));
            vec![Err(e); keys]
        }
    }
}

/// The body of a `200` that is JSON, `None` for a `404`, else the error its status means.
fn json_body<'a>(a: &Answer<'a>, now: SystemTime) -> Result<Option<&'a str>, LookupError> {
    match a.status {
        200 => match std::str::from_utf8(a.body) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                Ok(Some(text))
            }
            _ => Err(LookupError::Fatal(format!(
                "HTTP 200: the answer is not JSON: {}",
                snippet(a.body)
            ))),
        },
        404 => Ok(None),
        408 | 429 | 500..=599 => {
            let message = format!("HTTP {}: {}", a.status, snippet(a.body));
            Err(match a.retry_after.and_then(|v| retry_after(v, now)) {
                Some(wait) => LookupError::RetryAfter(message, wait),
                None => LookupError::Retryable(message),
            })
        }
        s => Err(LookupError::Fatal(format!("HTTP {s}: {}", snippet(a.body)))),
    }
}

/// The value at `result` in the (valid) JSON `text` as one line; `null` or absent = miss.
fn pick(text: &str, result: &Pointer) -> Option<Row> {
    let v = raw::get(text, result.tokens())?.trim();
    (v != "null").then(|| Row::from(raw::to_line(v)))
}

/// The start of a body for an error message: at most [`SNIPPET_CHARS`] characters.
pub fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(SNIPPET_CHARS)
        .collect()
}

/// The wait a `Retry-After` value asks for: delta-seconds, or an HTTP date (a date already
/// past asks for no wait). `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP date (RFC 9110 §5.6.7) in any of its three forms: `Sun, 06 Nov 1994 08:49:37 GMT`,
/// the obsolete `Sunday, 06-Nov-94 08:49:37 GMT` and asctime's `Sun Nov  6 08:49:37 1994`.
pub fn http_date(v: &str) -> Option<SystemTime> {
    let (year, month, day, time) = if let Some((_, rest)) = v.split_once(", ") {
        let f: Vec<&str> = rest.split_whitespace().collect();
        match f.as_slice() {
            [d, m, y, t, "GMT"] => (year4(y)?, month(m)?, number(d)?, *t),
            [dmy, t, "GMT"] => {
                let mut p = dmy.split('-');
                let (d, m, y) = (p.next()?, p.next()?, p.next()?);
                if p.next().is_some() || y.len() != 2 {
                    return None;
                }
                let yy = number(y)?;
                (
                    if yy < 70 { 2000 + yy } else { 1900 + yy },
                    month(m)?,
                    number(d)?,
                    *t,
                )
            }
            _ => return None,
        }
    } else {
        match v.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_, m, d, t, y] => (year4(y)?, month(m)?, number(d)?, *t),
            _ => return None,
        }
    };
    let mut hms = time.split(':');
    let (h, m, s) = (
        number(hms.next()?)?,
        number(hms.next()?)?,
        number(hms.next()?)?,
    );
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    })
}

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn year4(s: &str) -> Option<i64> {
    if s.len() == 4 { number(s) } else { None }
}

fn month(s: &str) -> Option<i64> {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    NAMES.iter().position(|n| *n == s).map(|i| i as i64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
