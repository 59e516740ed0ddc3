//! RFC 6901 JSON pointers, parsed once at start so the hot path only walks tokens.

use serde_json::{Map, Value};

/// Why a pointer string is not a valid RFC 6901 pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("a JSON pointer must be empty or start with '/', got `{0}`")]
    NoLeadingSlash(String),
    #[error("bad escape in JSON pointer `{0}` ('~' must be followed by 0 or 1)")]
    BadEscape(String),
}

/// Why a value cannot be placed at a pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot set {pointer}: {at} is not an object")]
pub struct SetError {
    /// The pointer being set.
    pub pointer: String,
    /// The prefix that holds a non-object.
    pub at: String,
}

/// A parsed JSON pointer: its source text and unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parse `""` (the whole document) or `/a/b~1c`.
    pub fn parse(text: &str) -> Result<Pointer, PointerError> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_string()));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut tok = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => tok.push('~'),
                        Some('1') => tok.push('/'),
                        _ => return Err(PointerError::BadEscape(text.to_string())),
                    }
                } else {
                    tok.push(c);
                }
            }
            tokens.push(tok);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The value at this pointer, if any (array indices are decimal tokens).
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut cur = root;
        for tok in &self.tokens {
            cur = match cur {
                Value::Object(m) => m.get(tok)?,
                Value::Array(a) => a.get(tok.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Can `set` succeed on this record? (Checked at ingest so merge never fails later.)
    pub fn can_set(&self, root: &Value) -> Result<(), SetError> {
        let mut cur = root;
        for (i, tok) in self.tokens.iter().enumerate() {
            match cur {
                Value::Object(m) => match m.get(tok) {
                    Some(next) if i + 1 < self.tokens.len() => cur = next,
                    _ => return Ok(()),
                },
                _ => return Err(self.set_error(i)),
            }
        }
        Ok(())
    }

    /// Place `value` at this pointer, creating intermediate objects as needed.
    pub fn set(&self, root: &mut Value, value: Value) -> Result<(), SetError> {
        let Some((last, parents)) = self.tokens.split_last() else {
            *root = value;
            return Ok(());
        };
        let mut cur = root;
        for (i, tok) in parents.iter().enumerate() {
            let Value::Object(m) = cur else {
                return Err(self.set_error(i));
            };
            cur = m
                .entry(tok.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        match cur {
            Value::Object(m) => {
                m.insert(last.clone(), value);
                Ok(())
            }
            _ => Err(self.set_error(parents.len())),
        }
    }

    fn set_error(&self, depth: usize) -> SetError {
        let at = self.tokens[..depth]
            .iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect::<String>();
        SetError {
            pointer: self.text.clone(),
            at: if at.is_empty() {
                "the record".into()
            } else {
                at
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_unescapes() {
        let p = Pointer::parse("/a~1b/c~0d").unwrap();
        assert_eq!(p.get(&json!({"a/b": {"c~d": 5}})), Some(&json!(5)));
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert_eq!(Pointer::parse("").unwrap().get(&json!(3)), Some(&json!(3)));
    }

    #[test]
    fn get_walks_arrays() {
        let p = Pointer::parse("/xs/1").unwrap();
        assert_eq!(p.get(&json!({"xs": [1, 2]})), Some(&json!(2)));
        assert_eq!(p.get(&json!({"xs": [1]})), None);
    }

    #[test]
    fn set_creates_parents_and_refuses_non_objects() {
        let p = Pointer::parse("/e/x").unwrap();
        let mut v = json!({"id": 1});
        p.set(&mut v, json!("y")).unwrap();
        assert_eq!(v, json!({"id": 1, "e": {"x": "y"}}));
        let mut bad = json!({"e": 3});
        assert!(p.can_set(&bad).is_err());
        let err = p.set(&mut bad, json!(1)).unwrap_err();
        assert_eq!(err.at, "/e");
        assert!(p.can_set(&json!({"e": {"x": 1}})).is_ok());
    }
}
