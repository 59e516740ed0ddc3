//! JSON helpers shared by the engine, the lookups and the sinks: a leaf module (it imports
//! nothing of the engine), so every component can use it without depending on the engine.

pub mod raw;

use serde_json::Value;

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
