//! Request bodies: reading them (size limit, content coding, time limits), their content
//! type and parsing them into records. Everything but [`read_body`]'s header checks works on
//! a stream or on the bytes, so every 400/408/413/415 rule is unit-tested without a server.

use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;

use super::problem::ApiError;
use crate::json::raw;

/// A request body must arrive completely within this long from the end of its head (408).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body may pause at most this long between two pieces (408).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuse any `Content-Encoding` but `identity`: the body would be parsed as it came.
fn check_encoding(req: &HttpRequest) -> Result<(), ApiError> {
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            ApiError::UnsupportedEncoding(
                "the Content-Encoding header is not readable; send the body uncompressed".into(),
            )
        })?;
        for coding in text.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Err(ApiError::UnsupportedEncoding(format!(
                    "Content-Encoding `{coding}` is not supported: send the body uncompressed \
                     (identity)"
                )));
            }
        }
    }
    Ok(())
}

/// Read the body up to `server.max_body_bytes`, refusing early on Content-Length and on a
/// content coding, within [`BODY_TIMEOUT`] and without pauses over [`BODY_IDLE_TIMEOUT`].
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    check_encoding(req)?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = length
        && len > limit
    {
        return Err(too_large(len.to_string(), limit));
    }
    collect_body(payload, length, limit, BODY_IDLE_TIMEOUT, BODY_TIMEOUT).await
}

fn too_large(size: String, limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body is {size} bytes; the limit is {limit} (server.max_body_bytes)"
    ))
}

/// Gather a body stream of `length` bytes (when declared) up to `limit`; a stream that
/// pauses longer than `idle`, or is not complete after `total`, is a 408.
async fn collect_body<S>(
    mut stream: S,
    length: Option<u64>,
    limit: u64,
    idle: Duration,
    total: Duration,
) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let started = tokio::time::Instant::now();
    let deadline = started + total;
    let mut buf = Vec::new();
    loop {
        let now = tokio::time::Instant::now();
        let wait = idle.min(deadline.saturating_duration_since(now));
        let Ok(next) = tokio::time::timeout(wait, stream.next()).await else {
            let got = match length {
                Some(n) => format!("{} of {n} bytes", buf.len()),
                None => format!("{} bytes", buf.len()),
            };
            return Err(ApiError::RequestTimeout(
                if tokio::time::Instant::now() >= deadline {
                    format!(
                        "the body was not complete {} s after the headers ({got} received); \
                         send it faster or in smaller requests",
                        total.as_secs_f64()
                    )
                } else {
                    format!(
                        "no part of the body arrived for {} s ({got} received)",
                        idle.as_secs_f64()
                    )
                },
            ));
        };
        let Some(chunk) = next else {
            return Ok(buf);
        };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(format!("more than {limit}"), limit));
        }
        buf.extend_from_slice(&chunk);
    }
}

/// The two accepted body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one JSON array of records.
    JsonArray,
    /// `application/x-ndjson`: one record per line.
    Ndjson,
}

/// The body format named by a `Content-Type` header value (parameters ignored).
pub fn format_of(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    let Some(ct) = content_type else {
        return Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: use application/json (an array of records) or \
             application/x-ndjson (one record per line)"
                .into(),
        ));
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::JsonArray),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            Ok(BodyFormat::Ndjson)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{ct}` is not supported: use application/json (an array of records) \
             or application/x-ndjson (one record per line)"
        ))),
    }
}

/// Split a body into its records' JSON text (validated, borrowed from `body`), refusing
/// more than `max_records`.
pub fn parse_records(
    format: BodyFormat,
    body: &[u8],
    max_records: usize,
) -> Result<Vec<&RawValue>, ApiError> {
    let too_many = |n: usize| {
        ApiError::PayloadTooLarge(format!(
            "{n} records in one request; the limit is {max_records} (server.max_records_per_request)"
        ))
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    match format {
        BodyFormat::JsonArray => {
            if !text.trim_start().starts_with('[') {
                return Err(match serde_json::from_str::<&RawValue>(text) {
                    Ok(v) => ApiError::BadRequest(format!(
                        "the body must be a JSON array of records, got {}; send one record as \
                         [{{...}}] or use application/x-ndjson",
                        raw::type_name(v.get())
                    )),
                    Err(e) => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
                });
            }
            let records: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            if records.len() > max_records {
                return Err(too_many(records.len()));
            }
            Ok(records)
        }
        BodyFormat::Ndjson => {
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            if lines.len() > max_records {
                return Err(too_many(lines.len()));
            }
            lines
                .into_iter()
                .map(|(i, line)| {
                    serde_json::from_str::<&RawValue>(line).map_err(|e| {
                        ApiError::BadRequest(format!("line {}: not valid JSON: {e}", i + 1))
                    })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use futures_util::stream;

    use super::*;

    fn chunk(b: &'static [u8]) -> Result<Bytes, PayloadError> {
        Ok(Bytes::from_static(b))
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_whole_body_is_gathered() {
        let s = stream::iter(vec![chunk(b"[1,"), chunk(b"2]")]);
        let body = collect_body(s, Some(5), 100, 50 * MS, 500 * MS).await;
        assert_eq!(body.unwrap(), b"[1,2]");
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_naming_what_arrived() {
        let s = stream::iter(vec![chunk(b"[1,")]).chain(stream::pending());
        let started = std::time::Instant::now();
        let e = collect_body(s, Some(10), 100, 50 * MS, 5000 * MS)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, ApiError::RequestTimeout(_)), "{e:?}");
        assert!(e.to_string().contains("3 of 10 bytes"), "{e}");
        assert!(e.to_string().contains("no part of the body arrived"), "{e}");
    }

    #[tokio::test]
    async fn a_trickling_body_is_a_408_at_the_total_limit() {
        // A byte every 10 ms never pauses long enough for the idle limit.
        let s = Box::pin(stream::unfold((), |_| async {
            tokio::time::sleep(10 * MS).await;
            Some((chunk(b"x"), ()))
        }));
        let started = std::time::Instant::now();
        let e = collect_body(s, None, 1 << 20, 100 * MS, 200 * MS)
            .await
            .unwrap_err();
        assert!(started.elapsed() >= 200 * MS);
        assert!(matches!(e, ApiError::RequestTimeout(_)), "{e:?}");
        assert!(e.to_string().contains("not complete"), "{e}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413() {
        let s = stream::iter(vec![chunk(b"12345"), chunk(b"678")]);
        let e = collect_body(s, None, 6, 50 * MS, 500 * MS)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge(_)), "{e:?}");
    }

    #[test]
    fn only_the_identity_coding_is_taken() {
        let with = |v: &str| {
            check_encoding(
                &TestRequest::default()
                    .insert_header((header::CONTENT_ENCODING, v))
                    .to_http_request(),
            )
        };
        assert!(check_encoding(&TestRequest::default().to_http_request()).is_ok());
        assert!(with("identity").is_ok());
        assert!(with("Identity, identity").is_ok());
        for coding in ["gzip", "br", "identity, deflate"] {
            let e = with(coding).unwrap_err();
            assert!(matches!(e, ApiError::UnsupportedEncoding(_)), "{coding}");
        }
        assert!(
            with("identity, zstd")
                .unwrap_err()
                .to_string()
                .contains("`zstd`")
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            format_of(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::JsonArray
        );
        assert_eq!(
            format_of(Some("application/x-ndjson")).unwrap(),
            BodyFormat::Ndjson
        );
        assert!(matches!(
            format_of(Some("text/plain")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            format_of(None),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn array_and_ndjson_bodies() {
        let r = parse_records(BodyFormat::JsonArray, br#"[{"a":1},{"a":2}]"#, 10).unwrap();
        assert_eq!(r.len(), 2);
        let r = parse_records(BodyFormat::Ndjson, b"{\"a\":1}\n\n{\"a\":2}\r\n", 10).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn records_keep_their_text() {
        let r = parse_records(BodyFormat::JsonArray, br#"[ {"a": 1} ,{"b":[2]}]"#, 10).unwrap();
        assert_eq!(r[0].get(), r#"{"a": 1}"#);
        assert_eq!(r[1].get(), r#"{"b":[2]}"#);
    }

    #[test]
    fn malformed_bodies_are_400_and_too_many_413() {
        assert!(matches!(
            parse_records(BodyFormat::JsonArray, b"[{", 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_records(BodyFormat::JsonArray, b"{}", 10),
            Err(ApiError::BadRequest(_))
        ));
        let e = parse_records(BodyFormat::Ndjson, b"{}\n{oops\n", 10).unwrap_err();
        assert!(e.to_string().starts_with("line 2"), "{e}");
        assert!(matches!(
            parse_records(BodyFormat::Ndjson, b"\xff", 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_records(BodyFormat::JsonArray, b"[1,2,3]", 2),
            Err(ApiError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            parse_records(BodyFormat::Ndjson, b"1\n2\n3", 2),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
