//! Request bodies: `format_of` on a Content-Type value and `parse_records` on the body.
//!
//! Input: `[flags][content-type length][content-type][body…]`. The flags pick the format
//! when the content type names none, and the record limit.
//!
//! Invariants:
//! - `format_of` ignores ASCII case and parameters; its errors are 415s.
//! - On success: at most `max_records` records, each borrowed from the body in order and
//!   without overlap, each one JSON value without surrounding whitespace (checked by the
//!   independent validator in `sluice_fuzz::json`).
//! - JSON array: the records are exactly the array's items; the body is refused only when
//!   it is not a JSON array (400) or has too many items (413).
//! - NDJSON: one record per non-blank line, each the line's text without whitespace; the
//!   body is refused only when a non-blank line is not JSON (400, naming that line) or
//!   there are too many lines (413).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http::body::{BodyFormat, format_of, parse_records};
use sluice::http::problem::ApiError;
use sluice_fuzz::Split;
use sluice_fuzz::json::{self, Verdict};

const LIMITS: [usize; 8] = [0, 1, 2, 3, 5, 10, 1000, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let mut input = Split::new(data);
    let flags = input.byte();
    let ct_len = usize::from(input.byte() % 48);
    let rest = input.rest();
    let (ct, body) = rest.split_at(ct_len.min(rest.len()));
    let max_records = LIMITS[usize::from(flags >> 1) % LIMITS.len()];

    let mut format = if flags & 1 == 0 {
        BodyFormat::JsonArray
    } else {
        BodyFormat::Ndjson
    };
    if let Ok(ct) = std::str::from_utf8(ct) {
        match format_of(Some(ct)) {
            Ok(f) => {
                format = f;
                // Case-insensitive, parameters ignored.
                assert_eq!(format_of(Some(&ct.to_ascii_uppercase())).ok(), Some(f));
                assert_eq!(format_of(Some(&format!("{ct}; charset=utf-8"))).ok(), Some(f));
            }
            Err(e) => {
                assert!(matches!(e, ApiError::UnsupportedMediaType(_)), "{e:?}");
                assert!(format_of(Some(&ct.to_ascii_lowercase())).is_err());
            }
        }
    }
    assert!(matches!(
        format_of(None),
        Err(ApiError::UnsupportedMediaType(_))
    ));

    let result = parse_records(format, body, max_records);
    let Ok(text) = std::str::from_utf8(body) else {
        assert!(matches!(result, Err(ApiError::BadRequest(_))), "{result:?}");
        return;
    };

    match &result {
        Ok(records) => {
            assert!(records.len() <= max_records);
            let base = body.as_ptr() as usize;
            let mut end = 0;
            for r in records {
                let r = r.get();
                let start = r.as_ptr() as usize - base;
                assert!(start >= end && start + r.len() <= body.len(), "record outside the body or overlapping");
                end = start + r.len();
                assert_eq!(json::trim(r), r, "a record carries whitespace");
                assert_ne!(json::verdict(r), Verdict::Invalid, "accepted a record that is not JSON: {r:?}");
            }
        }
        Err(e) => assert!(
            matches!(e, ApiError::BadRequest(_) | ApiError::PayloadTooLarge(_)),
            "{e:?}"
        ),
    }

    match format {
        BodyFormat::JsonArray => match (json::array_len(text), &result) {
            (Some(n), Ok(records)) => {
                assert_eq!(records.len(), n);
                // The items, as serde_json reads the whole array, where it can.
                if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) {
                    for (r, item) in records.iter().zip(&items) {
                        let v: serde_json::Value = serde_json::from_str(r.get()).unwrap();
                        assert_eq!(&v, item);
                    }
                }
            }
            (Some(n), Err(ApiError::PayloadTooLarge(_))) => assert!(n > max_records),
            (Some(_), Err(e)) => {
                // Valid per RFC 8259 yet refused: only what serde_json cannot hold.
                let why = e.to_string();
                assert!(
                    why.contains("recursion limit") || why.contains("out of range"),
                    "a valid JSON array was refused: {why}"
                );
            }
            (None, Ok(_)) => {
                assert_eq!(json::verdict(text), Verdict::Unknown, "accepted a body that is not a JSON array")
            }
            (None, Err(ApiError::PayloadTooLarge(_))) => {
                assert_eq!(json::verdict(text), Verdict::Unknown, "413 for a body that is not a JSON array")
            }
            (None, Err(_)) => {}
        },
        BodyFormat::Ndjson => {
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            match &result {
                Ok(records) => {
                    assert_eq!(records.len(), lines.len(), "one record per non-blank line");
                    for (r, (_, line)) in records.iter().zip(&lines) {
                        assert_eq!(r.get(), json::trim(line));
                    }
                }
                Err(ApiError::PayloadTooLarge(_)) => assert!(lines.len() > max_records),
                Err(e) => {
                    assert!(lines.len() <= max_records);
                    // The named line is the first that is not JSON.
                    let why = e.to_string();
                    let first_bad = lines
                        .iter()
                        .find(|(_, l)| serde_json::from_str::<&serde_json::value::RawValue>(l).is_err())
                        .map(|(i, _)| i + 1);
                    let Some(n) = first_bad else {
                        panic!("refused although every line is JSON: {why}");
                    };
                    assert!(why.starts_with(&format!("line {n}: ")), "{why} (expected line {n})");
                    let (_, line) = lines.iter().find(|(i, _)| i + 1 == n).unwrap();
                    if json::verdict(line) == Verdict::Valid {
                        assert!(
                            why.contains("recursion limit") || why.contains("out of range"),
                            "a valid JSON line was refused: {why}"
                        );
                    }
                }
            }
        }
    }
});
