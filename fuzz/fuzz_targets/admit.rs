//! Record admission: `RecordRules::admit` (the 422 rules, key, id, partition, merge
//! target) on arbitrary record text, under key/id/merge-target pointers and partition
//! counts picked by the input.
//!
//! Input: `[key][id][into][partitions][record text…]` (the first four bytes index the
//! tables below).
//!
//! Invariants, for an admitted record:
//! - its partition is `partition_of(canonical key)` and below the partition count;
//! - its text is the input on one line (no CR/LF, no surrounding whitespace), still JSON,
//!   and admitting that text again gives the very same record;
//! - where serde_json can read the record: the key, canonical key and id are the values
//!   at the configured pointers, `splice` says whether the merge target is a new
//!   top-level member, the merge target can be set, and merging a result into the text
//!   (`json::raw::write_merged`) gives JSON with the result at the merge target and the
//!   rest unchanged.
//!
//! For a refused record: at least one problem, each naming the record's index and one of
//! the configured pointers (or the record itself).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::engine::admit::{GENERATED_ID_PREFIX, RecordRules, canonical_key};
use sluice::engine::hash::partition_of;
use sluice::json::raw;
use sluice::pointer::Pointer;
use sluice::settings::Settings;
use sluice_fuzz::Split;
use sluice_fuzz::json::{self, Verdict};

const KEYS: [&str; 8] = ["/user_id", "/user/id", "/k", "/a~1b", "/0", "/xs/1", "/", "/k/~0"];
const IDS: [&str; 6] = ["/id", "/meta/id", "/k", "/user_id", "/i", "/xs/0"];
const INTOS: [&str; 7] = ["/enrichment", "/meta/enrichment", "/k", "/user_id", "/a/b/c", "/", "/id"];
const PARTITIONS: [u64; 6] = [1, 2, 4, 7, 256, 65_536];

/// Does `value` survive serde_json's write-then-read unchanged?
fn round_trips(value: &Value) -> bool {
    serde_json::to_string(value)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| &v == value)
}

fn defaults() -> &'static Settings {
    static DEFAULTS: OnceLock<Settings> = OnceLock::new();
    DEFAULTS.get_or_init(Settings::defaults)
}

fn pick<T: Copy>(table: &[T], b: u8) -> T {
    table[usize::from(b) % table.len()]
}

fuzz_target!(|data: &[u8]| {
    let mut input = Split::new(data);
    let mut settings = defaults().clone();
    settings.pipeline.key = pick(&KEYS, input.byte()).into();
    settings.pipeline.id = pick(&IDS, input.byte()).into();
    settings.lookup.into = pick(&INTOS, input.byte()).into();
    settings.pipeline.partitions = pick(&PARTITIONS, input.byte());
    let Ok(record) = std::str::from_utf8(input.rest()) else {
        return;
    };
    let rules = RecordRules::from_settings(&settings).expect("the pointers in the tables are valid");
    let key = Pointer::parse(&settings.pipeline.key).unwrap();
    let id = Pointer::parse(&settings.pipeline.id).unwrap();
    let into = Pointer::parse(&settings.lookup.into).unwrap();
    let index = record.len() % 7;

    let admitted = match rules.admit(index, record) {
        Ok(a) => a,
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason");
            for p in &problems {
                assert_eq!(p.index, index);
                assert!(
                    ["", key.as_str(), id.as_str(), into.as_str()].contains(&p.pointer.as_str()),
                    "problem at an unexpected pointer: {p:?}"
                );
                assert!(!p.message.is_empty());
            }
            return;
        }
    };

    let partitions = rules.partitions();
    assert!(admitted.partition < partitions);
    assert_eq!(admitted.partition, partition_of(&admitted.canonical, partitions));
    let text = &*admitted.text;
    assert!(!text.contains(['\n', '\r']), "the record's line holds a line break");
    assert_eq!(json::trim(text), text);
    assert_ne!(json::verdict(text), Verdict::Invalid, "admitted text is not JSON: {text:?}");
    assert!(!admitted.id.starts_with(&format!("\"{GENERATED_ID_PREFIX}")));

    // The one-line text is admitted again as the same record.
    let again = rules
        .admit(index, text)
        .unwrap_or_else(|e| panic!("its own line is refused: {e:?}"));
    assert_eq!(again, admitted, "admitting the line again differs");

    // Emission: the result lands at the merge target, whatever the record holds.
    let result = r#"{"fuzz":[1,"two"]}"#;
    let mut merged = Vec::new();
    raw::write_merged(&mut merged, text, &into, admitted.splice, result);
    let merged_text = std::str::from_utf8(&merged).expect("the merged record is UTF-8");
    assert_ne!(json::verdict(merged_text), Verdict::Invalid, "the merged record is not JSON: {merged_text}");
    let readable = serde_json::from_str::<Value>(record);
    assert_eq!(
        raw::get(merged_text, into.tokens()),
        Some(result),
        "the lookup result is not at {} in {merged_text}",
        into.as_str()
    );

    // The fields against serde_json's reading of the record (when it can read it: numbers
    // beyond f64 and lone surrogates are valid JSON it refuses).
    let Ok(value) = readable else {
        return;
    };
    let line_value: Value = serde_json::from_str(text).expect("the line reads like the record");
    assert_eq!(line_value, value, "the line means something else than the record");
    let key_value = key.get(&value).expect("an admitted record has its key");
    let key_text: Value = serde_json::from_str(&admitted.key).expect("the key's text is JSON");
    assert_eq!(&key_text, key_value);
    assert_eq!(canonical_key(key_value).as_deref(), Some(&*admitted.canonical));
    match id.get(&value) {
        None | Some(Value::Null) => assert_eq!(&*admitted.id, ""),
        Some(v) => {
            let id_text: Value = serde_json::from_str(&admitted.id).expect("the id's text is JSON");
            assert_eq!(&id_text, v);
        }
    }
    if let [member] = into.tokens() {
        let present = value.as_object().is_some_and(|m| m.contains_key(member));
        assert_eq!(admitted.splice, !present);
    } else {
        assert!(!admitted.splice);
    }
    into.can_set(&value)
        .unwrap_or_else(|e| panic!("admitted but the result cannot be merged: {e}"));

    // ... and nothing else changes.
    if !round_trips(&value) {
        // A number serde_json cannot hold exactly: the merged text keeps it as sent (unit
        // test `json::raw::tests::a_merge_keeps_every_other_byte_of_the_record`), so only
        // values that survive serde_json are compared as values.
        return;
    }
    let merged: Value = serde_json::from_str(merged_text)
        .unwrap_or_else(|e| panic!("the merged record is not JSON ({e}): {merged_text}"));
    let mut expected = value.clone();
    into.set(&mut expected, serde_json::from_str(result).unwrap())
        .expect("can_set said yes");
    assert_eq!(merged, expected, "the merge changed more than the merge target");
});
