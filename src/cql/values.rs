//! JSON values to CQL values (binds) and back (rows). Pure conversions, unit-tested here;
//! used by the CQL lookup (binds, 422 at ingest) and the CQL sink (column values).

use scylla::frame::response::result::{ColumnType, NativeType};
use scylla::value::{CqlTimestamp, CqlValue};
use serde_json::Value;

/// A JSON value that does not fit its CQL type: the lookup answers 422 (or fails the
/// record), the sink rejects the envelope to the dead letter, with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot bind {value} as CQL {ty}")]
pub struct BindError {
    /// The value's JSON text, shortened to 40 characters.
    pub value: String,
    /// The CQL type's name.
    pub ty: &'static str,
}

/// The CQL types a JSON value can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindType {
    Text,
    Ascii,
    Int,
    BigInt,
    SmallInt,
    TinyInt,
    Boolean,
    Uuid,
    TimeUuid,
    Double,
    Float,
    Decimal,
    Timestamp,
}

impl BindType {
    /// The bind type of a prepared statement's column, if sluice can bind it.
    pub fn from_column(t: &ColumnType<'_>) -> Option<BindType> {
        let ColumnType::Native(n) = t else {
            return None;
        };
        Some(match n {
            NativeType::Text => BindType::Text,
            NativeType::Ascii => BindType::Ascii,
            NativeType::Int => BindType::Int,
            NativeType::BigInt => BindType::BigInt,
            NativeType::SmallInt => BindType::SmallInt,
            NativeType::TinyInt => BindType::TinyInt,
            NativeType::Boolean => BindType::Boolean,
            NativeType::Uuid => BindType::Uuid,
            NativeType::Timeuuid => BindType::TimeUuid,
            NativeType::Double => BindType::Double,
            NativeType::Float => BindType::Float,
            NativeType::Decimal => BindType::Decimal,
            NativeType::Timestamp => BindType::Timestamp,
            _ => return None,
        })
    }

    /// The CQL name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BindType::Text => "text",
            BindType::Ascii => "ascii",
            BindType::Int => "int",
            BindType::BigInt => "bigint",
            BindType::SmallInt => "smallint",
            BindType::TinyInt => "tinyint",
            BindType::Boolean => "boolean",
            BindType::Uuid => "uuid",
            BindType::TimeUuid => "timeuuid",
            BindType::Double => "double",
            BindType::Float => "float",
            BindType::Decimal => "decimal",
            BindType::Timestamp => "timestamp",
        }
    }

    /// Convert a JSON value, or say why it cannot be bound.
    pub fn bind(self, v: &Value) -> Result<CqlValue, BindError> {
        let bad = || BindError {
            value: short(v),
            ty: self.name(),
        };
        let int = |lo: i64, hi: i64| -> Result<i64, BindError> {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(bad)?;
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        Ok(match self {
            BindType::Text => match v {
                Value::String(s) => CqlValue::Text(s.clone()),
                Value::Number(_) | Value::Bool(_) => CqlValue::Text(v.to_string()),
                _ => return Err(bad()),
            },
            BindType::Ascii => {
                let s = v.as_str().ok_or_else(bad)?;
                if !s.is_ascii() {
                    return Err(bad());
                }
                CqlValue::Ascii(s.to_string())
            }
            BindType::Int => CqlValue::Int(int(i32::MIN.into(), i32::MAX.into())? as i32),
            BindType::BigInt => CqlValue::BigInt(int(i64::MIN, i64::MAX)?),
            BindType::SmallInt => CqlValue::SmallInt(int(i16::MIN.into(), i16::MAX.into())? as i16),
            BindType::TinyInt => CqlValue::TinyInt(int(i8::MIN.into(), i8::MAX.into())? as i8),
            BindType::Boolean => CqlValue::Boolean(v.as_bool().ok_or_else(bad)?),
            BindType::Uuid | BindType::TimeUuid => {
                let u = v
                    .as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .ok_or_else(bad)?;
                if self == BindType::Uuid {
                    CqlValue::Uuid(u)
                } else {
                    CqlValue::Timeuuid(u.into())
                }
            }
            BindType::Double => CqlValue::Double(number(v).ok_or_else(bad)?),
            BindType::Float => CqlValue::Float(number(v).ok_or_else(bad)? as f32),
            BindType::Decimal => {
                let s = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(bad()),
                };
                decimal(&s).ok_or_else(bad)?
            }
            BindType::Timestamp => {
                CqlValue::Timestamp(CqlTimestamp(timestamp_ms(v).ok_or_else(bad)?))
            }
        })
    }
}

/// A value's JSON text, cut after 40 characters (never inside one).
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn decimal(s: &str) -> Option<CqlValue> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let unscaled: i128 = format!("{}{int}{frac}", if neg { "-" } else { "" })
        .parse()
        .ok()?;
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    Some(CqlValue::Decimal(
        scylla::value::CqlDecimal::from_signed_be_bytes_slice_and_exponent(
            &bytes[start..],
            frac.len() as i32,
        ),
    ))
}

/// Epoch milliseconds from a number, or from an RFC 3339 string `YYYY-MM-DDTHH:MM:SS[.fff]Z`
/// (or with a `±HH:MM` offset).
fn timestamp_ms(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &frac[digits.len()..];
        millis = format!("{digits:0<3}")[..3].parse().ok()?;
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + millis)
}

/// The coalescing and cache key of a lookup's bound values: per value a type tag and its
/// JSON text, length-prefixed — so values that differ only in type (`"1"` and `1`) never
/// share a key, and no two lists of values encode alike.
pub fn key_bytes<'a>(values: impl IntoIterator<Item = Option<&'a CqlValue>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for v in values {
        let (tag, text): (u8, String) = match v {
            None => (0, String::new()),
            Some(v) => {
                let tag = match v {
                    CqlValue::Ascii(_) => 1,
                    CqlValue::Text(_) => 2,
                    CqlValue::Boolean(_) => 3,
                    CqlValue::Int(_) => 4,
                    CqlValue::BigInt(_) => 5,
                    CqlValue::SmallInt(_) => 6,
                    CqlValue::TinyInt(_) => 7,
                    CqlValue::Double(_) => 8,
                    CqlValue::Float(_) => 9,
                    CqlValue::Uuid(_) => 10,
                    CqlValue::Timeuuid(_) => 11,
                    CqlValue::Timestamp(_) => 12,
                    CqlValue::Decimal(_) => 13,
                    _ => 255,
                };
                let text = if tag == 255 {
                    format!("{v:?}")
                } else {
                    to_json(v).to_string()
                };
                (tag, text)
            }
        };
        out.push(tag);
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// A CQL value as JSON.
pub fn to_json(v: &CqlValue) -> Value {
    match v {
        CqlValue::Ascii(s) | CqlValue::Text(s) => Value::String(s.clone()),
        CqlValue::Boolean(b) => Value::Bool(*b),
        CqlValue::Int(n) => (*n).into(),
        CqlValue::BigInt(n) => (*n).into(),
        CqlValue::SmallInt(n) => (*n).into(),
        CqlValue::TinyInt(n) => (*n).into(),
        CqlValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        CqlValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        CqlValue::Timestamp(t) => t.0.into(),
        CqlValue::Uuid(u) => Value::String(u.to_string()),
        CqlValue::Timeuuid(u) => Value::String(u.to_string()),
        CqlValue::Inet(ip) => Value::String(ip.to_string()),
        CqlValue::List(items) | CqlValue::Set(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        CqlValue::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            let mut n: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for b in bytes {
                n = (n << 8) | i128::from(*b);
            }
            let digits = n.unsigned_abs().to_string();
            let scale = scale.max(0) as usize;
            let sign = if n < 0 { "-" } else { "" };
            Value::String(if scale == 0 {
                format!("{sign}{digits}")
            } else {
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (i, f) = padded.split_at(padded.len() - scale);
                format!("{sign}{i}.{f}")
            })
        }
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_long_value_is_shortened_in_the_message_between_characters() {
        // 39 ASCII bytes (with the quote), then two-byte characters: byte 40 is inside one.
        let v = json!(format!("{}{}", "a".repeat(38), "é".repeat(10)));
        let e = BindType::Int.bind(&v).unwrap_err();
        assert_eq!(e.value, format!("\"{}{}…", "a".repeat(38), "é"));
        assert_eq!(
            BindType::Int
                .bind(&json!("a".repeat(38)))
                .unwrap_err()
                .value
                .chars()
                .count(),
            40
        );
    }

    #[test]
    fn binds_convert_or_explain() {
        assert_eq!(BindType::Int.bind(&json!(7)), Ok(CqlValue::Int(7)));
        assert_eq!(
            BindType::Int.bind(&json!(1u64 << 40)).unwrap_err(),
            BindError {
                value: "1099511627776".into(),
                ty: "int"
            }
        );
        assert_eq!(
            BindType::Int.bind(&json!("x")).unwrap_err().to_string(),
            "cannot bind \"x\" as CQL int"
        );
        assert_eq!(
            BindType::TinyInt.bind(&json!("12")),
            Ok(CqlValue::TinyInt(12))
        );
        assert!(BindType::Boolean.bind(&json!("yes")).is_err());
        assert_eq!(
            BindType::Text.bind(&json!(5)),
            Ok(CqlValue::Text("5".into()))
        );
        assert!(BindType::Uuid.bind(&json!("nope")).is_err());
        assert!(
            BindType::Uuid
                .bind(&json!("5fc5a6f0-96f1-4a6e-9a4c-3f1f3f0b0c01"))
                .is_ok()
        );
        assert_eq!(
            BindType::Timestamp.bind(&json!("2026-11-22T10:00:00.5Z")),
            Ok(CqlValue::Timestamp(CqlTimestamp(1_795_341_600_500)))
        );
        assert_eq!(
            BindType::Timestamp.bind(&json!(42)),
            Ok(CqlValue::Timestamp(CqlTimestamp(42)))
        );
        let d = BindType::Decimal.bind(&json!("-12.50")).unwrap();
        assert_eq!(to_json(&d), json!("-12.50"));
        assert!(BindType::Decimal.bind(&json!("1e5")).is_err());
    }

    #[test]
    fn keys_that_differ_only_in_type_never_meet() {
        let key = |vs: &[Option<CqlValue>]| key_bytes(vs.iter().map(Option::as_ref));
        let text = key(&[Some(CqlValue::Text("1".into()))]);
        let int = key(&[Some(CqlValue::Int(1))]);
        let big = key(&[Some(CqlValue::BigInt(1))]);
        assert_ne!(text, int);
        assert_ne!(int, big);
        assert_eq!(text, key(&[Some(CqlValue::Text("1".into()))]));
        assert_ne!(key(&[None]), key(&[Some(CqlValue::Text(String::new()))]));
        // Two values never encode like one.
        assert_ne!(
            key(&[
                Some(CqlValue::Text("a".into())),
                Some(CqlValue::Text("b".into()))
            ]),
            key(&[Some(CqlValue::Text("a\u{2}\u{1}\0\0\0b".into()))])
        );
    }
}
