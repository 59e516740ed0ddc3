//! Helpers shared by the fuzz targets in `fuzz_targets/` (see fuzz/README.md).
//!
//! - [`json`]: an independent, strict RFC 8259 validator, so the targets can check the
//!   service's JSON splitting against a second opinion instead of against itself.
//! - [`reseal`]: rewrites the CRC32C of every journal frame in a buffer, so the fuzzer's
//!   mutations reach the payload decoder instead of stopping at the checksum.
//! - [`Split`]: cuts one fuzz input into the parts a target needs.

/// Strict JSON (RFC 8259) validation, written independently of serde_json.
pub mod json {
    /// Deepest nesting checked; deeper texts are `Unknown` (serde_json stops at 128).
    pub const MAX_DEPTH: usize = 100;

    /// What the validator says about a text.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Verdict {
        /// One JSON value, optionally surrounded by JSON whitespace.
        Valid,
        /// Not a JSON text.
        Invalid,
        /// Nested deeper than [`MAX_DEPTH`]: no opinion.
        Unknown,
    }

    /// JSON's whitespace (space, tab, line feed, carriage return) — not Unicode's.
    pub fn is_ws(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    }

    /// `text` without leading and trailing JSON whitespace.
    pub fn trim(text: &str) -> &str {
        text.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8))
    }

    /// Is `text` exactly one JSON value (with optional surrounding whitespace)?
    pub fn verdict(text: &str) -> Verdict {
        let mut p = Parser {
            b: text.as_bytes(),
            i: 0,
        };
        p.ws();
        match p.value(0) {
            Err(v) => v,
            Ok(()) => {
                p.ws();
                if p.i == p.b.len() {
                    Verdict::Valid
                } else {
                    Verdict::Invalid
                }
            }
        }
    }

    /// If `text` is a JSON array, the number of its items (`None`: not an array, invalid,
    /// or too deep to judge).
    pub fn array_len(text: &str) -> Option<usize> {
        let mut p = Parser {
            b: text.as_bytes(),
            i: 0,
        };
        p.ws();
        if p.peek() != Some(b'[') {
            return None;
        }
        p.i += 1;
        p.ws();
        let mut n = 0;
        if p.peek() == Some(b']') {
            p.i += 1;
        } else {
            loop {
                p.ws();
                p.value(1).ok()?;
                n += 1;
                p.ws();
                match p.next() {
                    Some(b',') => continue,
                    Some(b']') => break,
                    _ => return None,
                }
            }
        }
        p.ws();
        (p.i == p.b.len()).then_some(n)
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    type Step = Result<(), Verdict>;

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }
        fn next(&mut self) -> Option<u8> {
            let c = self.peek()?;
            self.i += 1;
            Some(c)
        }
        fn ws(&mut self) {
            while self.peek().is_some_and(is_ws) {
                self.i += 1;
            }
        }
        fn lit(&mut self, word: &[u8]) -> Step {
            if self.b[self.i..].starts_with(word) {
                self.i += word.len();
                Ok(())
            } else {
                Err(Verdict::Invalid)
            }
        }
        fn value(&mut self, depth: usize) -> Step {
            match self.peek().ok_or(Verdict::Invalid)? {
                b'{' | b'[' if depth >= MAX_DEPTH => Err(Verdict::Unknown),
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.ws();
                        if self.peek() != Some(b'"') {
                            return Err(Verdict::Invalid);
                        }
                        self.string()?;
                        self.ws();
                        if self.next() != Some(b':') {
                            return Err(Verdict::Invalid);
                        }
                        self.ws();
                        self.value(depth + 1)?;
                        self.ws();
                        match self.next() {
                            Some(b',') => continue,
                            Some(b'}') => return Ok(()),
                            _ => return Err(Verdict::Invalid),
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.ws();
                        self.value(depth + 1)?;
                        self.ws();
                        match self.next() {
                            Some(b',') => continue,
                            Some(b']') => return Ok(()),
                            _ => return Err(Verdict::Invalid),
                        }
                    }
                }
                b'"' => self.string(),
                b't' => self.lit(b"true"),
                b'f' => self.lit(b"false"),
                b'n' => self.lit(b"null"),
                b'-' | b'0'..=b'9' => self.number(),
                _ => Err(Verdict::Invalid),
            }
        }
        fn digits(&mut self) -> usize {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            self.i - start
        }
        fn number(&mut self) -> Step {
            if self.peek() == Some(b'-') {
                self.i += 1;
            }
            match self.peek() {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return Err(Verdict::Invalid),
            }
            if self.peek() == Some(b'.') {
                self.i += 1;
                if self.digits() == 0 {
                    return Err(Verdict::Invalid);
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return Err(Verdict::Invalid);
                }
            }
            Ok(())
        }
        fn string(&mut self) -> Step {
            self.i += 1; // the opening quote
            loop {
                match self.next().ok_or(Verdict::Invalid)? {
                    b'"' => return Ok(()),
                    b'\\' => match self.next().ok_or(Verdict::Invalid)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.next().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    return Err(Verdict::Invalid);
                                }
                            }
                        }
                        _ => return Err(Verdict::Invalid),
                    },
                    0x00..=0x1f => return Err(Verdict::Invalid),
                    _ => {}
                }
            }
        }
    }
}

/// Journal frame layout: `[len u32 LE][crc32c u32 LE][payload]`; a payload starting with
/// this tag holds further frames (a batch).
const HEADER: usize = 8;
const TAG_BATCH: u8 = 15;

/// Rewrite the checksum of every frame in `buf` whose announced length fits, walking the
/// frames in order and into batches (inner frames first, so the outer checksum covers
/// the fixed inner ones). Frames that do not fit are left alone.
pub fn reseal(buf: &mut [u8]) {
    reseal_at(buf, 0);
}

fn reseal_at(buf: &mut [u8], depth: usize) {
    let mut pos = 0;
    while pos + HEADER <= buf.len() {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let Some(end) = (pos + HEADER)
            .checked_add(len)
            .filter(|end| *end <= buf.len())
        else {
            return;
        };
        let payload = &mut buf[pos + HEADER..end];
        if depth < 4 && payload.first() == Some(&TAG_BATCH) {
            reseal_at(&mut payload[1..], depth + 1);
        }
        let crc = crc32c::crc32c(&buf[pos + HEADER..end]);
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Cuts a fuzz input into parts: leading control bytes, then pieces separated by a byte.
pub struct Split<'a> {
    rest: &'a [u8],
}

impl<'a> Split<'a> {
    /// Start at the beginning of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Split { rest: data }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// The bytes up to the next `sep` (or the end), consuming the separator.
    pub fn until(&mut self, sep: u8) -> &'a [u8] {
        match self.rest.iter().position(|b| *b == sep) {
            Some(i) => {
                let (part, rest) = self.rest.split_at(i);
                self.rest = &rest[1..];
                part
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// Everything not consumed yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::json::{Verdict, array_len, verdict};

    #[test]
    fn the_validator_agrees_with_the_rfc_on_small_cases() {
        for ok in [
            "0", "-0", "1.5e+3", "\"a\\u00e9\"", " [ ] ", "{\"a\":[1,{}]}", "null", "true",
        ] {
            assert_eq!(verdict(ok), Verdict::Valid, "{ok}");
        }
        for bad in [
            "", "01", "1.", "-", "+1", "[1,]", "{\"a\"}", "\"\\x\"", "nul", "1 2", "\u{a0}1",
            "\"\t\"",
        ] {
            assert_eq!(verdict(bad), Verdict::Invalid, "{bad}");
        }
        assert_eq!(array_len("[1, [2], {}]"), Some(3));
        assert_eq!(array_len("[]"), Some(0));
        assert_eq!(array_len("[1,]"), None);
    }
}
