//! The URL template of an `http` step: literal text with `{N}` placeholders, each replaced
//! by bind `N` percent-encoded (README "Pipelines"). Pure, parsed once at start.

use super::bind::Bound;

/// Why a URL template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` or `}` that is not part of a `{N}` placeholder.
    #[error(
        "`{0}` has a brace that is not a {{N}} placeholder (write a literal brace as %7B / %7D)"
    )]
    Brace(String),
    /// `{N}` names a bind that is not configured.
    #[error("`{url}` uses {{{index}}} but the step has {binds} bind(s)")]
    BeyondBinds {
        url: String,
        index: usize,
        binds: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Bind(usize),
}

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parse `text`, refusing placeholders beyond `binds`.
    pub fn parse(text: &str, binds: usize) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let close = after.find('}');
            let index = match (rest.as_bytes()[i], close) {
                (b'{', Some(end))
                    if end > 0 && after[..end].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    after[..end].parse::<usize>().ok()
                }
                _ => None,
            };
            let (Some(index), Some(end)) = (index, close) else {
                return Err(TemplateError::Brace(text.to_string()));
            };
            if index >= binds {
                return Err(TemplateError::BeyondBinds {
                    url: text.to_string(),
                    index,
                    binds,
                });
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Bind(index));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template has any placeholder (a batched step's URL must not).
    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Bind(_)))
    }

    /// The URL for these bound values: each placeholder becomes its value's text (a string's
    /// contents, other JSON as its text), percent-encoded.
    pub fn render(&self, bound: &Bound) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Bind(i) => encode_into(&mut out, bound.text(*i)),
            }
        }
        out
    }

    /// The URL with every placeholder replaced by `0`: checks the template's shape and names
    /// the host to probe.
    pub fn sample(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Bind(_) => out.push('0'),
            }
        }
        out
    }
}

/// Append `text` percent-encoded: every byte but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so a value can sit in a path segment or a query value and a
/// `/`, `?`, `&` or space in it stays data.
pub fn encode_into(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}
