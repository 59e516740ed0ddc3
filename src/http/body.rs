//! Request bodies: content type, size limits and parsing into records. Pure functions of
//! the bytes, so every 400/413/415 rule is unit-tested without a server.

use serde_json::value::RawValue;

use super::problem::ApiError;
use crate::json::raw;

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
    use super::*;

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
