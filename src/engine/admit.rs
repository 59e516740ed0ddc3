//! Per-record validation at ingest: is it an object, does it have a bindable key, a usable
//! id, a place to merge the result? Pure, so the 422 rules are unit-tested directly.
//! Works on the record's JSON text (see `raw`): only the fields it needs are decoded.

use std::sync::Arc;

use serde_json::Value;

use super::hash::partition_of;
pub use crate::json::canonical_key;
use crate::json::raw;
use crate::pointer::Pointer;
use crate::record::Record;
use crate::settings::Settings;

/// One bad record, reported in the problem's `errors` list.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Position of the record in the request (0-based; NDJSON: order of non-empty lines).
    pub index: usize,
    /// JSON pointer, within the record, of the offending field ("" = the record itself).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// serde_json's message without its line/column suffix (the pointer says where).
fn unescape_error(e: &serde_json::Error) -> String {
    let m = e.to_string();
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

/// Generated ids start with this; a client id may not (so the two can never collide).
pub const GENERATED_ID_PREFIX: &str = "sluice:";

/// A record that passed validation, routed to its partition: the service's one record
/// type, with its id still empty when the client gave none (the ingress generates it).
pub type Admitted = Record;

/// The compiled record rules: which pointers matter, how many partitions there are, and
/// the lookup backend's own check of a record (CQL binds).
#[derive(Clone)]
pub struct RecordRules {
    key: Pointer,
    id: Pointer,
    into: Pointer,
    /// `[lookup.steps.*]`: each step's `into` (each must be mergeable); empty in the
    /// single-lookup form.
    step_intos: Vec<(String, Pointer)>,
    partitions: u32,
    pipeline: Option<std::sync::Arc<super::pipeline::Pipeline>>,
}

/// The member `tokens[0]` among `top` (last duplicate wins), then the rest of the path.
fn find<'a>(top: &[(std::borrow::Cow<'a, str>, &'a str)], tokens: &[String]) -> Option<&'a str> {
    let (first, rest) = tokens.split_first()?;
    let v = top
        .iter()
        .rev()
        .find(|(k, _)| k == first)
        .map(|(_, v)| *v)?;
    raw::get(v, rest)
}

impl RecordRules {
    /// Compile from validated settings (the pointers were checked there).
    pub fn from_settings(s: &Settings) -> Result<Self, crate::pointer::PointerError> {
        Ok(RecordRules {
            key: Pointer::parse(&s.pipeline.key)?,
            id: Pointer::parse(&s.pipeline.id)?,
            into: Pointer::parse(&s.lookup.into)?,
            step_intos: s
                .lookup
                .steps
                .iter()
                .map(|(name, step)| Ok((name.clone(), Pointer::parse(&step.into)?)))
                .collect::<Result<_, crate::pointer::PointerError>>()?,
            partitions: s.pipeline.partitions.clamp(1, u64::from(u32::MAX)) as u32,
            pipeline: None,
        })
    }

    /// Also ask each step's backend whether the record can be looked up (422 if not),
    /// for the steps whose binds all point into the record (the others bind against
    /// earlier results, checked when they are due).
    pub fn with_pipeline(mut self, pipeline: std::sync::Arc<super::pipeline::Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// Number of partitions records are spread over.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Validate record `index` (its JSON text) and route it; every problem it has is
    /// reported. The text is parsed once.
    pub fn admit(&self, index: usize, record: &str) -> Result<Admitted, Vec<FieldError>> {
        let err = |pointer: &str, message: String| FieldError {
            index,
            pointer: pointer.to_string(),
            message,
        };
        let top = match raw::members(record) {
            Ok(top) => top,
            Err(raw::NotObject::Other(kind)) => {
                return Err(vec![err(
                    "",
                    format!("a record must be a JSON object, got {kind}"),
                )]);
            }
            Err(raw::NotObject::Invalid(e)) => {
                return Err(vec![err("", format!("not valid JSON: {e}"))]);
            }
        };
        let mut errors = Vec::new();
        let key = match find(&top, self.key.tokens()) {
            None => {
                errors.push(err(self.key.as_str(), "the key is missing".into()));
                None
            }
            Some(v) => match serde_json::from_str::<Value>(v) {
                Ok(value) => match canonical_key(&value) {
                    Some(c) => Some((Box::<str>::from(v.trim()), c)),
                    None => {
                        errors.push(err(
                            self.key.as_str(),
                            format!(
                                "the key must be a string, number or boolean to look it up, got {}",
                                raw::type_name(v)
                            ),
                        ));
                        None
                    }
                },
                // Valid JSON the parser cannot represent: say what is wrong with it (a lone
                // surrogate escape in a string, a number beyond f64's range).
                Err(e) => {
                    errors.push(err(
                        self.key.as_str(),
                        format!(
                            "the key is {} that cannot be read: {}",
                            raw::type_name(v),
                            unescape_error(&e)
                        ),
                    ));
                    None
                }
            },
        };
        // The id is kept as its JSON text, exactly as sent: `5` and `"5"` stay different ids
        // and a number keeps every digit (README "The envelope").
        let id = match find(&top, self.id.tokens()).map(|v| (v, serde_json::from_str::<Value>(v))) {
            None | Some((_, Ok(Value::Null))) => None,
            Some((_, Ok(Value::String(s)))) if s.starts_with(GENERATED_ID_PREFIX) => {
                errors.push(err(
                    self.id.as_str(),
                    format!(
                        "ids starting with `{GENERATED_ID_PREFIX}` are reserved for the ids sluice generates"
                    ),
                ));
                None
            }
            Some((v, Ok(Value::String(s)))) if !s.is_empty() => Some(Arc::<str>::from(v.trim())),
            Some((v, Ok(Value::Number(_)))) => Some(Arc::<str>::from(v.trim())),
            // Valid JSON beyond f64's range (`1e400`): still a number, kept as written.
            Some((v, Err(_))) if raw::type_name(v) == "a number" => {
                Some(Arc::<str>::from(v.trim()))
            }
            Some((v, _)) => {
                let got = if v.trim() == "\"\"" {
                    "an empty string"
                } else {
                    raw::type_name(v)
                };
                errors.push(err(
                    self.id.as_str(),
                    format!("the id must be a non-empty string or a number, got {got}"),
                ));
                None
            }
        };
        let splice = if self.step_intos.is_empty() {
            match merge_target_fits(&self.into, &top) {
                Ok(splice) => splice,
                Err(NotAnObject(at)) => {
                    errors.push(err(
                        self.into.as_str(),
                        format!(
                            "cannot merge the lookup result at {}: {at} is not an object",
                            self.into.as_str()
                        ),
                    ));
                    false
                }
            }
        } else {
            // Appended in one pass when every step merges at a new top-level member.
            let mut all_top = true;
            for (step, into) in &self.step_intos {
                all_top &= matches!(merge_target_fits(into, &top), Ok(true));
                if let Err(NotAnObject(at)) = merge_target_fits(into, &top) {
                    errors.push(err(
                        into.as_str(),
                        format!(
                            "step {step}: cannot merge the result at {}: {at} is not an object",
                            into.as_str()
                        ),
                    ));
                }
            }
            all_top
        };
        if errors.is_empty()
            && let Some(p) = &self.pipeline
        {
            let graph = p.graph();
            for (i, lookup) in p.lookups().iter().enumerate() {
                if graph.reads_results(i) {
                    continue;
                }
                if let Err((pointer, message)) = lookup.check(record) {
                    errors.push(err(&pointer, format!("{}{message}", p.label(i))));
                }
            }
        }
        match key {
            Some((key, canonical)) if errors.is_empty() => {
                let partition = partition_of(&canonical, self.partitions);
                Ok(Record {
                    partition,
                    seq: 0,
                    accepted_ms: 0,
                    first_attempt_ms: 0,
                    attempts: 0,
                    splice,
                    id: id.unwrap_or_else(|| Arc::from("")),
                    key: Arc::from(key),
                    canonical: Arc::from(canonical),
                    text: Arc::from(raw::to_line(record)),
                    decided: None,
                    steps: Vec::new(),
                })
            }
            _ => Err(errors),
        }
    }
}

/// Whether a result can be merged at `into`: `Ok(true)` when it can be appended as a new
/// top-level member, `Ok(false)` when it needs the slow merge, and an error naming the
/// prefix of the path that holds a non-object.
fn merge_target_fits(
    into: &Pointer,
    top: &[(std::borrow::Cow<'_, str>, &str)],
) -> Result<bool, NotAnObject> {
    {
        let tokens = into.tokens();
        if tokens.len() == 1 {
            return Ok(!top.iter().any(|(k, _)| k == &tokens[0]));
        }
        for depth in 1..tokens.len() {
            match find(top, &tokens[..depth]) {
                None => return Ok(false),
                Some(v) if v.trim_start().starts_with('{') => continue,
                Some(_) => {
                    return Err(NotAnObject(
                        tokens[..depth]
                            .iter()
                            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
                            .collect(),
                    ));
                }
            }
        }
        Ok(false)
    }
}

/// A prefix of `lookup.into` (as a JSON pointer) holds a value that is not an object, so
/// the lookup result cannot be merged below it.
struct NotAnObject(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RecordRules {
        RecordRules::from_settings(&Settings::defaults()).unwrap()
    }

    fn raw(s: &str) -> &str {
        s
    }

    #[test]
    fn a_good_record_is_routed_by_its_key() {
        let a = rules()
            .admit(0, raw(r#"{"id": "r-1", "user_id": "u1"}"#))
            .unwrap();
        assert_eq!(&*a.id, "\"r-1\"");
        assert_eq!(&*a.canonical, "u1");
        assert_eq!(&*a.key, "\"u1\"");
        assert!(a.splice);
        assert_eq!(a.partition, partition_of("u1", 4));
        let b = rules()
            .admit(0, raw(r#"{"id": 7, "user_id": 42, "enrichment": 1}"#))
            .unwrap();
        assert_eq!(&*b.id, "7");
        // Kept exactly as sent: every digit, and a number is not a string.
        let c = rules()
            .admit(0, raw(r#"{"id": 18446744073709551617, "user_id": 1}"#))
            .unwrap();
        assert_eq!(&*c.id, "18446744073709551617");
        let e = rules()
            .admit(0, raw(r#"{"id": "sluice:p0-1", "user_id": 1}"#))
            .unwrap_err();
        assert!(e[0].message.contains("reserved"), "{}", e[0].message);
        assert_eq!(&*b.canonical, "42");
        assert!(!b.splice, "an existing member is replaced by the slow path");
    }

    #[test]
    fn bad_records_name_the_pointer() {
        let r = rules();
        let e = r.admit(3, raw("[1]")).unwrap_err();
        assert_eq!(e[0].index, 3);
        assert_eq!(e[0].pointer, "");
        assert!(e[0].message.contains("an array"));
        let e = r.admit(0, raw(r#"{"id": "x"}"#)).unwrap_err();
        assert_eq!(e[0].pointer, "/user_id");
        assert!(e[0].message.contains("missing"));
        let e = r
            .admit(0, raw(r#"{"user_id": {"a": 1}, "id": []}"#))
            .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].pointer, "/id");
        let e = r
            .admit(0, raw(r#"{"user_id": "u", "id": ""}"#))
            .unwrap_err();
        assert!(e[0].message.contains("empty string"));
        let e = r.admit(0, raw(r#"{"user_id": tru}"#)).unwrap_err();
        assert!(
            e[0].message.starts_with("not valid JSON"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn nested_into_under_a_scalar_is_refused() {
        let mut s = Settings::defaults();
        s.lookup.into = "/meta/enrichment".into();
        let r = RecordRules::from_settings(&s).unwrap();
        let e = r
            .admit(0, raw(r#"{"user_id": "u", "meta": 1}"#))
            .unwrap_err();
        assert_eq!(e[0].pointer, "/meta/enrichment");
        assert!(
            e[0].message.contains("/meta is not an object"),
            "{}",
            e[0].message
        );
        assert!(r.admit(0, raw(r#"{"user_id": "u"}"#)).is_ok());
        assert!(
            r.admit(0, raw(r#"{"user_id": "u", "meta": {"x": 1}}"#))
                .is_ok()
        );
    }

    #[test]
    fn nested_keys_are_found() {
        let mut s = Settings::defaults();
        s.pipeline.key = "/user/id".into();
        let r = RecordRules::from_settings(&s).unwrap();
        let a = r.admit(0, raw(r#"{"user": {"id": true}}"#)).unwrap();
        assert_eq!(&*a.canonical, "true");
    }

    #[test]
    fn a_key_the_parser_cannot_represent_says_what_is_wrong() {
        let e = rules()
            .admit(0, raw(r#"{"id": "k", "user_id": "\ud800"}"#))
            .unwrap_err();
        assert!(
            e[0].message
                .starts_with("the key is a string that cannot be read: "),
            "{}",
            e[0].message
        );
        let e = rules()
            .admit(0, raw(r#"{"id": "k", "user_id": 1e400}"#))
            .unwrap_err();
        assert!(
            e[0].message.contains("number out of range"),
            "{}",
            e[0].message
        );
    }
}
