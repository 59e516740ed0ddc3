//! Journal and snapshot entries and their framing: `[len u32 LE][crc32c u32 LE][payload]`.
//!
//! Pure encoding/decoding, so every truncation and every flipped byte can be tested: a
//! frame is trusted only if its length fits the data and its CRC32C matches; the decoder
//! never panics on any input.
//!
//! A journal segment may begin with a format marker (tag 16, a `u32` version; see
//! `durability::versions`): none means version 1, and this build writes none.

use crate::envelope::OutcomeKind;
use crate::record::{Decided, Record};

/// Largest payload accepted when decoding; anything larger is corruption.
pub const MAX_PAYLOAD: usize = 64 << 20;
const HEADER: usize = 8;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A record was accepted (journaled before the 202 with `ack = "durable"`).
    Accepted(Record),
    /// The record entered the in-flight queue: its deadline runs from here.
    Started {
        partition: u32,
        seq: u64,
        first_attempt_ms: u64,
    },
    /// An attempt is starting; `attempts` counts it.
    Attempted {
        partition: u32,
        seq: u64,
        attempts: u32,
    },
    /// These records reached their sink, and the sinks are durable up to `offsets`.
    Committed {
        marks: Vec<(u32, u64)>,
        output: u64,
        dead_letter: u64,
    },
    /// Seqs below `upto` may have been handed out in `partition`: never reuse them.
    SeqLease { partition: u32, upto: u64 },
    /// Cluster: a record held here for a partition this node does not own, waiting to be
    /// forwarded to the owner. Its `seq` is a stage number (this node's own sequence per
    /// partition), not the partition's seq.
    Staged(Record),
    /// Cluster: staged records of `partition` numbered `from..upto` left this node (an
    /// owner accepted them, or they were staged again under new numbers).
    Forwarded {
        partition: u32,
        from: u64,
        upto: u64,
    },
    /// Cluster: these pending records were given away (staged for the new owner).
    Handed { marks: Vec<(u32, u64)> },
    /// Cluster: records staged by `source` for `partition` and numbered below `upto` are
    /// accepted here; a resend of them (the source crashed before it learned so) is dropped.
    Imported {
        source: String,
        partition: u32,
        upto: u64,
    },
    /// Cluster: stage numbers of `partition` below `upto` were used (snapshots keep the
    /// counter when nothing is staged).
    StageLease { partition: u32, upto: u64 },
    /// Cluster: staged records of `partition` numbered `from..upto` went to `node`, whose
    /// answer was lost: they stay parked here until that node says whether it has them.
    InDoubt {
        partition: u32,
        from: u64,
        upto: u64,
        node: String,
    },
    /// Cluster: from here on this node writes for `partition` under ownership `epoch`.
    Owned { partition: u32, epoch: u64 },
    /// The file sinks' committed lengths (in later `Committed` entries) are of these files,
    /// by (device, inode); `None` for a sink that is not a file. Written when the sinks are
    /// opened and whenever one is reopened (rotation), so a restore never cuts a file that
    /// replaced the committed one.
    SinkFiles {
        output: Option<(u64, u64)>,
        dead_letter: Option<(u64, u64)>,
    },
    /// The record's envelope is fixed (it is about to go to an at-least-once sink): from
    /// now on it is emitted as exactly this envelope.
    Decided {
        partition: u32,
        seq: u64,
        decided: Decided,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header or the announced length: a torn write.
    #[error("truncated frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    /// The checksum does not match: corruption.
    #[error("checksum mismatch")]
    Checksum,
    /// Length beyond `MAX_PAYLOAD`, unknown tag or malformed fields.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

const TAG_ACCEPTED: u8 = 1;
const TAG_STARTED: u8 = 2;
const TAG_ATTEMPTED: u8 = 3;
const TAG_COMMITTED: u8 = 4;
const TAG_LEASE: u8 = 5;
const TAG_STAGED: u8 = 6;
const TAG_FORWARDED: u8 = 7;
const TAG_HANDED: u8 = 8;
const TAG_IMPORTED: u8 = 9;
const TAG_OWNED: u8 = 10;
const TAG_STAGE_LEASE: u8 = 11;
const TAG_IN_DOUBT: u8 = 12;
const TAG_DECIDED: u8 = 13;
const TAG_SINK_FILES: u8 = 14;
/// A frame whose payload is further frames: all of them or none (one request's entries).
const TAG_BATCH: u8 = 15;
/// A segment's format marker: its version. Only as a segment's first frame, never an
/// [`Entry`]; its layout (`[len][crc][16][version u32 LE]`) stays the same in every version.
const TAG_FORMAT: u8 = 16;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Append an `Accepted` frame for `r` to `out` (snapshots write records this way without
/// copying them into an `Entry`).
pub fn encode_accepted(r: &Record, out: &mut Vec<u8>) {
    encode_record(TAG_ACCEPTED, r, out)
}

/// Append a `Staged` frame for `r` (see [`encode_accepted`]).
pub fn encode_staged(r: &Record, out: &mut Vec<u8>) {
    encode_record(TAG_STAGED, r, out)
}

fn encode_record(tag: u8, r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(tag);
    put_u32(out, r.partition);
    put_u64(out, r.seq);
    put_u64(out, r.accepted_ms);
    put_u64(out, r.first_attempt_ms);
    put_u32(out, r.attempts);
    out.push(u8::from(r.splice));
    put_str(out, &r.id);
    put_str(out, &r.key);
    put_str(out, &r.canonical);
    put_str(out, &r.text);
    // Optional trailer (frames without it decode as undecided).
    if let Some(d) = &r.decided {
        put_decided(out, d);
    }
    seal(out, start);
}

fn put_decided(out: &mut Vec<u8>, d: &Decided) {
    out.push(u8::from(d.dead_letter));
    out.push(d.outcome.index() as u8);
    put_str(out, &d.envelope);
}

fn seal(out: &mut [u8], start: usize) {
    let payload_len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Append `entry` as one frame to `out`.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    match entry {
        Entry::Accepted(r) => return encode_accepted(r, out),
        Entry::Staged(r) => return encode_staged(r, out),
        _ => {}
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    match entry {
        Entry::Accepted(_) | Entry::Staged(_) => {}
        Entry::Forwarded {
            partition,
            from,
            upto,
        } => {
            out.push(TAG_FORWARDED);
            put_u32(out, *partition);
            put_u64(out, *from);
            put_u64(out, *upto);
        }
        Entry::Handed { marks } => {
            out.push(TAG_HANDED);
            put_u32(out, marks.len() as u32);
            for (p, s) in marks {
                put_u32(out, *p);
                put_u64(out, *s);
            }
        }
        Entry::Imported {
            source,
            partition,
            upto,
        } => {
            out.push(TAG_IMPORTED);
            put_str(out, source);
            put_u32(out, *partition);
            put_u64(out, *upto);
        }
        Entry::InDoubt {
            partition,
            from,
            upto,
            node,
        } => {
            out.push(TAG_IN_DOUBT);
            put_u32(out, *partition);
            put_u64(out, *from);
            put_u64(out, *upto);
            put_str(out, node);
        }
        Entry::StageLease { partition, upto } => {
            out.push(TAG_STAGE_LEASE);
            put_u32(out, *partition);
            put_u64(out, *upto);
        }
        Entry::Owned { partition, epoch } => {
            out.push(TAG_OWNED);
            put_u32(out, *partition);
            put_u64(out, *epoch);
        }
        Entry::SinkFiles {
            output,
            dead_letter,
        } => {
            out.push(TAG_SINK_FILES);
            for id in [output, dead_letter] {
                match id {
                    Some((dev, ino)) => {
                        out.push(1);
                        put_u64(out, *dev);
                        put_u64(out, *ino);
                    }
                    None => out.push(0),
                }
            }
        }
        Entry::Decided {
            partition,
            seq,
            decided,
        } => {
            out.push(TAG_DECIDED);
            put_u32(out, *partition);
            put_u64(out, *seq);
            put_decided(out, decided);
        }
        Entry::Started {
            partition,
            seq,
            first_attempt_ms,
        } => {
            out.push(TAG_STARTED);
            put_u32(out, *partition);
            put_u64(out, *seq);
            put_u64(out, *first_attempt_ms);
        }
        Entry::Attempted {
            partition,
            seq,
            attempts,
        } => {
            out.push(TAG_ATTEMPTED);
            put_u32(out, *partition);
            put_u64(out, *seq);
            put_u32(out, *attempts);
        }
        Entry::Committed {
            marks,
            output,
            dead_letter,
        } => {
            out.push(TAG_COMMITTED);
            put_u64(out, *output);
            put_u64(out, *dead_letter);
            put_u32(out, marks.len() as u32);
            for (p, s) in marks {
                put_u32(out, *p);
                put_u64(out, *s);
            }
        }
        Entry::SeqLease { partition, upto } => {
            out.push(TAG_LEASE);
            put_u32(out, *partition);
            put_u64(out, *upto);
        }
    }
    seal(out, start);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(FrameError::Malformed("field past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn record(&mut self) -> Result<Record, FrameError> {
        Ok(Record {
            partition: self.u32()?,
            seq: self.u64()?,
            accepted_ms: self.u64()?,
            first_attempt_ms: self.u64()?,
            attempts: self.u32()?,
            splice: self.u8()? != 0,
            id: self.string()?.into(),
            key: self.string()?.into(),
            canonical: self.string()?.into(),
            text: self.string()?.into(),
            decided: if self.pos < self.buf.len() {
                Some(self.decided()?)
            } else {
                None
            },
        })
    }
    fn file_id(&mut self) -> Result<Option<(u64, u64)>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some((self.u64()?, self.u64()?))),
            _ => Err(FrameError::Malformed("bad file identity")),
        }
    }
    fn decided(&mut self) -> Result<Decided, FrameError> {
        let dead_letter = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err(FrameError::Malformed("bad route in a decided envelope")),
        };
        let outcome = OutcomeKind::from_index(self.u8()? as usize)
            .ok_or(FrameError::Malformed("bad outcome in a decided envelope"))?;
        Ok(Decided {
            dead_letter,
            outcome,
            envelope: self.string()?.into(),
        })
    }
    fn marks(&mut self, payload: usize) -> Result<Vec<(u32, u64)>, FrameError> {
        let n = self.u32()? as usize;
        if n > payload / 12 {
            return Err(FrameError::Malformed("mark count past the end"));
        }
        let mut marks = Vec::with_capacity(n);
        for _ in 0..n {
            marks.push((self.u32()?, self.u64()?));
        }
        Ok(marks)
    }
    fn string(&mut self) -> Result<String, FrameError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed("string not UTF-8"))
    }
}

/// Append a segment's format marker for `version` (the first frame of a segment).
pub fn encode_format(version: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(TAG_FORMAT);
    put_u32(out, version);
    seal(out, start);
}

/// The format version of the segment `buf` holds and where its entries start: the version
/// of a whole marker frame at its start, else 1 at 0 (segments of version 1 have none; a
/// damaged marker is left to the decoder to report, like any damaged frame).
pub fn segment_version(buf: &[u8]) -> (u32, usize) {
    const MARKER: usize = HEADER + 5;
    if buf.len() < MARKER || buf[HEADER] != TAG_FORMAT {
        return (1, 0);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len != MARKER - HEADER || crc32c::crc32c(&buf[HEADER..MARKER]) != crc {
        return (1, 0);
    }
    let v = &buf[HEADER + 1..MARKER];
    (u32::from_le_bytes([v[0], v[1], v[2], v[3]]), MARKER)
}

/// Decode the frame at the start of `buf`: the entry and the frame's total length.
pub fn decode(buf: &[u8]) -> Result<(Entry, usize), FrameError> {
    if buf.len() < HEADER {
        return Err(FrameError::Truncated {
            have: buf.len(),
            need: HEADER,
        });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_PAYLOAD {
        return Err(FrameError::Malformed("length over the limit"));
    }
    let total = HEADER + len;
    if buf.len() < total {
        return Err(FrameError::Truncated {
            have: buf.len(),
            need: total,
        });
    }
    let payload = &buf[HEADER..total];
    if crc32c::crc32c(payload) != crc {
        return Err(FrameError::Checksum);
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let entry = match r.u8()? {
        TAG_ACCEPTED => Entry::Accepted(r.record()?),
        TAG_STAGED => Entry::Staged(r.record()?),
        TAG_FORWARDED => Entry::Forwarded {
            partition: r.u32()?,
            from: r.u64()?,
            upto: r.u64()?,
        },
        TAG_HANDED => Entry::Handed {
            marks: r.marks(payload.len())?,
        },
        TAG_IMPORTED => Entry::Imported {
            source: r.string()?,
            partition: r.u32()?,
            upto: r.u64()?,
        },
        TAG_IN_DOUBT => Entry::InDoubt {
            partition: r.u32()?,
            from: r.u64()?,
            upto: r.u64()?,
            node: r.string()?,
        },
        TAG_STAGE_LEASE => Entry::StageLease {
            partition: r.u32()?,
            upto: r.u64()?,
        },
        TAG_OWNED => Entry::Owned {
            partition: r.u32()?,
            epoch: r.u64()?,
        },
        TAG_SINK_FILES => Entry::SinkFiles {
            output: r.file_id()?,
            dead_letter: r.file_id()?,
        },
        TAG_DECIDED => Entry::Decided {
            partition: r.u32()?,
            seq: r.u64()?,
            decided: r.decided()?,
        },
        TAG_STARTED => Entry::Started {
            partition: r.u32()?,
            seq: r.u64()?,
            first_attempt_ms: r.u64()?,
        },
        TAG_ATTEMPTED => Entry::Attempted {
            partition: r.u32()?,
            seq: r.u64()?,
            attempts: r.u32()?,
        },
        TAG_COMMITTED => {
            let output = r.u64()?;
            let dead_letter = r.u64()?;
            let marks = r.marks(payload.len())?;
            Entry::Committed {
                marks,
                output,
                dead_letter,
            }
        }
        TAG_LEASE => Entry::SeqLease {
            partition: r.u32()?,
            upto: r.u64()?,
        },
        TAG_FORMAT => {
            return Err(FrameError::Malformed(
                "format marker past a segment's start",
            ));
        }
        _ => return Err(FrameError::Malformed("unknown entry tag")),
    };
    if r.pos != payload.len() {
        return Err(FrameError::Malformed("trailing bytes in frame"));
    }
    Ok((entry, total))
}

/// Append `entries` as one atomic frame: a torn or corrupt write loses all of them, never
/// a part (one request's entries, so a request is replayed whole or not at all). A single
/// entry is written as its own frame.
pub fn encode_batch(entries: &[Entry], out: &mut Vec<u8>) {
    if entries.len() <= 1 {
        for e in entries {
            encode(e, out);
        }
        return;
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.push(TAG_BATCH);
    for e in entries {
        encode(e, out);
    }
    seal(out, start);
}

/// The batch frame at the start of `buf`, if it is one: its inner frames and its length.
/// Batches do not nest: a batch inside a batch is malformed (so the depth of the
/// decoding is bounded whatever the bytes).
fn decode_batch(buf: &[u8]) -> Option<Result<(Vec<Entry>, usize), FrameError>> {
    if buf.len() <= HEADER {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    // The tag is the payload's first byte: an empty payload has none (the byte after the
    // header then belongs to the next frame).
    if len == 0 || buf[HEADER] != TAG_BATCH {
        return None;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_PAYLOAD {
        return Some(Err(FrameError::Malformed("length over the limit")));
    }
    let total = HEADER + len;
    if buf.len() < total {
        return Some(Err(FrameError::Truncated {
            have: buf.len(),
            need: total,
        }));
    }
    let payload = &buf[HEADER..total];
    if crc32c::crc32c(payload) != crc {
        return Some(Err(FrameError::Checksum));
    }
    let (entries, err) = decode_frames(&payload[1..], false);
    Some(match err {
        None => Ok((entries, total)),
        Some(_) => Err(FrameError::Malformed("bad frame inside a batch")),
    })
}

/// Decode frames from the start of `buf` until its end or the first bad frame. Returns
/// the entries and, if it stopped early, the offset of the bad frame and why.
pub fn decode_all(buf: &[u8]) -> (Vec<Entry>, Option<(usize, FrameError)>) {
    decode_frames(buf, true)
}

/// [`decode_all`]; `batches`: whether batch frames may appear (not inside a batch).
fn decode_frames(buf: &[u8], batches: bool) -> (Vec<Entry>, Option<(usize, FrameError)>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        if batches && let Some(batch) = decode_batch(&buf[pos..]) {
            match batch {
                Ok((mut entries, n)) => {
                    out.append(&mut entries);
                    pos += n;
                }
                Err(err) => return (out, Some((pos, err))),
            }
            continue;
        }
        match decode(&buf[pos..]) {
            Ok((e, n)) => {
                out.push(e);
                pos += n;
            }
            Err(err) => return (out, Some((pos, err))),
        }
    }
    (out, None)
}

/// An `Accepted` entry for tests of the journal's users.
#[cfg(test)]
pub(crate) fn test_accepted(partition: u32, seq: u64) -> Entry {
    Entry::Accepted(Record {
        partition,
        seq,
        accepted_ms: 1,
        first_attempt_ms: 0,
        attempts: 0,
        splice: true,
        id: format!("r{seq}").into(),
        key: "\"k\"".into(),
        canonical: "k".into(),
        text: "{\"user_id\":\"k\"}".into(),
        decided: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::SeqLease {
                partition: 1,
                upto: 1 << 20,
            },
            Entry::Accepted(Record {
                partition: 1,
                seq: 7,
                accepted_ms: 1_700_000_000_000,
                first_attempt_ms: 0,
                attempts: 0,
                splice: true,
                id: "r-7".into(),
                key: "\"u1\"".into(),
                canonical: "u1".into(),
                text: r#"{"id":"r-7","user_id":"u1","s":"é"}"#.into(),
                decided: None,
            }),
            Entry::Started {
                partition: 1,
                seq: 7,
                first_attempt_ms: 1_700_000_000_005,
            },
            Entry::Attempted {
                partition: 1,
                seq: 7,
                attempts: 2,
            },
            Entry::Committed {
                marks: vec![(1, 7), (0, 3)],
                output: 1234,
                dead_letter: 0,
            },
            Entry::Staged(Record {
                partition: 2,
                seq: 0,
                accepted_ms: 1_700_000_000_000,
                first_attempt_ms: 9,
                attempts: 1,
                splice: false,
                id: "r-8".into(),
                key: "3".into(),
                canonical: "3".into(),
                text: r#"{"id":"r-8","user_id":3}"#.into(),
                decided: Some(Decided {
                    dead_letter: true,
                    outcome: OutcomeKind::Timeout,
                    envelope: r#"{"id":"r-8","outcome":"timeout"}"#.into(),
                }),
            }),
            Entry::SinkFiles {
                output: Some((2049, 1234567)),
                dead_letter: None,
            },
            Entry::Decided {
                partition: 1,
                seq: 7,
                decided: Decided {
                    dead_letter: false,
                    outcome: OutcomeKind::Ok,
                    envelope: r#"{"id":"r-7","outcome":"ok"}"#.into(),
                },
            },
            Entry::Forwarded {
                partition: 2,
                from: 0,
                upto: 1,
            },
            Entry::Handed {
                marks: vec![(1, 7)],
            },
            Entry::Imported {
                source: "node-b".into(),
                partition: 2,
                upto: 40,
            },
            Entry::Owned {
                partition: 2,
                epoch: 77,
            },
            Entry::StageLease {
                partition: 2,
                upto: 5,
            },
            Entry::InDoubt {
                partition: 2,
                from: 1,
                upto: 4,
                node: "node-c".into(),
            },
        ]
    }

    fn encoded() -> Vec<u8> {
        let mut buf = Vec::new();
        for e in sample() {
            encode(&e, &mut buf);
        }
        buf
    }

    #[test]
    fn a_batch_is_replayed_whole_or_not_at_all_at_every_truncation_point() {
        let mut buf = Vec::new();
        encode(&sample()[0], &mut buf);
        let first = buf.len();
        encode_batch(&sample()[1..6], &mut buf);
        let (all, err) = decode_all(&buf);
        assert_eq!(err, None);
        assert_eq!(all, sample()[..6].to_vec());
        for cut in first..buf.len() {
            let (entries, err) = decode_all(&buf[..cut]);
            assert_eq!(
                entries,
                sample()[..1].to_vec(),
                "cut at {cut}: part of a batch replayed"
            );
            if cut > first {
                assert!(err.is_some(), "cut at {cut} must be reported");
            }
        }
        // A flipped byte anywhere in the batch drops the whole batch.
        for at in first..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x20;
            let (entries, _) = decode_all(&bad);
            assert_eq!(entries, sample()[..1].to_vec(), "flip at {at}");
        }
    }

    #[test]
    fn an_empty_frame_followed_by_the_batch_tag_is_malformed_not_a_panic() {
        // Found by fuzzing (journal_decode, snapshot_decode): a frame announcing an empty
        // payload (whose CRC32C is 0) followed by the batch tag's byte was taken for a
        // batch, and reading the payload past its tag panicked.
        let bytes: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x00\x0f";
        let (entries, err) = decode_all(bytes);
        assert!(entries.is_empty());
        assert_eq!(err, Some((0, FrameError::Malformed("field past the end"))));
    }

    #[test]
    fn a_batch_inside_a_batch_is_malformed() {
        // encode_batch never nests; refusing it bounds the decoder's recursion whatever
        // the bytes.
        let mut inner = Vec::new();
        encode_batch(&sample()[..2], &mut inner);
        let mut outer = Vec::new();
        outer.extend_from_slice(&[0u8; HEADER]);
        outer.push(TAG_BATCH);
        outer.extend_from_slice(&inner);
        seal(&mut outer, 0);
        assert_eq!(decode_all(&inner), (sample()[..2].to_vec(), None));
        assert_eq!(
            decode_all(&outer),
            (
                Vec::new(),
                Some((0, FrameError::Malformed("bad frame inside a batch")))
            )
        );
    }

    #[test]
    fn a_segment_names_its_version_in_a_first_marker_frame_and_none_means_1() {
        let entries = encoded();
        assert_eq!(segment_version(&entries), (1, 0), "no marker: version 1");
        assert_eq!(segment_version(&[]), (1, 0));
        for version in [1, 2, 7, u32::MAX] {
            let mut buf = Vec::new();
            encode_format(version, &mut buf);
            let start = buf.len();
            assert_eq!(start, HEADER + 5);
            buf.extend_from_slice(&entries);
            assert_eq!(segment_version(&buf), (version, start));
            assert_eq!(decode_all(&buf[start..]), (sample(), None));
            // Cut inside the marker: no marker, and the decoder reports the torn frame.
            for cut in 0..start {
                assert_eq!(segment_version(&buf[..cut]), (1, 0), "cut {cut}");
                assert!(decode_all(&buf[..cut]).1.is_some() || cut == 0);
            }
            // A flipped bit in the marker: never a version read from damage.
            for at in 0..start {
                let mut bad = buf.clone();
                bad[at] ^= 0x04;
                let (v, s) = segment_version(&bad);
                assert!((v, s) == (1, 0), "flip at {at} read as version {v}");
                assert!(decode_all(&bad).1.is_some(), "flip at {at}");
            }
        }
    }

    #[test]
    fn a_format_marker_after_a_segments_start_is_malformed() {
        let mut buf = Vec::new();
        encode(&sample()[0], &mut buf);
        let at = buf.len();
        encode_format(1, &mut buf);
        assert_eq!(
            decode_all(&buf),
            (
                sample()[..1].to_vec(),
                Some((
                    at,
                    FrameError::Malformed("format marker past a segment's start")
                ))
            )
        );
    }

    #[test]
    fn round_trip() {
        let (entries, err) = decode_all(&encoded());
        assert_eq!(err, None);
        assert_eq!(entries, sample());
    }

    #[test]
    fn every_truncation_point_is_detected() {
        let buf = encoded();
        let mut boundaries = vec![0];
        let mut pos = 0;
        while pos < buf.len() {
            pos += decode(&buf[pos..]).unwrap().1;
            boundaries.push(pos);
        }
        for cut in 0..buf.len() {
            let (entries, err) = decode_all(&buf[..cut]);
            let whole = boundaries.iter().filter(|b| **b <= cut).count() - 1;
            assert_eq!(entries.len(), whole, "cut at {cut}");
            assert_eq!(entries[..], sample()[..whole]);
            if boundaries.contains(&cut) {
                assert!(err.is_none());
            } else {
                assert!(
                    matches!(err, Some((_, FrameError::Truncated { .. }))),
                    "cut {cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        let buf = encoded();
        for i in 0..buf.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = buf.clone();
                bad[i] ^= flip;
                let (entries, err) = decode_all(&bad);
                assert!(err.is_some(), "flip {flip:#x} at {i} went unnoticed");
                // Nothing decoded differs from the original: corruption is never trusted.
                assert_eq!(entries[..], sample()[..entries.len()]);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn random_damage_is_detected(i in 0usize..10_000, flip in 1u8..=255, cut in 0usize..10_000) {
            let buf = encoded();
            let mut bad = buf.clone();
            let i = i % bad.len();
            bad[i] ^= flip;
            let cut = cut % (bad.len() + 1);
            let (entries, _) = decode_all(&bad[..cut]);
            prop_assert_eq!(&entries[..], &sample()[..entries.len()]);
        }
    }
}
