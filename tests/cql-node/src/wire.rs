//! CQL native protocol v4 framing and the handful of body encodings the node needs.
//! Pure byte code: no sockets here.

/// Request opcodes the node understands.
pub mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const OPTIONS: u8 = 0x05;
    pub const SUPPORTED: u8 = 0x06;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
    pub const REGISTER: u8 = 0x0B;
    pub const BATCH: u8 = 0x0D;
}

/// A CQL column type the node can store and describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Ascii,
    BigInt,
    Boolean,
    Decimal,
    Double,
    Float,
    Int,
    Timestamp,
    Uuid,
    Text,
    TimeUuid,
    Inet,
    SmallInt,
    TinyInt,
    /// `set<text>` (system tables' `tokens`).
    SetOfText,
}

impl ColType {
    /// Parse a CQL type name.
    pub fn parse(s: &str) -> Option<ColType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "ascii" => ColType::Ascii,
            "bigint" => ColType::BigInt,
            "boolean" => ColType::Boolean,
            "decimal" => ColType::Decimal,
            "double" => ColType::Double,
            "float" => ColType::Float,
            "int" => ColType::Int,
            "timestamp" => ColType::Timestamp,
            "uuid" => ColType::Uuid,
            "text" | "varchar" => ColType::Text,
            "timeuuid" => ColType::TimeUuid,
            "inet" => ColType::Inet,
            "smallint" => ColType::SmallInt,
            "tinyint" => ColType::TinyInt,
            "set<text>" => ColType::SetOfText,
            _ => return None,
        })
    }

    fn write_option(self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            ColType::Ascii => 0x0001,
            ColType::BigInt => 0x0002,
            ColType::Boolean => 0x0004,
            ColType::Decimal => 0x0006,
            ColType::Double => 0x0007,
            ColType::Float => 0x0008,
            ColType::Int => 0x0009,
            ColType::Timestamp => 0x000B,
            ColType::Uuid => 0x000C,
            ColType::Text => 0x000D,
            ColType::TimeUuid => 0x000F,
            ColType::Inet => 0x0010,
            ColType::SmallInt => 0x0013,
            ColType::TinyInt => 0x0014,
            ColType::SetOfText => {
                put_short(out, 0x0022);
                put_short(out, 0x000D);
                return;
            }
        };
        put_short(out, id);
    }
}

/// A frame's header fields the node cares about.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub flags: u8,
    pub stream: i16,
    pub opcode: u8,
    pub length: usize,
}

/// Parse a 9-byte v4 request header.
pub fn parse_header(b: &[u8; 9]) -> Result<Header, String> {
    if b[0] & 0x7f != 4 {
        return Err(format!("unsupported protocol version {}", b[0] & 0x7f));
    }
    let length = i32::from_be_bytes([b[5], b[6], b[7], b[8]]);
    if !(0..=256 << 20).contains(&length) {
        return Err(format!("bad frame length {length}"));
    }
    Ok(Header {
        flags: b[1],
        stream: i16::from_be_bytes([b[2], b[3]]),
        opcode: b[4],
        length: length as usize,
    })
}

/// A whole response frame.
pub fn frame(stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(0x84);
    out.push(0);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(opcode);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn put_short(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_int(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_short(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}
pub fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_int(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_int(out, -1),
    }
}

/// A cursor over a request body.
pub struct Body<'a> {
    pub buf: &'a [u8],
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("request body too short".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn short(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn int(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn long_string(&mut self) -> Result<String, String> {
        let n = self.int()?;
        let b = self.take(n.max(0) as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string not UTF-8".into())
    }
    pub fn string(&mut self) -> Result<String, String> {
        let n = self.short()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string not UTF-8".into())
    }
    pub fn short_bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.short()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// `[bytes]`: `None` for null (-1) and unset (-2).
    pub fn bytes(&mut self) -> Result<Option<Vec<u8>>, String> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }

    /// Query parameters of QUERY/EXECUTE: the bound values (names are not supported).
    pub fn query_params(&mut self) -> Result<Vec<Option<Vec<u8>>>, String> {
        let _consistency = self.short()?;
        let flags = self.byte()?;
        let mut values = Vec::new();
        if flags & 0x01 != 0 {
            let n = self.short()?;
            for _ in 0..n {
                if flags & 0x40 != 0 {
                    let _name = self.string()?;
                }
                values.push(self.bytes()?);
            }
        }
        Ok(values)
    }
}

/// A column of a result or bind spec.
pub struct ColSpec<'a> {
    pub keyspace: &'a str,
    pub table: &'a str,
    pub name: &'a str,
    pub ty: ColType,
}

fn put_col_specs(out: &mut Vec<u8>, cols: &[ColSpec<'_>]) {
    for c in cols {
        put_string(out, c.keyspace);
        put_string(out, c.table);
        put_string(out, c.name);
        c.ty.write_option(out);
    }
}

/// RESULT Void.
pub fn result_void() -> Vec<u8> {
    let mut b = Vec::new();
    put_int(&mut b, 0x0001);
    b
}

/// RESULT Set_keyspace.
pub fn result_set_keyspace(ks: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_int(&mut b, 0x0003);
    put_string(&mut b, ks);
    b
}

fn put_rows_metadata(b: &mut Vec<u8>, cols: &[ColSpec<'_>]) {
    put_int(b, 0);
    put_int(b, cols.len() as i32);
    put_col_specs(b, cols);
}

/// RESULT Rows with full metadata and every row on one page.
pub fn result_rows(cols: &[ColSpec<'_>], rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut b = Vec::new();
    put_int(&mut b, 0x0002);
    put_rows_metadata(&mut b, cols);
    put_int(&mut b, rows.len() as i32);
    for r in rows {
        for cell in r {
            put_bytes(&mut b, cell.as_deref());
        }
    }
    b
}

/// RESULT Prepared: id, bind metadata (with partition key indexes), result metadata.
pub fn result_prepared(
    id: &[u8],
    binds: &[ColSpec<'_>],
    pk: &[u16],
    results: &[ColSpec<'_>],
) -> Vec<u8> {
    let mut b = Vec::new();
    put_int(&mut b, 0x0004);
    put_short(&mut b, id.len() as u16);
    b.extend_from_slice(id);
    put_int(&mut b, 0);
    put_int(&mut b, binds.len() as i32);
    put_int(&mut b, pk.len() as i32);
    for i in pk {
        put_short(&mut b, *i);
    }
    put_col_specs(&mut b, binds);
    put_rows_metadata(&mut b, results);
    b
}

/// Error kinds the node can answer with (fault injection and real errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ServerError,
    Overloaded,
    Unavailable,
    ReadTimeout,
    WriteTimeout,
    Syntax,
    Invalid,
    Unprepared,
}

impl ErrorKind {
    /// Parse `read_timeout`, `overloaded`, …
    pub fn parse(s: &str) -> Option<ErrorKind> {
        Some(match s {
            "server_error" => ErrorKind::ServerError,
            "overloaded" => ErrorKind::Overloaded,
            "unavailable" => ErrorKind::Unavailable,
            "read_timeout" => ErrorKind::ReadTimeout,
            "write_timeout" => ErrorKind::WriteTimeout,
            "syntax" => ErrorKind::Syntax,
            "invalid" => ErrorKind::Invalid,
            _ => return None,
        })
    }
}

/// An ERROR body.
pub fn error(kind: ErrorKind, message: &str, extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    let code = match kind {
        ErrorKind::ServerError => 0x0000,
        ErrorKind::Unavailable => 0x1000,
        ErrorKind::Overloaded => 0x1001,
        ErrorKind::WriteTimeout => 0x1100,
        ErrorKind::ReadTimeout => 0x1200,
        ErrorKind::Syntax => 0x2000,
        ErrorKind::Invalid => 0x2200,
        ErrorKind::Unprepared => 0x2500,
    };
    put_int(&mut b, code);
    put_string(&mut b, message);
    match kind {
        ErrorKind::Unavailable => {
            put_short(&mut b, 0x0001);
            put_int(&mut b, 1);
            put_int(&mut b, 0);
        }
        ErrorKind::ReadTimeout => {
            put_short(&mut b, 0x0001);
            put_int(&mut b, 0);
            put_int(&mut b, 1);
            b.push(0);
        }
        ErrorKind::WriteTimeout => {
            put_short(&mut b, 0x0001);
            put_int(&mut b, 0);
            put_int(&mut b, 1);
            put_string(&mut b, "SIMPLE");
        }
        ErrorKind::Unprepared => {
            put_short(&mut b, extra.len() as u16);
            b.extend_from_slice(extra);
        }
        _ => {}
    }
    b
}

/// SUPPORTED with an empty-ish map (the node presents itself as plain Cassandra).
pub fn supported() -> Vec<u8> {
    let mut b = Vec::new();
    put_short(&mut b, 2);
    put_string(&mut b, "CQL_VERSION");
    put_short(&mut b, 1);
    put_string(&mut b, "3.4.5");
    put_string(&mut b, "COMPRESSION");
    put_short(&mut b, 0);
    b
}
