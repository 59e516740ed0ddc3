//! RFC 6901 JSON pointers: `Pointer::parse`, `get`, `can_set`, `set`.
//!
//! Input: `pointer text 0x00 document (JSON) 0x00 value (JSON)`; a missing or unreadable
//! document or value is replaced by a fixed one.
//!
//! Invariants:
//! - `parse` accepts exactly `""` and texts starting with `/` whose every `~` is followed
//!   by `0` or `1`; `as_str` is the text, parses to the same pointer, and escaping the
//!   tokens again rebuilds it; there is one token per `/`.
//! - `get` agrees with serde_json's own RFC 6901 `Value::pointer` (array indices written
//!   canonically; see fuzz/README.md for the `+1`/`01` difference).
//! - `can_set` and `set` agree: both succeed or both fail with the same error; after a
//!   successful `set`, `get` returns the value set, and `can_set` still holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use sluice::pointer::{Pointer, PointerError};
use sluice_fuzz::Split;

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// serde_json reads an array index only in RFC 6901's form (no sign, no leading zero);
/// Rust's `usize` parsing also takes `+1` and `01`.
fn canonical_indices(p: &Pointer) -> bool {
    p.tokens().iter().all(|t| {
        !(t.starts_with('+') || (t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit())))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Split::new(data);
    let Ok(text) = std::str::from_utf8(input.until(0)) else {
        return;
    };
    let root: Value = serde_json::from_slice(input.until(0))
        .unwrap_or_else(|_| json!({"a": {"b": [1, {"c": 2}]}, "x~y": {"p/q": null}, "": 0}));
    let value: Value = serde_json::from_slice(input.rest()).unwrap_or_else(|_| json!({"set": true}));

    let p = match Pointer::parse(text) {
        Err(PointerError::NoLeadingSlash(t)) => {
            assert_eq!(t, text);
            assert!(!text.is_empty() && !text.starts_with('/'));
            return;
        }
        Err(PointerError::BadEscape(t)) => {
            assert_eq!(t, text);
            assert!(text.starts_with('/'));
            let bad = text
                .match_indices('~')
                .any(|(i, _)| !matches!(text.as_bytes().get(i + 1), Some(b'0' | b'1')));
            assert!(bad, "refused a pointer whose escapes are all fine: {text:?}");
            return;
        }
        Ok(p) => p,
    };
    assert_eq!(p.as_str(), text);
    assert_eq!(Pointer::parse(p.as_str()).as_ref(), Ok(&p));
    let rebuilt: String = p.tokens().iter().map(|t| format!("/{}", escape(t))).collect();
    assert_eq!(rebuilt, text, "escaping the tokens again does not rebuild the pointer");
    assert_eq!(p.tokens().len(), text.matches('/').count());

    if canonical_indices(&p) {
        assert_eq!(p.get(&root), root.pointer(text), "get differs from serde_json's pointer");
    }

    let can = p.can_set(&root);
    let mut after = root.clone();
    let set = p.set(&mut after, value.clone());
    assert_eq!(can, set, "can_set and set disagree");
    if set.is_ok() {
        assert_eq!(p.get(&after), Some(&value), "get does not return what set placed");
        assert_eq!(p.can_set(&after), Ok(()));
    } else {
        assert_eq!(after, root, "a failed set changed the document");
    }
});
