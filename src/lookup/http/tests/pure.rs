//! The URL template, bind reading and answer judging, without any I/O.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::super::answer::{self, Answer, http_date, retry_after, snippet};
use super::super::bind::Bound;
use super::super::url::{Template, TemplateError, encode_into};
use crate::lookup::{LookupError, Row};
use crate::pointer::Pointer;

fn pointers(ps: &[&str]) -> Vec<Pointer> {
    ps.iter()
        .map(|p| Pointer::parse(p).expect("pointer"))
        .collect()
}

fn bound(ps: &[&str], record: &str) -> Bound {
    Bound::read(&pointers(ps), record).expect("bindable")
}

fn encoded(text: &str) -> String {
    let mut out = String::new();
    encode_into(&mut out, text);
    out
}

#[test]
fn encoding_keeps_only_unreserved_characters() {
    assert_eq!(encoded("abc-XYZ_0.9~"), "abc-XYZ_0.9~");
    assert_eq!(encoded("a b/c"), "a%20b%2Fc");
    assert_eq!(encoded("zürich"), "z%C3%BCrich");
    assert_eq!(encoded("?&=#%+"), "%3F%26%3D%23%25%2B");
    assert_eq!(encoded("日"), "%E6%97%A5");
    assert_eq!(encoded(""), "");
}

#[test]
fn placeholders_take_a_strings_text_and_other_values_json() {
    let t = Template::parse("http://h:1/geo/{0}/{1}?q={2}&b={3}&again={0}", 4).expect("template");
    assert!(t.has_placeholders());
    let b = bound(
        &["/ip", "/n", "/x", "/ok"],
        r#"{"ip": "a b/ü", "n": -1.5e3, "x": 42, "ok": true}"#,
    );
    assert_eq!(
        t.render(&b),
        "http://h:1/geo/a%20b%2F%C3%BC/-1.5e3?q=42&b=true&again=a%20b%2F%C3%BC"
    );
    // An escaped string is its text, not its JSON spelling.
    let b = bound(
        &["/ip", "/n", "/x", "/ok"],
        r#"{"ip": "\u0041\"", "n": 1, "x": 2, "ok": false}"#,
    );
    assert_eq!(t.render(&b), "http://h:1/geo/A%22/1?q=2&b=false&again=A%22");
    let plain = Template::parse("http://h/x", 0).expect("template");
    assert!(!plain.has_placeholders());
    assert_eq!(plain.sample(), "http://h/x");
    assert_eq!(t.sample(), "http://h:1/geo/0/0?q=0&b=0&again=0");
}

#[test]
fn templates_refuse_stray_braces_and_placeholders_beyond_the_binds() {
    for bad in [
        "http://h/{x}",
        "http://h/{}",
        "http://h/{0",
        "http://h/}",
        "http://h/{-1}",
    ] {
        assert_eq!(
            Template::parse(bad, 2),
            Err(TemplateError::Brace(bad.to_string())),
            "{bad}"
        );
    }
    assert_eq!(
        Template::parse("http://h/{0}/{2}", 2),
        Err(TemplateError::BeyondBinds {
            url: "http://h/{0}/{2}".into(),
            index: 2,
            binds: 2
        })
    );
    assert!(
        Template::parse("http://h/{1}", 1)
            .unwrap_err()
            .to_string()
            .contains("uses {1} but the step has 1 bind(s)")
    );
}

#[test]
fn binds_must_be_scalars_and_keys_are_typed() {
    let ps = pointers(&["/a"]);
    for (record, says) in [
        (r#"{"b": 1}"#, "missing"),
        (r#"{"a": null}"#, "is null"),
        (r#"{"a": {"x": 1}}"#, "is an object"),
        (r#"{"a": [1]}"#, "is an array"),
    ] {
        let e = Bound::read(&ps, record).unwrap_err();
        assert_eq!(e.pointer, "/a");
        assert!(e.message.starts_with(says), "{record}: {}", e.message);
        assert!(
            e.message.contains("string, a number or a boolean"),
            "{}",
            e.message
        );
    }
    let key = |r: &str| Bound::read(&ps, r).expect("bindable").key();
    assert_ne!(
        key(r#"{"a": "1"}"#),
        key(r#"{"a": 1}"#),
        "a string is not a number"
    );
    assert_ne!(key(r#"{"a": "true"}"#), key(r#"{"a": true}"#));
    assert_eq!(
        key(r#"{"a": "A"}"#),
        key(r#"{"a": "\u0041"}"#),
        "same string, same key"
    );
    let two = pointers(&["/a", "/b"]);
    let k2 = |r: &str| Bound::read(&two, r).expect("bindable").key();
    assert_ne!(
        k2(r#"{"a": "ab", "b": "c"}"#),
        k2(r#"{"a": "a", "b": "bc"}"#),
        "values do not run into each other"
    );
    assert_eq!(
        bound(&["/a", "/b/0"], r#"{"a": "x\ny", "b": [7, 8]}"#).json_array(),
        r#"["x\ny",7]"#
    );
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn single(
    status: u16,
    retry: Option<&str>,
    body: &str,
    result: &str,
) -> crate::lookup::LookupResult {
    answer::single(
        &Answer {
            status,
            retry_after: retry,
            body: body.as_bytes(),
        },
        &Pointer::parse(result).expect("pointer"),
        now(),
    )
}

#[test]
fn statuses_map_exactly() {
    let row = |s: &str| Ok(Some(Row::from(s)));
    assert_eq!(
        single(200, None, r#"{"city": "Oslo"}"#, ""),
        row(r#"{"city": "Oslo"}"#)
    );
    assert_eq!(
        single(200, None, "  \"text\"\n", ""),
        row("\"text\""),
        "any JSON value"
    );
    assert_eq!(
        single(200, None, "{\"data\":\n {\"a\": [1,\n 2]}}", "/data"),
        row("{\"a\": [1, 2]}"),
        "the result pointer; one line"
    );
    assert_eq!(
        single(200, None, r#"{"data": {"a": 1}}"#, "/data/a"),
        row("1")
    );
    assert_eq!(single(200, None, "null", ""), Ok(None));
    assert_eq!(single(200, None, r#"{"data": null}"#, "/data"), Ok(None));
    assert_eq!(single(200, None, r#"{"other": 1}"#, "/data"), Ok(None));
    assert_eq!(single(404, None, "no such thing", ""), Ok(None));
    for s in [408, 429, 500, 502, 503, 599] {
        assert_eq!(
            single(s, None, "busy", ""),
            Err(LookupError::Retryable(format!("HTTP {s}: busy")))
        );
    }
    assert_eq!(
        single(429, Some("2"), "slow down", ""),
        Err(LookupError::RetryAfter(
            "HTTP 429: slow down".into(),
            Duration::from_secs(2)
        ))
    );
    assert_eq!(
        single(503, Some("soon"), "", ""),
        Err(LookupError::Retryable("HTTP 503: ".into())),
        "an unreadable Retry-After is no wait"
    );
    for s in [201, 204, 301, 400, 401, 403, 409, 422] {
        assert_eq!(
            single(s, Some("5"), " bad key ", ""),
            Err(LookupError::Fatal(format!("HTTP {s}: bad key")))
        );
    }
    assert_eq!(
        single(200, None, "<html>oops</html>", ""),
        Err(LookupError::Fatal(
            "HTTP 200: the answer is not JSON: <html>oops</html>".into()
        ))
    );
    assert_eq!(
        single(200, None, r#"{"a": 1} trailing"#, "").map_err(|e| e.is_retryable()),
        Err(false)
    );
    let long = "é".repeat(500);
    let Err(LookupError::Fatal(m)) = single(400, None, &long, "") else {
        panic!("400 is fatal");
    };
    assert_eq!(
        m,
        format!("HTTP 400: {}", "é".repeat(200)),
        "200 characters of the body"
    );
    assert_eq!(
        snippet(&[0xff, b'a']),
        "\u{fffd}a",
        "bodies need not be UTF-8"
    );
}

fn batch(status: u16, body: &str, keys: usize, result: &str) -> Vec<crate::lookup::LookupResult> {
    answer::batch(
        &Answer {
            status,
            retry_after: Some("7"),
            body: body.as_bytes(),
        },
        keys,
        &Pointer::parse(result).expect("pointer"),
        now(),
    )
}

#[test]
fn batch_answers_are_matched_in_order() {
    assert_eq!(
        batch(
            200,
            r#"{"results": [{"v": 1}, null, {"v": 3}], "took": 2}"#,
            3,
            "/v"
        ),
        vec![Ok(Some(Row::from("1"))), Ok(None), Ok(Some(Row::from("3")))]
    );
    assert_eq!(batch(404, "", 2, ""), vec![Ok(None), Ok(None)]);
    let wait = Err(LookupError::RetryAfter(
        "HTTP 503: down".into(),
        Duration::from_secs(7),
    ));
    assert_eq!(batch(503, "down", 2, ""), vec![wait.clone(), wait]);
    for wrong in [
        r#"{"results": [1, 2]}"#,
        r#"{"results": [1, 2, 3, 4]}"#,
        r#"{"results": {"a": 1}}"#,
        r#"[1, 2, 3]"#,
        r#"{"other": [1, 2, 3]}"#,
    ] {
        let got = batch(200, wrong, 3, "");
        assert_eq!(got.len(), 3);
        for r in got {
            let Err(LookupError::Fatal(m)) = r else {
                panic!("{wrong}: fatal for every key");
            };
            assert!(m.starts_with("HTTP 200: "), "{m}");
            assert!(m.ends_with(wrong), "the start of the body: {m}");
        }
    }
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
    assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
    assert_eq!(http_date("Sun Nov  6 08:49:37 1994"), Some(t));
    assert_eq!(
        http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
        Some(SystemTime::UNIX_EPOCH)
    );
    assert_eq!(
        http_date("Tue, 29 Feb 2000 23:59:59 GMT"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(951_868_799))
    );
    for bad in [
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
    ] {
        assert_eq!(http_date(bad), None, "{bad}");
    }
    let at = now();
    assert_eq!(retry_after(" 120 ", at), Some(Duration::from_secs(120)));
    assert_eq!(retry_after("-1", at), None);
    assert_eq!(retry_after("1.5", at), None);
    assert_eq!(
        retry_after(&format_http_date(at + Duration::from_secs(30)), at),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        retry_after(&format_http_date(at - Duration::from_secs(30)), at),
        Some(Duration::ZERO),
        "a date already past: no wait"
    );
}

proptest! {
    #[test]
    fn http_dates_round_trip(secs in 0u64..8_000_000_000) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        prop_assert_eq!(http_date(&format_http_date(t)), Some(t));
    }

    #[test]
    fn placeholders_encode_any_text_reversibly(s in "\\PC{0,20}") {
        let mut out = String::new();
        encode_into(&mut out, &s);
        prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        prop_assert_eq!(decode(&out), s.into_bytes());
    }
}

fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), for services in the tests.
pub fn format_http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
