//! Journal and snapshot entries and their framing: `[len u32 LE][crc32c u32 LE][payload]`.
//!
//! Pure encoding/decoding, so every truncation and every flipped byte can be tested: a
//! frame is trusted only if its length fits the data and its CRC32C matches; the decoder
//! never panics on any input.
//!
//! A journal segment may begin with a format marker (tag 16, a `u32` version; see
//! `durability::versions`): none means version 1; this build writes version 2.
//!
//! What a frame holds depends on the [`Layout`] of the segment, snapshot or forwarded
//! batch it is in, so decoding names it. Layout 2 differs from 1 in two ways: a record's
//! optional parts follow a flags byte (bit 0: the decided envelope, bit 1: the pipeline's
//! step marks; in 1 a record ends with an optional decided trailer, told by bytes being
//! left), and the step entries (`StepAttempted`, `StepDone`) exist.

use crate::envelope::OutcomeKind;
use crate::record::{Decided, Record, StepDone, StepMark};

/// The frame layouts this build reads. A journal segment, a snapshot and a forwarded batch
/// of format version N hold frames of layout N (`durability::versions::Format::layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format version 1 (up to commit `b6dd6cc`): no step marks, no step entries.
    V1,
    /// Format version 2: records with a flags byte and their step marks; step entries.
    V2,
}

impl Layout {
    /// What this build writes to its journal and snapshots.
    pub const CURRENT: Layout = Layout::V2;

    /// The format version whose frames have this layout.
    pub const fn version(self) -> u32 {
        match self {
            Layout::V1 => 1,
            Layout::V2 => 2,
        }
    }

    /// The oldest layout that holds every one of `records` whole: version 1 unless one
    /// carries step marks, so a forwarded batch without pipeline progress is read by peers
    /// of either version (a rolling upgrade keeps forwarding).
    pub fn carrying<'a>(records: impl IntoIterator<Item = &'a Record>) -> Layout {
        if records.into_iter().any(|r| !r.steps.is_empty()) {
            Layout::V2
        } else {
            Layout::V1
        }
    }
}

/// Record flags (layout 2): which optional parts follow.
const FLAG_DECIDED: u8 = 1;
const FLAG_STEPS: u8 = 2;

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
    /// Pipelines: an attempt of step `step` of the record is starting; `attempts` counts it
    /// (the step's own count; `retry.max_attempts` holds per step across restarts).
    StepAttempted {
        partition: u32,
        seq: u64,
        step: u16,
        attempts: u32,
    },
    /// Pipelines: step `step` of the record finished and the record goes on: a restore or
    /// a new owner does not look it up again.
    StepDone {
        partition: u32,
        seq: u64,
        step: u16,
        done: StepDone,
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
const TAG_STEP_ATTEMPTED: u8 = 17;
const TAG_STEP_DONE: u8 = 18;
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

/// Append an `Accepted` frame for `r` to `out` in the current layout (snapshots write
/// records this way without copying them into an `Entry`).
pub fn encode_accepted(r: &Record, out: &mut Vec<u8>) {
    encode_record(TAG_ACCEPTED, r, Layout::CURRENT, out)
}

/// Append a `Staged` frame for `r` in the current layout (see [`encode_accepted`]).
pub fn encode_staged(r: &Record, out: &mut Vec<u8>) {
    encode_record(TAG_STAGED, r, Layout::CURRENT, out)
}

/// Append a `Staged` frame for `r` in `layout` (a forwarded batch's, [`Layout::carrying`]).
/// Layout 1 has no step marks: they are left out, so pick it only for records without.
pub fn encode_staged_in(r: &Record, layout: Layout, out: &mut Vec<u8>) {
    encode_record(TAG_STAGED, r, layout, out)
}

fn encode_record(tag: u8, r: &Record, layout: Layout, out: &mut Vec<u8>) {
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
    match layout {
        // An optional trailer (frames without it decode as undecided).
        Layout::V1 => {
            if let Some(d) = &r.decided {
                put_decided(out, d);
            }
        }
        Layout::V2 => {
            // At most u16::MAX marks: step indexes are u16 (a pipeline has far fewer).
            let steps = &r.steps[..r.steps.len().min(usize::from(u16::MAX))];
            let mut flags = 0;
            if r.decided.is_some() {
                flags |= FLAG_DECIDED;
            }
            if !steps.is_empty() {
                flags |= FLAG_STEPS;
            }
            out.push(flags);
            if let Some(d) = &r.decided {
                put_decided(out, d);
            }
            if !steps.is_empty() {
                out.extend_from_slice(&(steps.len() as u16).to_le_bytes());
                for m in steps {
                    put_u32(out, m.attempts);
                    match &m.done {
                        Some(d) => put_step_done(out, d),
                        None => out.push(STEP_OPEN),
                    }
                }
            }
        }
    }
    seal(out, start);
}

/// A step mark's result byte for a step not finished (1..=3: [`put_step_done`]).
const STEP_OPEN: u8 = 0;

fn put_decided(out: &mut Vec<u8>, d: &Decided) {
    out.push(u8::from(d.dead_letter));
    out.push(d.outcome.index() as u8);
    put_str(out, &d.envelope);
}

fn put_step_done(out: &mut Vec<u8>, d: &StepDone) {
    match d {
        StepDone::Found(row) => {
            out.push(1);
            put_str(out, row);
        }
        StepDone::Miss => out.push(2),
        StepDone::Skipped => out.push(3),
    }
}

fn seal(out: &mut [u8], start: usize) {
    let payload_len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Append `entry` as one frame to `out`, in the current layout.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    encode_in(entry, Layout::CURRENT, out)
}

/// Append `entry` as one frame in `layout`. Layout 1 has no step marks and no step
/// entries: a record's marks are left out, and a step entry is written as in layout 2
/// (which a reader of layout 1 refuses) — only records without marks belong there.
pub fn encode_in(entry: &Entry, layout: Layout, out: &mut Vec<u8>) {
    match entry {
        Entry::Accepted(r) => return encode_record(TAG_ACCEPTED, r, layout, out),
        Entry::Staged(r) => return encode_record(TAG_STAGED, r, layout, out),
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
        Entry::StepAttempted {
            partition,
            seq,
            step,
            attempts,
        } => {
            out.push(TAG_STEP_ATTEMPTED);
            put_u32(out, *partition);
            put_u64(out, *seq);
            out.extend_from_slice(&step.to_le_bytes());
            put_u32(out, *attempts);
        }
        Entry::StepDone {
            partition,
            seq,
            step,
            done,
        } => {
            out.push(TAG_STEP_DONE);
            put_u32(out, *partition);
            put_u64(out, *seq);
            out.extend_from_slice(&step.to_le_bytes());
            put_step_done(out, done);
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
    layout: Layout,
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
        let mut r = Record {
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
            decided: None,
            steps: Vec::new(),
        };
        match self.layout {
            Layout::V1 => {
                if self.pos < self.buf.len() {
                    r.decided = Some(self.decided()?);
                }
            }
            Layout::V2 => {
                let flags = self.u8()?;
                if flags & !(FLAG_DECIDED | FLAG_STEPS) != 0 {
                    return Err(FrameError::Malformed("unknown record flags"));
                }
                if flags & FLAG_DECIDED != 0 {
                    r.decided = Some(self.decided()?);
                }
                if flags & FLAG_STEPS != 0 {
                    r.steps = self.step_marks()?;
                }
            }
        }
        Ok(r)
    }
    fn step_marks(&mut self) -> Result<Vec<StepMark>, FrameError> {
        let n = usize::from(self.u16()?);
        // Each mark is at least 5 bytes; an empty list is written as no flag.
        if n == 0 {
            return Err(FrameError::Malformed("empty step list"));
        }
        if n > (self.buf.len() - self.pos) / 5 {
            return Err(FrameError::Malformed("step count past the end"));
        }
        let mut marks = Vec::with_capacity(n);
        for _ in 0..n {
            let attempts = self.u32()?;
            let done = match self.u8()? {
                STEP_OPEN => None,
                tag => Some(self.step_done_of(tag)?),
            };
            marks.push(StepMark { attempts, done });
        }
        Ok(marks)
    }
    fn file_id(&mut self) -> Result<Option<(u64, u64)>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some((self.u64()?, self.u64()?))),
            _ => Err(FrameError::Malformed("bad file identity")),
        }
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn step_done(&mut self) -> Result<StepDone, FrameError> {
        let tag = self.u8()?;
        self.step_done_of(tag)
    }
    fn step_done_of(&mut self, tag: u8) -> Result<StepDone, FrameError> {
        match tag {
            1 => Ok(StepDone::Found(self.string()?.into())),
            2 => Ok(StepDone::Miss),
            3 => Ok(StepDone::Skipped),
            _ => Err(FrameError::Malformed("bad step result")),
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

/// Decode the frame of `layout` at the start of `buf`: the entry and the frame's total
/// length.
pub fn decode(buf: &[u8], layout: Layout) -> Result<(Entry, usize), FrameError> {
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
        layout,
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
        TAG_STEP_ATTEMPTED | TAG_STEP_DONE if layout == Layout::V1 => {
            return Err(FrameError::Malformed("unknown entry tag"));
        }
        TAG_STEP_ATTEMPTED => Entry::StepAttempted {
            partition: r.u32()?,
            seq: r.u64()?,
            step: r.u16()?,
            attempts: r.u32()?,
        },
        TAG_STEP_DONE => Entry::StepDone {
            partition: r.u32()?,
            seq: r.u64()?,
            step: r.u16()?,
            done: r.step_done()?,
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
fn decode_batch(buf: &[u8], layout: Layout) -> Option<Result<(Vec<Entry>, usize), FrameError>> {
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
    let (entries, err) = decode_frames(&payload[1..], layout, false);
    Some(match err {
        None => Ok((entries, total)),
        Some(_) => Err(FrameError::Malformed("bad frame inside a batch")),
    })
}

/// Decode frames of `layout` from the start of `buf` until its end or the first bad frame.
/// Returns the entries and, if it stopped early, the offset of the bad frame and why.
pub fn decode_all(buf: &[u8], layout: Layout) -> (Vec<Entry>, Option<(usize, FrameError)>) {
    decode_frames(buf, layout, true)
}

/// [`decode_all`]; `batches`: whether batch frames may appear (not inside a batch).
fn decode_frames(
    buf: &[u8],
    layout: Layout,
    batches: bool,
) -> (Vec<Entry>, Option<(usize, FrameError)>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        if batches && let Some(batch) = decode_batch(&buf[pos..], layout) {
            match batch {
                Ok((mut entries, n)) => {
                    out.append(&mut entries);
                    pos += n;
                }
                Err(err) => return (out, Some((pos, err))),
            }
            continue;
        }
        match decode(&buf[pos..], layout) {
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
        steps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUTS: [Layout; 2] = [Layout::V1, Layout::V2];

    /// A record four steps into a five-step pipeline: found, missed after a retry,
    /// skipped, a third attempt begun, not started.
    fn mid_pipeline(seq: u64, decided: Option<Decided>) -> Record {
        Record {
            partition: 3,
            seq,
            accepted_ms: 1_700_000_000_000,
            first_attempt_ms: 1_700_000_000_004,
            attempts: 6,
            splice: true,
            id: format!("p-{seq}").into(),
            key: "\"u1\"".into(),
            canonical: "u1".into(),
            text: r#"{"id":"p","user_id":"u1"}"#.into(),
            decided,
            steps: vec![
                StepMark {
                    attempts: 1,
                    done: Some(StepDone::Found(r#"{"account":"a-1","é":true}"#.into())),
                },
                StepMark {
                    attempts: 2,
                    done: Some(StepDone::Miss),
                },
                StepMark {
                    attempts: 0,
                    done: Some(StepDone::Skipped),
                },
                StepMark {
                    attempts: 3,
                    done: None,
                },
                StepMark::default(),
            ],
        }
    }

    fn sample_v1() -> Vec<Entry> {
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
                steps: Vec::new(),
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
                steps: Vec::new(),
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

    /// Entries of every kind `layout` has (layout 2: records with step marks and the
    /// step entries too).
    fn sample(layout: Layout) -> Vec<Entry> {
        let mut entries = sample_v1();
        if layout == Layout::V2 {
            entries.extend([
                Entry::Accepted(mid_pipeline(9, None)),
                Entry::StepAttempted {
                    partition: 3,
                    seq: 9,
                    step: 4,
                    attempts: 1,
                },
                Entry::StepDone {
                    partition: 3,
                    seq: 9,
                    step: 3,
                    done: StepDone::Found("{}".into()),
                },
                Entry::StepDone {
                    partition: 3,
                    seq: 9,
                    step: u16::MAX,
                    done: StepDone::Miss,
                },
                Entry::StepDone {
                    partition: 3,
                    seq: 9,
                    step: 0,
                    done: StepDone::Skipped,
                },
                Entry::Staged(mid_pipeline(
                    10,
                    Some(Decided {
                        dead_letter: false,
                        outcome: OutcomeKind::Miss,
                        envelope: r#"{"id":"p-10","outcome":"miss"}"#.into(),
                    }),
                )),
            ]);
        }
        entries
    }

    fn encoded(layout: Layout) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in sample(layout) {
            encode_in(&e, layout, &mut buf);
        }
        buf
    }

    #[test]
    fn the_current_layout_is_version_2() {
        assert_eq!(Layout::CURRENT, Layout::V2);
        assert_eq!((Layout::V1.version(), Layout::V2.version()), (1, 2));
        let mut a = Vec::new();
        let mut b = Vec::new();
        for e in sample(Layout::V2) {
            encode(&e, &mut a);
            encode_in(&e, Layout::V2, &mut b);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn a_batch_without_step_marks_is_carried_in_layout_1() {
        let plain = test_record(0);
        let mut with = test_record(1);
        assert_eq!(Layout::carrying([&plain, &with]), Layout::V1);
        assert_eq!(Layout::carrying(std::iter::empty()), Layout::V1);
        with.steps = vec![StepMark::default()];
        assert_eq!(Layout::carrying([&plain, &with]), Layout::V2);
    }

    fn test_record(seq: u64) -> Record {
        match test_accepted(0, seq) {
            Entry::Accepted(r) => r,
            _ => unreachable!("test_accepted is an Accepted entry"),
        }
    }

    #[test]
    fn a_record_without_marks_differs_between_layouts_by_its_flags_byte_only() {
        for decided in [false, true] {
            let mut r = test_record(4);
            if decided {
                r.decided = Some(Decided {
                    dead_letter: true,
                    outcome: OutcomeKind::Failed,
                    envelope: "{}".into(),
                });
            }
            let (mut v1, mut v2) = (Vec::new(), Vec::new());
            encode_staged_in(&r, Layout::V1, &mut v1);
            encode_staged_in(&r, Layout::V2, &mut v2);
            assert_eq!(v2.len(), v1.len() + 1);
            let fields = v1.len() - r.decided.as_ref().map_or(0, |d| 6 + d.envelope.len());
            assert_eq!(v1[HEADER..fields], v2[HEADER..fields]);
            assert_eq!(v2[fields], if decided { FLAG_DECIDED } else { 0 });
            assert_eq!(v1[fields..], v2[fields + 1..]);
            for (bytes, layout) in [(&v1, Layout::V1), (&v2, Layout::V2)] {
                assert_eq!(
                    decode(bytes, layout),
                    Ok((Entry::Staged(r.clone()), bytes.len()))
                );
            }
        }
    }

    #[test]
    fn the_batch_b6dd6cc_forwarded_re_encodes_to_its_bytes_in_layout_1() {
        let body = include_bytes!("../../tests/fixtures/v1/forward/import-body.bin");
        let (entries, err) = decode_all(body, Layout::V1);
        assert_eq!((entries.len(), err), (2, None));
        let mut again = Vec::new();
        for e in &entries {
            encode_in(e, Layout::V1, &mut again);
        }
        assert_eq!(&again[..], &body[..]);
    }

    #[test]
    fn layout_1_leaves_step_marks_out_and_refuses_step_entries() {
        let r = mid_pipeline(9, None);
        let mut buf = Vec::new();
        encode_staged_in(&r, Layout::V1, &mut buf);
        let (got, _) = decode(&buf, Layout::V1).unwrap();
        assert_eq!(
            got,
            Entry::Staged(Record {
                steps: Vec::new(),
                ..r.clone()
            })
        );
        for e in &sample(Layout::V2)[sample_v1().len()..] {
            if matches!(e, Entry::StepAttempted { .. } | Entry::StepDone { .. }) {
                let mut buf = Vec::new();
                encode_in(e, Layout::V1, &mut buf);
                assert_eq!(decode(&buf, Layout::V2).map(|d| d.0).as_ref(), Ok(e));
                assert_eq!(
                    decode(&buf, Layout::V1),
                    Err(FrameError::Malformed("unknown entry tag"))
                );
            }
        }
    }

    /// A layout 2 record frame of `r` with its payload after the text replaced by `tail`
    /// (resealed): what a reader makes of hand-made optional parts.
    fn with_tail(tail: &[u8]) -> Vec<u8> {
        let r = test_record(1);
        let mut buf = Vec::new();
        encode_staged_in(&r, Layout::V2, &mut buf);
        buf.pop(); // the flags byte (0)
        buf.extend_from_slice(tail);
        seal(&mut buf, 0);
        buf
    }

    #[test]
    fn hand_made_record_flags_are_read_strictly() {
        let bad = |tail: &[u8]| decode(&with_tail(tail), Layout::V2).map(|_| ());
        assert_eq!(bad(&[]), Err(FrameError::Malformed("field past the end")));
        assert_eq!(
            bad(&[4]),
            Err(FrameError::Malformed("unknown record flags"))
        );
        assert_eq!(
            bad(&[0x80]),
            Err(FrameError::Malformed("unknown record flags"))
        );
        assert_eq!(
            bad(&[2, 0, 0]),
            Err(FrameError::Malformed("empty step list"))
        );
        assert_eq!(
            bad(&[2, 0xff, 0xff, 1, 0, 0, 0, 0]),
            Err(FrameError::Malformed("step count past the end"))
        );
        assert_eq!(
            bad(&[2, 1, 0, 1, 0, 0, 0, 4]),
            Err(FrameError::Malformed("bad step result"))
        );
        assert_eq!(
            bad(&[2, 1, 0, 1, 0, 0, 0, 0, 9]),
            Err(FrameError::Malformed("trailing bytes in frame"))
        );
        assert_eq!(
            bad(&[0, 0]),
            Err(FrameError::Malformed("trailing bytes in frame"))
        );
        let (e, _) = decode(&with_tail(&[2, 1, 0, 7, 0, 0, 0, 2]), Layout::V2).unwrap();
        let Entry::Staged(r) = e else {
            panic!("not staged: {e:?}")
        };
        assert_eq!(
            r.steps,
            vec![StepMark {
                attempts: 7,
                done: Some(StepDone::Miss)
            }]
        );
    }

    #[test]
    fn a_batch_is_replayed_whole_or_not_at_all_at_every_truncation_point() {
        let sample = sample(Layout::CURRENT);
        let mut buf = Vec::new();
        encode(&sample[0], &mut buf);
        let first = buf.len();
        let end = sample.len() - 1;
        encode_batch(&sample[1..end], &mut buf);
        let (all, err) = decode_all(&buf, Layout::CURRENT);
        assert_eq!(err, None);
        assert_eq!(all, sample[..end].to_vec());
        for cut in first..buf.len() {
            let (entries, err) = decode_all(&buf[..cut], Layout::CURRENT);
            assert_eq!(
                entries,
                sample[..1].to_vec(),
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
            let (entries, _) = decode_all(&bad, Layout::CURRENT);
            assert_eq!(entries, sample[..1].to_vec(), "flip at {at}");
        }
    }

    #[test]
    fn an_empty_frame_followed_by_the_batch_tag_is_malformed_not_a_panic() {
        // Found by fuzzing (journal_decode, snapshot_decode): a frame announcing an empty
        // payload (whose CRC32C is 0) followed by the batch tag's byte was taken for a
        // batch, and reading the payload past its tag panicked.
        let bytes: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x00\x0f";
        for layout in LAYOUTS {
            let (entries, err) = decode_all(bytes, layout);
            assert!(entries.is_empty());
            assert_eq!(err, Some((0, FrameError::Malformed("field past the end"))));
        }
    }

    #[test]
    fn a_batch_inside_a_batch_is_malformed() {
        // encode_batch never nests; refusing it bounds the decoder's recursion whatever
        // the bytes.
        let sample = sample(Layout::CURRENT);
        let mut inner = Vec::new();
        encode_batch(&sample[..2], &mut inner);
        let mut outer = Vec::new();
        outer.extend_from_slice(&[0u8; HEADER]);
        outer.push(TAG_BATCH);
        outer.extend_from_slice(&inner);
        seal(&mut outer, 0);
        assert_eq!(
            decode_all(&inner, Layout::CURRENT),
            (sample[..2].to_vec(), None)
        );
        assert_eq!(
            decode_all(&outer, Layout::CURRENT),
            (
                Vec::new(),
                Some((0, FrameError::Malformed("bad frame inside a batch")))
            )
        );
    }

    #[test]
    fn a_segment_names_its_version_in_a_first_marker_frame_and_none_means_1() {
        let layout = Layout::CURRENT;
        let entries = encoded(layout);
        assert_eq!(
            segment_version(&encoded(Layout::V1)),
            (1, 0),
            "no marker: version 1"
        );
        assert_eq!(segment_version(&[]), (1, 0));
        for version in [1, 2, 7, u32::MAX] {
            let mut buf = Vec::new();
            encode_format(version, &mut buf);
            let start = buf.len();
            assert_eq!(start, HEADER + 5);
            buf.extend_from_slice(&entries);
            assert_eq!(segment_version(&buf), (version, start));
            assert_eq!(decode_all(&buf[start..], layout), (sample(layout), None));
            // Cut inside the marker: no marker, and the decoder reports the torn frame.
            for cut in 0..start {
                assert_eq!(segment_version(&buf[..cut]), (1, 0), "cut {cut}");
                assert!(decode_all(&buf[..cut], Layout::V1).1.is_some() || cut == 0);
            }
            // A flipped bit in the marker: never a version read from damage.
            for at in 0..start {
                let mut bad = buf.clone();
                bad[at] ^= 0x04;
                let (v, s) = segment_version(&bad);
                assert!((v, s) == (1, 0), "flip at {at} read as version {v}");
                assert!(decode_all(&bad, Layout::V1).1.is_some(), "flip at {at}");
            }
        }
    }

    #[test]
    fn a_format_marker_after_a_segments_start_is_malformed() {
        for layout in LAYOUTS {
            let sample = sample(layout);
            let mut buf = Vec::new();
            encode_in(&sample[0], layout, &mut buf);
            let at = buf.len();
            encode_format(layout.version(), &mut buf);
            assert_eq!(
                decode_all(&buf, layout),
                (
                    sample[..1].to_vec(),
                    Some((
                        at,
                        FrameError::Malformed("format marker past a segment's start")
                    ))
                )
            );
        }
    }

    #[test]
    fn round_trip() {
        for layout in LAYOUTS {
            let (entries, err) = decode_all(&encoded(layout), layout);
            assert_eq!(err, None);
            assert_eq!(entries, sample(layout), "{layout:?}");
        }
    }

    #[test]
    fn every_truncation_point_is_detected() {
        for layout in LAYOUTS {
            let (buf, sample) = (encoded(layout), sample(layout));
            let mut boundaries = vec![0];
            let mut pos = 0;
            while pos < buf.len() {
                pos += decode(&buf[pos..], layout).unwrap().1;
                boundaries.push(pos);
            }
            for cut in 0..buf.len() {
                let (entries, err) = decode_all(&buf[..cut], layout);
                let whole = boundaries.iter().filter(|b| **b <= cut).count() - 1;
                assert_eq!(entries.len(), whole, "cut at {cut}");
                assert_eq!(entries[..], sample[..whole]);
                if boundaries.contains(&cut) {
                    assert!(err.is_none());
                } else {
                    assert!(
                        matches!(err, Some((_, FrameError::Truncated { .. }))),
                        "{layout:?} cut {cut}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_is_detected() {
        for layout in LAYOUTS {
            let (buf, sample) = (encoded(layout), sample(layout));
            for i in 0..buf.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = buf.clone();
                    bad[i] ^= flip;
                    let (entries, err) = decode_all(&bad, layout);
                    assert!(
                        err.is_some(),
                        "{layout:?}: flip {flip:#x} at {i} went unnoticed"
                    );
                    // Nothing decoded differs from the original: corruption is never trusted.
                    assert_eq!(entries[..], sample[..entries.len()]);
                }
            }
        }
    }

    fn layout() -> impl Strategy<Value = Layout> {
        prop_oneof![Just(Layout::V1), Just(Layout::V2)]
    }

    fn text() -> impl Strategy<Value = std::sync::Arc<str>> {
        "[a-z0-9\"{}:é ]{0,12}".prop_map(|s| s.into())
    }

    fn step_done() -> impl Strategy<Value = StepDone> {
        prop_oneof![
            text().prop_map(StepDone::Found),
            Just(StepDone::Miss),
            Just(StepDone::Skipped),
        ]
    }

    fn step_mark() -> impl Strategy<Value = StepMark> {
        (any::<u32>(), proptest::option::of(step_done()))
            .prop_map(|(attempts, done)| StepMark { attempts, done })
    }

    fn decided() -> impl Strategy<Value = Decided> {
        (any::<bool>(), 0..OutcomeKind::ALL.len(), text()).prop_map(|(dead_letter, o, envelope)| {
            Decided {
                dead_letter,
                outcome: OutcomeKind::ALL[o],
                envelope,
            }
        })
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u32>(), any::<bool>()),
            (text(), text(), text(), text()),
            proptest::option::of(decided()),
            proptest::collection::vec(step_mark(), 0..6),
        )
            .prop_map(
                |(
                    (partition, seq, accepted_ms, first_attempt_ms),
                    (attempts, splice),
                    (id, key, canonical, text),
                    decided,
                    steps,
                )| Record {
                    partition,
                    seq,
                    accepted_ms,
                    first_attempt_ms,
                    attempts,
                    splice,
                    id,
                    key,
                    canonical,
                    text,
                    decided,
                    steps,
                },
            )
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            record().prop_map(Entry::Accepted),
            record().prop_map(Entry::Staged),
            (any::<u32>(), any::<u64>(), any::<u16>(), any::<u32>()).prop_map(
                |(partition, seq, step, attempts)| Entry::StepAttempted {
                    partition,
                    seq,
                    step,
                    attempts,
                }
            ),
            (any::<u32>(), any::<u64>(), any::<u16>(), step_done()).prop_map(
                |(partition, seq, step, done)| Entry::StepDone {
                    partition,
                    seq,
                    step,
                    done,
                }
            ),
            (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(partition, seq, attempts)| {
                Entry::Attempted {
                    partition,
                    seq,
                    attempts,
                }
            }),
        ]
    }

    /// What `e` reads back as from layout 1: a record without its step marks.
    fn in_v1(e: &Entry) -> Option<Entry> {
        match e {
            Entry::StepAttempted { .. } | Entry::StepDone { .. } => None,
            Entry::Accepted(r) => Some(Entry::Accepted(Record {
                steps: Vec::new(),
                ..r.clone()
            })),
            Entry::Staged(r) => Some(Entry::Staged(Record {
                steps: Vec::new(),
                ..r.clone()
            })),
            e => Some(e.clone()),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            layout in layout(),
        ) {
            let _ = decode_all(&bytes, layout);
        }

        #[test]
        fn random_damage_is_detected(
            i in 0usize..10_000,
            flip in 1u8..=255,
            cut in 0usize..10_000,
            layout in layout(),
        ) {
            let buf = encoded(layout);
            let mut bad = buf.clone();
            let i = i % bad.len();
            bad[i] ^= flip;
            let cut = cut % (bad.len() + 1);
            let (entries, _) = decode_all(&bad[..cut], layout);
            prop_assert_eq!(&entries[..], &sample(layout)[..entries.len()]);
        }

        #[test]
        fn records_with_random_step_marks_round_trip(entries in proptest::collection::vec(entry(), 0..8)) {
            let mut buf = Vec::new();
            for e in &entries {
                encode(e, &mut buf);
            }
            prop_assert_eq!(decode_all(&buf, Layout::V2), (entries.clone(), None));
            // Layout 1 keeps everything but the marks (and has no step entries).
            let kept: Vec<Entry> = entries.iter().filter_map(in_v1).collect();
            let mut v1 = Vec::new();
            for e in &kept {
                encode_in(e, Layout::V1, &mut v1);
            }
            prop_assert_eq!(decode_all(&v1, Layout::V1), (kept, None));
        }

        #[test]
        fn random_entries_damaged_anywhere_never_decode_as_something_else(
            entries in proptest::collection::vec(entry(), 1..6),
            i in any::<usize>(),
            flip in 1u8..=255,
            cut in any::<usize>(),
        ) {
            let mut buf = Vec::new();
            for e in &entries {
                encode(e, &mut buf);
            }
            for n in 0..=buf.len() {
                let (got, _) = decode_all(&buf[..n], Layout::V2);
                prop_assert_eq!(&got[..], &entries[..got.len()], "cut at {}", n);
            }
            let mut bad = buf.clone();
            bad[i % buf.len()] ^= flip;
            let cut = cut % (bad.len() + 1);
            let (got, err) = decode_all(&bad[..cut], Layout::V2);
            prop_assert_eq!(&got[..], &entries[..got.len()]);
            if cut == bad.len() {
                prop_assert!(err.is_some(), "flip at {} went unnoticed", i % buf.len());
            }
        }
    }
}
