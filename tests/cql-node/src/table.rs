//! In-memory tables: rows of serialized CQL cells keyed by the serialized key, loaded from
//! JSONL, and the statements the node answers (single-table SELECT by key, INSERT).

use std::collections::HashMap;

use serde_json::Value;

use crate::wire::ColType;

/// One table: typed columns, the key column, rows by serialized key.
#[derive(Debug, Clone)]
pub struct Table {
    pub keyspace: String,
    pub name: String,
    pub columns: Vec<(String, ColType)>,
    pub key: usize,
    pub rows: HashMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
}

impl Table {
    /// Parse `ks.name(col type, col type, …, PRIMARY KEY (col))` or with `col type PRIMARY KEY`.
    pub fn from_schema(schema: &str) -> Result<Table, String> {
        let open = schema
            .find('(')
            .ok_or("schema: expected `name(columns…)`")?;
        let close = schema.rfind(')').ok_or("schema: missing `)`")?;
        let full = schema[..open].trim();
        let (keyspace, name) = full.split_once('.').unwrap_or(("sluice_demo", full));
        let mut columns = Vec::new();
        let mut key = None;
        for part in split_top(&schema[open + 1..close]) {
            let words: Vec<&str> = part.split_whitespace().collect();
            if words.len() >= 2 && words[0].eq_ignore_ascii_case("primary") {
                let k = part[part.find('(').ok_or("PRIMARY KEY (col)")? + 1..]
                    .trim_end_matches(')')
                    .trim()
                    .to_string();
                key = Some(k);
                continue;
            }
            let [col, ty, rest @ ..] = words.as_slice() else {
                return Err(format!("schema: bad column `{part}`"));
            };
            let ty = ColType::parse(ty).ok_or(format!("schema: unsupported type `{ty}`"))?;
            if rest.len() == 2 && rest[0].eq_ignore_ascii_case("primary") {
                key = Some(col.to_string());
            }
            columns.push((col.to_string(), ty));
        }
        let key = key.ok_or("schema: no PRIMARY KEY")?;
        let key = columns
            .iter()
            .position(|(c, _)| *c == key)
            .ok_or(format!("schema: key `{key}` is not a column"))?;
        Ok(Table {
            keyspace: keyspace.to_string(),
            name: name.to_string(),
            columns,
            key,
            rows: HashMap::new(),
        })
    }

    /// Load JSONL rows (one object per line; missing columns are null).
    pub fn load_jsonl(&mut self, text: &str) -> Result<usize, String> {
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            let row: Vec<Option<Vec<u8>>> = self
                .columns
                .iter()
                .map(|(c, ty)| v.get(c).and_then(|x| encode(*ty, x)))
                .collect();
            let Some(k) = row[self.key].clone() else {
                return Err(format!("line {}: no key", i + 1));
            };
            self.rows.insert(k, row);
            n += 1;
        }
        Ok(n)
    }

    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|(c, _)| c.eq_ignore_ascii_case(name))
    }
}

fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Serialize a JSON value as a CQL cell of type `ty` (None when it does not fit).
pub fn encode(ty: ColType, v: &Value) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    Some(match ty {
        ColType::Text | ColType::Ascii => v.as_str()?.as_bytes().to_vec(),
        ColType::BigInt | ColType::Timestamp => v.as_i64()?.to_be_bytes().to_vec(),
        ColType::Int => i32::try_from(v.as_i64()?).ok()?.to_be_bytes().to_vec(),
        ColType::SmallInt => i16::try_from(v.as_i64()?).ok()?.to_be_bytes().to_vec(),
        ColType::TinyInt => i8::try_from(v.as_i64()?).ok()?.to_be_bytes().to_vec(),
        ColType::Boolean => vec![u8::from(v.as_bool()?)],
        ColType::Double => v.as_f64()?.to_be_bytes().to_vec(),
        ColType::Float => (v.as_f64()? as f32).to_be_bytes().to_vec(),
        ColType::Uuid | ColType::TimeUuid => {
            let hex: String = v.as_str()?.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 {
                return None;
            }
            (0..16)
                .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()?
        }
        ColType::Decimal => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
            let unscaled: i64 = format!("{int}{frac}").parse().ok()?;
            let mut out = (frac.len() as i32).to_be_bytes().to_vec();
            out.extend_from_slice(&varint(unscaled));
            out
        }
        ColType::Inet => {
            let ip: std::net::IpAddr = v.as_str()?.parse().ok()?;
            match ip {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            }
        }
        ColType::SetOfText => {
            let items = v.as_array()?;
            let mut out = (items.len() as i32).to_be_bytes().to_vec();
            for it in items {
                let s = it.as_str()?;
                out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out
        }
    })
}

fn varint(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// A statement the node can run.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Use(String),
    /// `SELECT cols FROM table [WHERE key = ? | WHERE key = 'literal']`.
    Select {
        table: String,
        columns: Vec<String>,
        by_bind: bool,
    },
    Insert {
        table: String,
        columns: Vec<String>,
    },
}

/// Parse the small CQL subset the node supports.
pub fn parse(query: &str) -> Result<Statement, String> {
    let q = query.trim().trim_end_matches(';').trim();
    let lower = q.to_ascii_lowercase();
    let unquote = |s: &str| s.trim().trim_matches('"').to_string();
    if let Some(rest) = lower.strip_prefix("use ") {
        return Ok(Statement::Use(unquote(&q[q.len() - rest.len()..])));
    }
    if lower.starts_with("select ") {
        let from = lower.find(" from ").ok_or("SELECT without FROM")?;
        let cols = &q[7..from];
        let after = &q[from + 6..];
        let lower_after = after.to_ascii_lowercase();
        let (table, cond) = match lower_after.find(" where ") {
            Some(w) => (&after[..w], Some(&after[w + 7..])),
            None => (after, None),
        };
        if lower_after.contains(" using ") || lower_after.contains(" limit ") && cond.is_none() {
            return Err(format!("unsupported SELECT: {q}"));
        }
        return Ok(Statement::Select {
            table: unquote(table.split_whitespace().next().unwrap_or("")),
            columns: cols.split(',').map(unquote).collect(),
            by_bind: cond.is_some_and(|c| c.contains('?')),
        });
    }
    if lower.starts_with("insert into ") {
        let open = q.find('(').ok_or("INSERT without columns")?;
        let close = q[open..].find(')').ok_or("INSERT without `)`")? + open;
        return Ok(Statement::Insert {
            table: unquote(&q[12..open]),
            columns: q[open + 1..close].split(',').map(unquote).collect(),
        });
    }
    Err(format!("the CQL test node does not support: {q}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_statements_and_values() {
        let t =
            Table::from_schema("sluice_demo.users(user_id text PRIMARY KEY, name text, age int)")
                .unwrap();
        assert_eq!(t.key, 0);
        assert_eq!(t.columns[2].1, ColType::Int);
        let t = Table::from_schema("ks.t(a int, b set<text>, PRIMARY KEY (a))").unwrap();
        assert_eq!((t.keyspace.as_str(), t.key), ("ks", 0));
        assert_eq!(
            parse("SELECT name, tier FROM users WHERE user_id = ?").unwrap(),
            Statement::Select {
                table: "users".into(),
                columns: vec!["name".into(), "tier".into()],
                by_bind: true
            }
        );
        assert_eq!(parse("USE \"ks\"").unwrap(), Statement::Use("ks".into()));
        assert!(matches!(
            parse("INSERT INTO ks.out (id, body) VALUES (?, ?)").unwrap(),
            Statement::Insert { .. }
        ));
        assert!(parse("DELETE FROM t").is_err());
        assert_eq!(encode(ColType::Int, &json!(5)), Some(vec![0, 0, 0, 5]));
        assert_eq!(
            encode(ColType::Decimal, &json!("-1.25")),
            Some(vec![0, 0, 0, 2, 0x83])
        );
        assert_eq!(encode(ColType::Int, &json!("x")), None);
    }
}
