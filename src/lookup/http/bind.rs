//! Reading an `http` step's bind values out of a record's text: each bind must be a string,
//! a number or a boolean. The typed values key the step's cache and its coalescing (a string
//! `"1"` and the number `1` are different keys), fill the URL's placeholders and the POST body.

use crate::json::raw;
use crate::pointer::Pointer;

/// Why a record's value cannot be bound: `pointer`, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct BindError {
    pub pointer: String,
    pub message: String,
}

/// One bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    /// Compact JSON text (strings re-escaped, so equal strings have equal text).
    json: String,
    /// What a URL placeholder shows: a string's contents, other values' JSON text.
    text: String,
}

/// The bind values of one lookup, in the order of `binds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    values: Vec<Value>,
}

impl Bound {
    /// Read every bind of `record` (a valid JSON text).
    pub fn read(binds: &[Pointer], record: &str) -> Result<Bound, BindError> {
        let values = binds
            .iter()
            .map(|p| {
                let fail = |message: String| BindError {
                    pointer: p.as_str().to_string(),
                    message,
                };
                let text = raw::get(record, p.tokens())
                    .ok_or_else(|| fail(format!("missing; {NEEDS}")))?
                    .trim();
                match text.as_bytes().first() {
                    Some(b'"') => {
                        let s: String = serde_json::from_str(text)
                            .map_err(|e| fail(format!("not a JSON string: {e}")))?;
                        let json = serde_json::Value::String(s.clone()).to_string();
                        Ok(Value { json, text: s })
                    }
                    Some(b't' | b'f' | b'-' | b'0'..=b'9') => Ok(Value {
                        json: text.to_string(),
                        text: text.to_string(),
                    }),
                    _ => Err(fail(format!("is {}; {NEEDS}", raw::type_name(text)))),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Bound { values })
    }

    /// Bind `i`'s placeholder text.
    pub fn text(&self, i: usize) -> &str {
        self.values.get(i).map_or("", |v| v.text.as_str())
    }

    /// The values as a JSON array, `[b0, b1, ...]`.
    pub fn json_array(&self) -> String {
        let mut out = String::from("[");
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&v.json);
        }
        out.push(']');
        out
    }

    /// The cache and coalescing key: the typed values, length-prefixed.
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in &self.values {
            out.extend_from_slice(&(v.json.len() as u64).to_le_bytes());
            out.extend_from_slice(v.json.as_bytes());
        }
        out
    }
}

const NEEDS: &str = "an http lookup binds a string, a number or a boolean";
