//! Per-record validation at ingest: is it an object, does it have a bindable key, a usable
//! id, a place to merge the result? Pure, so the 422 rules are unit-tested directly.

use std::sync::Arc;

use serde_json::Value;

use super::hash::partition_of;
use crate::pointer::Pointer;
use crate::settings::Settings;

/// One bad record, reported in the problem's `errors` list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldError {
    /// Position of the record in the request (0-based; NDJSON: line order of non-empty lines).
    pub index: usize,
    /// JSON pointer, within the record, of the offending field ("" = the record itself).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// A record that passed validation, routed to its partition.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The client's id, when the record has one.
    pub id: Option<Arc<str>>,
    /// The key as it appears in the record (echoed in the envelope).
    pub key: Value,
    /// The key's canonical text: the lookup key and the input of the partition hash.
    pub canonical: Arc<str>,
    /// `hash(canonical) % partitions`.
    pub partition: u32,
    /// The record itself.
    pub record: Value,
}

/// The compiled record rules: which pointers matter and how many partitions there are.
#[derive(Debug, Clone)]
pub struct RecordRules {
    key: Pointer,
    id: Pointer,
    into: Pointer,
    partitions: u32,
}

/// The canonical text of a key value, or `None` when the type cannot be a lookup key.
/// Strings are taken as they are, numbers by their JSON text, booleans as true/false.
pub fn canonical_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl RecordRules {
    /// Compile from validated settings (the pointers were checked there).
    pub fn from_settings(s: &Settings) -> Result<Self, crate::pointer::PointerError> {
        Ok(RecordRules {
            key: Pointer::parse(&s.pipeline.key)?,
            id: Pointer::parse(&s.pipeline.id)?,
            into: Pointer::parse(&s.lookup.into)?,
            partitions: s.pipeline.partitions.clamp(1, u64::from(u32::MAX)) as u32,
        })
    }

    /// The pointer where lookup results are merged.
    pub fn into(&self) -> &Pointer {
        &self.into
    }

    /// Number of partitions records are spread over.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Validate record `index` and route it; every problem it has is reported.
    pub fn admit(&self, index: usize, record: Value) -> Result<Admitted, Vec<FieldError>> {
        let err = |pointer: &str, message: String| FieldError {
            index,
            pointer: pointer.to_string(),
            message,
        };
        if !record.is_object() {
            return Err(vec![err(
                "",
                format!("a record must be a JSON object, got {}", type_name(&record)),
            )]);
        }
        let mut errors = Vec::new();
        let key = match self.key.get(&record) {
            None => {
                errors.push(err(self.key.as_str(), "the key is missing".into()));
                None
            }
            Some(v) => match canonical_key(v) {
                Some(c) => Some((v.clone(), c)),
                None => {
                    errors.push(err(
                        self.key.as_str(),
                        format!(
                            "the key must be a string, number or boolean to look it up, got {}",
                            type_name(v)
                        ),
                    ));
                    None
                }
            },
        };
        let id = match self.id.get(&record) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(Arc::<str>::from(s.as_str())),
            Some(Value::Number(n)) => Some(Arc::<str>::from(n.to_string())),
            Some(other) => {
                errors.push(err(
                    self.id.as_str(),
                    format!(
                        "the id must be a non-empty string or a number, got {}",
                        if other.as_str() == Some("") {
                            "an empty string"
                        } else {
                            type_name(other)
                        }
                    ),
                ));
                None
            }
        };
        if let Err(e) = self.into.can_set(&record) {
            errors.push(err(self.into.as_str(), e.to_string()));
        }
        match key {
            Some((key, canonical)) if errors.is_empty() => {
                let partition = partition_of(&canonical, self.partitions);
                Ok(Admitted {
                    id,
                    key,
                    canonical: Arc::from(canonical),
                    partition,
                    record,
                })
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> RecordRules {
        RecordRules::from_settings(&Settings::defaults()).unwrap()
    }

    #[test]
    fn a_good_record_is_routed_by_its_key() {
        let a = rules()
            .admit(0, json!({"id": "r-1", "user_id": "u1"}))
            .unwrap();
        assert_eq!(a.id.as_deref(), Some("r-1"));
        assert_eq!(&*a.canonical, "u1");
        assert_eq!(a.partition, partition_of("u1", 4));
        let b = rules().admit(0, json!({"id": 7, "user_id": 42})).unwrap();
        assert_eq!(b.id.as_deref(), Some("7"));
        assert_eq!(&*b.canonical, "42");
    }

    #[test]
    fn bad_records_name_the_pointer() {
        let r = rules();
        let e = r.admit(3, json!([1])).unwrap_err();
        assert_eq!(e[0].index, 3);
        assert_eq!(e[0].pointer, "");
        let e = r.admit(0, json!({"id": "x"})).unwrap_err();
        assert_eq!(e[0].pointer, "/user_id");
        assert!(e[0].message.contains("missing"));
        let e = r
            .admit(0, json!({"user_id": {"a": 1}, "id": []}))
            .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].pointer, "/id");
        assert!(
            r.admit(0, json!({"user_id": "u", "enrichment": 5})).is_ok(),
            "a top-level `into` always fits an object"
        );
    }

    #[test]
    fn nested_into_under_a_scalar_is_refused() {
        let mut s = Settings::defaults();
        s.lookup.into = "/meta/enrichment".into();
        let r = RecordRules::from_settings(&s).unwrap();
        let e = r.admit(0, json!({"user_id": "u", "meta": 1})).unwrap_err();
        assert_eq!(e[0].pointer, "/meta/enrichment");
        assert!(r.admit(0, json!({"user_id": "u"})).is_ok());
    }
}
