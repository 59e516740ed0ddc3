//! Records stay JSON text end to end. Ingest validates a record and reads only the fields
//! it needs (key, id, the merge target) without building a tree; emission splices the
//! lookup result into the text. Building and re-serializing a `serde_json::Value` per
//! record cost more than everything else in the pipeline together; this module is why
//! the engine's per-record cost is a few hundred nanoseconds.
//!
//! Pure functions over strings, unit-tested here.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::pointer::Pointer;

/// A member name that borrows from the input when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Why a text is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotObject {
    /// Valid JSON of another type (the type's name).
    Other(&'static str),
    /// Not valid JSON at all.
    Invalid(String),
}

/// The top-level members of the JSON object `text` as (name, value text), validating the
/// whole text on the way (one pass). Duplicate names are kept in order.
pub fn members(text: &str) -> Result<Vec<(Cow<'_, str>, &str)>, NotObject> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(Cow<'de, str>, &'de str)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
            while let Some(Name(k)) = map.next_key::<Name<'de>>()? {
                let v: &'de RawValue = map.next_value()?;
                out.push((k, v.get()));
            }
            Ok(out)
        }
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => NotObject::Other(type_name(text)),
            Err(e) => NotObject::Invalid(e.to_string()),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let out = de
        .deserialize_map(V)
        .map_err(|e| NotObject::Invalid(e.to_string()))?;
    de.end().map_err(|e| NotObject::Invalid(e.to_string()))?;
    Ok(out)
}

/// The value text at the pointer made of `tokens` inside the JSON `text`, if any.
pub fn get<'a>(text: &'a str, tokens: &[String]) -> Option<&'a str> {
    let mut cur = text;
    for tok in tokens {
        let t = cur.trim_start();
        cur = if t.starts_with('{') {
            members(cur)
                .ok()?
                .into_iter()
                .rev()
                .find(|(k, _)| k == tok)
                .map(|(_, v)| v)?
        } else if t.starts_with('[') {
            let idx: usize = tok.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(cur).ok()?;
            items.get(idx).map(|v| v.get())?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// The JSON type of a value's text, for messages.
pub fn type_name(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// An owned copy of a (valid) record's text fit for one NDJSON line: JSON strings cannot
/// hold a raw line break, so every CR/LF in valid JSON is whitespace and can go.
pub fn to_line(text: &str) -> Box<str> {
    let text = text.trim();
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], "").into_boxed_str()
    } else {
        Box::from(text)
    }
}

/// Append `record` with `value` placed at `into` to `out`, as [`Pointer::set`] would place
/// it (missing parents become objects; an existing member's value is replaced — the last one
/// when a name repeats), while every other byte of the record is kept as sent: numbers keep
/// every digit and text the parser cannot represent (`1e400`) passes through.
///
/// Fast path: `into` is one member name the record lacks (`splice`) — the member is appended
/// before the closing brace without looking at the rest.
pub fn write_merged(out: &mut Vec<u8>, text: &str, into: &Pointer, splice: bool, value: &str) {
    if splice
        && let [name] = into.tokens()
        && let Some(close) = text.rfind('}')
    {
        append_member(out, text, close, name, &[], value);
        return;
    }
    let mut merged = Vec::with_capacity(text.len() + value.len() + 32);
    if merge_text(&mut merged, text.trim(), into.tokens(), value) {
        out.extend_from_slice(&merged);
        return;
    }
    // Admission checked that the target can be set, so this is unreachable; never lose the
    // record over it.
    out.extend_from_slice(text.as_bytes());
}

/// Write the object `text` with `value` placed at `tokens` (see [`write_merged`]); `false`
/// when `text` is not an object or a parent on the way is not one.
fn merge_text(out: &mut Vec<u8>, text: &str, tokens: &[String], value: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        out.extend_from_slice(value.as_bytes());
        return true;
    };
    let Ok(top) = members(text) else {
        return false;
    };
    let Some(close) = text.rfind('}') else {
        return false;
    };
    let Some((_, member)) = top.iter().rev().find(|(name, _)| name == first) else {
        append_member(out, text, close, first, rest, value);
        return true;
    };
    // `member` borrows from `text`: its place in it.
    let start = member.as_ptr() as usize - text.as_ptr() as usize;
    let end = start + member.len();
    out.extend_from_slice(&text.as_bytes()[..start]);
    if rest.is_empty() {
        out.extend_from_slice(value.as_bytes());
    } else if !merge_text(out, member, rest, value) {
        return false;
    }
    out.extend_from_slice(&text.as_bytes()[end..]);
    true
}

/// Write the object `text` (closing brace at `close`) with a new last member `name` whose
/// value is `value` nested in objects named by `rest`.
/// Write the object `text` with new top-level members appended: `(key, value)` pairs whose
/// keys are JSON string texts (quoted, escaped) the object does not have yet, and whose
/// values are JSON texts. `false` (nothing written) when `text` is not an object's text.
pub fn append_members<'a>(
    out: &mut Vec<u8>,
    text: &str,
    members: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> bool {
    let text = text.trim();
    let Some(close) = text.rfind('}') else {
        return false;
    };
    if !text.starts_with('{') {
        return false;
    }
    let mut empty = text[1..close].trim().is_empty();
    out.extend_from_slice(text[..close].trim_end().as_bytes());
    for (key, value) in members {
        if !empty {
            out.push(b',');
        }
        empty = false;
        out.extend_from_slice(key.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'}');
    true
}

fn append_member(
    out: &mut Vec<u8>,
    text: &str,
    close: usize,
    name: &str,
    rest: &[String],
    value: &str,
) {
    let body = text[1..close].trim();
    out.extend_from_slice(text[..close].trim_end().as_bytes());
    if !body.is_empty() {
        out.push(b',');
    }
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
    for r in rest {
        out.push(b'{');
        let _ = serde_json::to_writer(&mut *out, r);
        out.push(b':');
    }
    out.extend_from_slice(value.as_bytes());
    out.extend(std::iter::repeat_n(b'}', rest.len()));
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_members_follow_the_existing_ones() {
        let mut out = Vec::new();
        assert!(append_members(
            &mut out,
            r#" {"a":1} "#,
            [("\"b\"", "null"), ("\"c\"", "{}")]
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1,"b":null,"c":{}}"#
        );
        let mut out = Vec::new();
        assert!(append_members(&mut out, "{ }", [("\"b\"", "2")]));
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"b":2}"#);
        assert!(!append_members(&mut Vec::new(), "[1]", [("\"b\"", "2")]));
    }
    use serde_json::Value;

    fn merged(record: &str, into: &str, splice: bool, value: &str) -> String {
        let mut out = Vec::new();
        write_merged(
            &mut out,
            record,
            &Pointer::parse(into).unwrap(),
            splice,
            value,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn members_borrow_and_unescape_names() {
        let r = r#"{"a":1, "b\"q":{"c":[1,2]}, "a":3}"#;
        let m = members(r).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].0, "b\"q");
        assert!(matches!(m[0].0, Cow::Borrowed(_)));
        assert_eq!(m[1].1, r#"{"c":[1,2]}"#);
        assert_eq!(members("[1]"), Err(NotObject::Other("an array")));
        assert_eq!(members("5"), Err(NotObject::Other("a number")));
        assert!(matches!(members("{\"a\":1} x"), Err(NotObject::Invalid(_))));
        assert!(matches!(members("{\"a\":tru}"), Err(NotObject::Invalid(_))));
        assert!(matches!(members("[1"), Err(NotObject::Invalid(_))));
    }

    #[test]
    fn get_follows_pointers_and_last_duplicate_wins() {
        let r = r#"{"a":1,"n":{"xs":[10,{"k":"v"}]},"a":2}"#;
        let p = |s: &str| Pointer::parse(s).unwrap().tokens().to_vec();
        assert_eq!(get(r, &p("/a")).unwrap(), "2");
        assert_eq!(get(r, &p("/n/xs/1/k")).unwrap(), r#""v""#);
        assert!(get(r, &p("/n/xs/7")).is_none());
        assert!(get(r, &p("/a/b")).is_none());
        assert!(get(r, &p("/missing")).is_none());
    }

    #[test]
    fn to_line_strips_line_breaks_only_outside_strings() {
        let r = "{\n  \"a\": \"x\\ny\",\r\n  \"b\": 1\n}";
        assert_eq!(&*to_line(r), "{  \"a\": \"x\\ny\",  \"b\": 1}");
    }

    #[test]
    fn splice_appends_a_member() {
        assert_eq!(
            merged(r#"{"id":"r","u":1}"#, "/e", true, r#"{"n":"A"}"#),
            r#"{"id":"r","u":1,"e":{"n":"A"}}"#
        );
        assert_eq!(merged("{ }", "/e", true, "null"), r#"{"e":null}"#);
        assert_eq!(
            merged(r#"{"a":1 }"#, "/e~1x", true, "1"),
            r#"{"a":1,"e/x":1}"#
        );
    }

    #[test]
    fn slow_path_replaces_or_nests() {
        assert_eq!(
            merged(r#"{"e":5,"a":1}"#, "/e", false, "7"),
            r#"{"e":7,"a":1}"#
        );
        assert_eq!(
            merged(r#"{"a":1}"#, "/m/e", false, r#"{"x":1}"#),
            r#"{"a":1,"m":{"e":{"x":1}}}"#
        );
    }

    /// Found by the `admit` fuzz target: merging through `serde_json::Value` rewrote numbers
    /// (`18446744070733419103234` became `1.8446744070733416e22`) and dropped the result of a
    /// record holding `1e400`.
    #[test]
    fn a_merge_keeps_every_other_byte_of_the_record() {
        assert_eq!(
            merged(
                r#"{"id": 18446744070733419103234, "user_id": 1}"#,
                "/meta/e",
                false,
                "7"
            ),
            r#"{"id": 18446744070733419103234, "user_id": 1,"meta":{"e":7}}"#
        );
        assert_eq!(
            merged(r#"{"user_id": 1, "x": 1e400}"#, "/e", false, r#"{"n":1}"#),
            r#"{"user_id": 1, "x": 1e400,"e":{"n":1}}"#
        );
        // An existing parent keeps its members; the last of repeated names is the one set.
        assert_eq!(
            merged(
                r#"{"m":{"k":0.10},"m":{"e":1, "z":2}}"#,
                "/m/e",
                false,
                "[3]"
            ),
            r#"{"m":{"k":0.10},"m":{"e":[3], "z":2}}"#
        );
        assert_eq!(
            merged(r#"{"m":{"k":1.0}}"#, "/m/a/b", false, "null"),
            r#"{"m":{"k":1.0,"a":{"b":null}}}"#
        );
        // The result is what `Pointer::set` gives, read back as values.
        for (record, into) in [
            (r#"{"a":{"b":{"c":1}},"d":[1]}"#, "/a/b/x"),
            (r#"{"a":{"b":{"c":1}}}"#, "/a/b"),
            (r#"{}"#, "/a/b/c"),
            (r#"{"a~b":{"c/d":1}}"#, "/a~0b/c~1d"),
        ] {
            let p = Pointer::parse(into).unwrap();
            let mut want: Value = serde_json::from_str(record).unwrap();
            p.set(&mut want, serde_json::json!({"r": 2})).unwrap();
            let got: Value =
                serde_json::from_str(&merged(record, into, false, r#"{"r":2}"#)).unwrap();
            assert_eq!(got, want, "{record} at {into}");
        }
        // A parent that is not an object (refused at ingest): the record passes unchanged.
        assert_eq!(merged(r#"{"m":5}"#, "/m/e", false, "1"), r#"{"m":5}"#);
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("[1]"), "an array");
        assert_eq!(type_name("null"), "null");
        assert_eq!(type_name("-1.5"), "a number");
    }
}
