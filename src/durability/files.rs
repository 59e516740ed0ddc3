//! The checkpoint directory on disk: journal segments, snapshots, and restore from them.
//!
//! - `journal-<N>.log`: frames appended by the journal thread; a new segment at every
//!   start and every snapshot, so a torn tail is never appended to. It begins with a
//!   format marker (`codec::segment_version`; version 1 had none), written with its first
//!   entries, and its frames have that version's layout: a restore reads segments of
//!   either version in one chain (older ones of version 1 after an upgrade).
//! - `snapshot-<N>.snap`: the whole state when segment N was opened; replay starts at N.
//!   Written to a temp file, fsynced, renamed, directory fsynced. Layout:
//!   `MAGIC | version u32 | frames… | "END!" | frame count u64 | crc32c u32` (the CRC
//!   covers everything before it). Every version keeps the magic, the version and the
//!   closing CRC where they are, so a newer snapshot is told from a damaged one.
//!
//! - `MANIFEST`: the newest segment number and every partition's seq lease when it was
//!   opened (JSON, replaced atomically each time a segment is opened), and its `format`
//!   (absent: 1). It makes the chain self-describing: a deleted newest segment, a gap, or
//!   missing snapshots are found.
//!
//! A format version this build does not read (`durability::versions`) stops the restore
//! ([`RestoreError::Unsupported`]): neither skipped like damage nor misread.
//!
//! Restore loads the newest valid snapshot (falling back to older ones), then replays every
//! later segment frame by frame, stopping at a torn or corrupt tail — reported, never
//! trusted. A missing piece of the chain (a segment between the snapshot used and the
//! newest one the manifest names, or the manifest itself) is reported as damage: the node
//! refuses to start unless the operator accepts the loss.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::codec;
use super::state::State;
use super::versions::{Format, UnsupportedVersion};

const MAGIC: &[u8; 10] = b"SLUICESNAP";
const TRAILER: &[u8; 4] = b"END!";

/// Path of journal segment `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n:020}.log"))
}

/// Path of the snapshot taken when segment `n` was opened.
pub fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:020}.snap"))
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Segment and snapshot numbers present in `dir`, ascending.
pub fn list(dir: &Path) -> io::Result<(Vec<u64>, Vec<u64>)> {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((segments, snapshots)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = parse_name(&name, "journal-", ".log") {
            segments.push(n);
        } else if let Some(n) = parse_name(&name, "snapshot-", ".snap") {
            snapshots.push(n);
        }
    }
    segments.sort_unstable();
    snapshots.sort_unstable();
    Ok((segments, snapshots))
}

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";

/// What the chain must hold (see module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The newest segment ever opened.
    pub newest_segment: u64,
    /// Per partition: no seq at or above this had been leased when it was opened.
    pub next_seq: BTreeMap<u32, u64>,
}

/// The manifest as written: its format version first (`b6dd6cc` and earlier wrote none,
/// and ignore it).
#[derive(Serialize)]
struct ManifestFile<'a> {
    format: u32,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

/// The manifest's format version (absent: 1).
#[derive(Deserialize)]
struct ManifestVersion {
    #[serde(default = "version_1")]
    format: u32,
}

fn version_1() -> u32 {
    1
}

/// Replace the manifest atomically (temp file, fsync, rename, fsync the directory).
pub fn write_manifest(dir: &Path, m: &Manifest) -> io::Result<()> {
    let tmp = dir.join("MANIFEST.tmp");
    let text = serde_json::to_vec(&ManifestFile {
        format: Format::Manifest.current(),
        manifest: m,
    })
    .map_err(io::Error::other)?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(MANIFEST))?;
    sync_dir(dir)
}

/// The manifest, `Ok(None)` when there is none.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    match fs::read(dir.join(MANIFEST)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(ManifestError::Unreadable),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ManifestError::Read(e)),
    }
}

/// Why the manifest cannot be read (damage: the chain cannot be checked).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{MANIFEST} is unreadable: {0}")]
    Unreadable(serde_json::Error),
    #[error("cannot read {MANIFEST}: {0}")]
    Read(io::Error),
}

/// Refuse a manifest of a format version this build does not read. One that cannot be
/// read at all is not refused here: restore reports it as damage.
fn check_manifest_version(dir: &Path) -> Result<(), RestoreError> {
    let Ok(bytes) = fs::read(dir.join(MANIFEST)) else {
        return Ok(());
    };
    match serde_json::from_slice::<ManifestVersion>(&bytes) {
        Ok(v) => Ok(Format::Manifest.check(MANIFEST, v.format)?),
        Err(_) => Ok(()),
    }
}

/// fsync a directory so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Encode `state` as a snapshot image.
pub fn snapshot_bytes(state: &State) -> (Vec<u8>, u64) {
    let mut buf = Vec::with_capacity(64 + state.pending.len() * 256);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&Format::Snapshot.current().to_le_bytes());
    let header = state.header_entries();
    for e in &header {
        codec::encode(e, &mut buf);
    }
    for r in state.pending.values() {
        codec::encode_accepted(r, &mut buf);
    }
    for r in state.staged.values() {
        codec::encode_staged(r, &mut buf);
    }
    let frames = header.len() + state.pending.len() + state.staged.len();
    buf.extend_from_slice(TRAILER);
    buf.extend_from_slice(&(frames as u64).to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    (buf, state.pending.len() as u64)
}

/// Write snapshot `n` atomically; returns its size in bytes.
pub fn write_snapshot(dir: &Path, n: u64, state: &State) -> io::Result<u64> {
    let (bytes, _) = snapshot_bytes(state);
    let tmp = dir.join(format!("snapshot-{n:020}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, snapshot_path(dir, n))?;
    sync_dir(dir)?;
    Ok(bytes.len() as u64)
}

/// Why a snapshot image was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Torn, corrupt or not a snapshot: restore falls back to an older one.
    #[error("{0}")]
    Damaged(String),
    /// Whole, but of a format version this build does not read: restore stops.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedVersion),
}

/// Decode a snapshot image, checking magic, checksum, version and frame count.
pub fn parse_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
    let damaged = |why: String| SnapshotError::Damaged(why);
    let min = MAGIC.len() + 4 + TRAILER.len() + 8 + 4;
    if bytes.len() < min {
        return Err(damaged(format!("too short ({} bytes)", bytes.len())));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged("not a sluice snapshot (bad magic)".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != crc {
        return Err(damaged("checksum mismatch".into()));
    }
    let version = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let layout = Format::Snapshot.layout("the snapshot", version)?;
    let frames = &body[MAGIC.len() + 4..body.len() - TRAILER.len() - 8];
    let trailer = &body[body.len() - TRAILER.len() - 8..];
    if &trailer[..4] != TRAILER {
        return Err(damaged("missing trailer".into()));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&trailer[4..]);
    let count = u64::from_le_bytes(count);
    let (entries, err) = codec::decode_all(frames, layout);
    if let Some((at, e)) = err {
        return Err(damaged(format!("bad frame at byte {at}: {e}")));
    }
    if entries.len() as u64 != count {
        return Err(damaged(format!(
            "{} frames, trailer says {count}",
            entries.len()
        )));
    }
    let mut state = State::default();
    for e in entries {
        state.apply(e);
    }
    Ok(state)
}

/// What restore found, for logs, `/v1/status` and `sluice inspect`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot the state starts from (none: replay from the first segment).
    pub snapshot: Option<String>,
    /// Snapshots that were newer but unusable, with the reason.
    pub skipped_snapshots: Vec<(String, String)>,
    /// Segments replayed.
    pub segments: Vec<SegmentReport>,
    /// Missing pieces of the chain, one line each (empty: the chain is whole).
    pub damage: Vec<String>,
    /// The manifest (seq leases survive an accepted loss through it).
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// One replayed segment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub name: String,
    pub bytes: u64,
    pub entries: usize,
    /// Offset and reason of a torn or corrupt tail, and how many bytes were skipped.
    pub damaged_at: Option<u64>,
    pub damage: Option<String>,
    pub skipped_bytes: u64,
}

/// Why restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A snapshot, segment or manifest of a format version this build does not read.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedVersion),
}

/// The state in `dir` and the number the next segment must use.
pub fn restore(dir: &Path) -> Result<(State, u64, RestoreReport), RestoreError> {
    check_manifest_version(dir)?;
    let (segments, snapshots) = list(dir)?;
    let mut report = RestoreReport::default();
    let mut state = State::default();
    // Without a usable snapshot the journal must go back to its first segment (0).
    let mut start = 0;
    for n in snapshots.iter().rev() {
        let path = snapshot_path(dir, *n);
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        match fs::read(&path)
            .map_err(|e| SnapshotError::Damaged(e.to_string()))
            .and_then(|b| parse_snapshot(&b))
        {
            Ok(s) => {
                state = s;
                start = *n;
                report.snapshot = Some(name);
                break;
            }
            Err(SnapshotError::Unsupported(e)) => {
                return Err(UnsupportedVersion {
                    what: format!("snapshot {name}"),
                    ..e
                }
                .into());
            }
            Err(SnapshotError::Damaged(why)) => {
                tracing::warn!(snapshot = %name, %why, "skipping unusable snapshot");
                report.skipped_snapshots.push((name, why));
            }
        }
    }
    for n in segments.iter().filter(|n| **n >= start) {
        let path = segment_path(dir, *n);
        let bytes = fs::read(&path)?;
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (version, first) = codec::segment_version(&bytes);
        let layout = Format::Journal.layout(format!("journal segment {name}"), version)?;
        let (entries, err) = codec::decode_all(&bytes[first..], layout);
        let count = entries.len();
        for e in entries {
            state.apply(e);
        }
        let (damaged_at, damage, skipped) = match err.map(|(at, why)| (at + first, why)) {
            Some((at, why)) => {
                tracing::warn!(segment = %name, offset = at, %why, skipped_bytes = bytes.len() - at,
                    "torn or corrupt journal tail skipped");
                (
                    Some(at as u64),
                    Some(why.to_string()),
                    (bytes.len() - at) as u64,
                )
            }
            None => (None, None, 0),
        };
        report.segments.push(SegmentReport {
            name,
            bytes: bytes.len() as u64,
            entries: count,
            damaged_at,
            damage,
            skipped_bytes: skipped,
        });
    }
    report.damage = chain_damage(dir, &segments, &snapshots, start, &mut report.manifest);
    let next = segments
        .last()
        .copied()
        .into_iter()
        .chain(snapshots.last().copied())
        .chain(report.manifest.as_ref().map(|m| m.newest_segment))
        .max()
        .map_or(0, |n| n + 1);
    Ok((state, next, report))
}

/// What is missing from the chain the state was restored from (segments `start..=newest`).
fn chain_damage(
    dir: &Path,
    segments: &[u64],
    snapshots: &[u64],
    start: u64,
    manifest: &mut Option<Manifest>,
) -> Vec<String> {
    let mut damage = Vec::new();
    match read_manifest(dir) {
        Err(e) => damage.push(e.to_string()),
        Ok(None) if !segments.is_empty() || !snapshots.is_empty() => damage.push(format!(
            "{MANIFEST} is missing: which journal segments should be here cannot be checked"
        )),
        Ok(m) => *manifest = m,
    }
    let newest = manifest
        .as_ref()
        .map(|m| m.newest_segment)
        .into_iter()
        .chain(segments.last().copied())
        .max();
    let Some(newest) = newest else {
        return damage;
    };
    let missing: Vec<u64> = (start..=newest)
        .filter(|n| segments.binary_search(n).is_err())
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .take(5)
            .map(|n| format!("journal-{n:020}.log"))
            .collect();
        let why = if start == 0 && snapshots.is_empty() {
            " (no snapshot is left, so the journal must go back to its first segment)"
        } else if start == 0 {
            " (no snapshot is usable, so the journal must go back to its first segment)"
        } else {
            ""
        };
        damage.push(format!(
            "{} journal segment(s) missing between {} and {newest}: {}{}{why}",
            missing.len(),
            start,
            names.join(", "),
            if missing.len() > 5 { ", …" } else { "" },
        ));
    }
    damage
}

/// Open segment `n` for appending (created). The journal begins a segment with its format
/// marker, written with its first entries ([`segment_start`]).
pub fn open_segment(dir: &Path, n: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))?;
    sync_dir(dir)?;
    Ok(f)
}

/// The first bytes of a segment this build writes: the format marker of its version.
pub fn segment_start() -> Vec<u8> {
    let mut marker = Vec::new();
    codec::encode_format(Format::Journal.current(), &mut marker);
    marker
}

/// Drop snapshots beyond the newest `keep` and segments older than the oldest kept one.
pub fn prune(dir: &Path, keep: usize) -> io::Result<()> {
    let (segments, snapshots) = list(dir)?;
    if snapshots.len() <= keep {
        if let Some(oldest) = snapshots.first() {
            for s in segments.iter().filter(|s| *s < oldest) {
                fs::remove_file(segment_path(dir, *s))?;
            }
        }
        return Ok(());
    }
    let cut = snapshots.len() - keep;
    for s in &snapshots[..cut] {
        fs::remove_file(snapshot_path(dir, *s))?;
    }
    let oldest = snapshots[cut];
    for s in segments.iter().filter(|s| **s < oldest) {
        fs::remove_file(segment_path(dir, *s))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::codec::{Entry, Layout, test_accepted};
    use crate::record::{StepDone, StepMark};

    fn rec(seq: u64) -> Entry {
        test_accepted(0, seq)
    }

    fn append(dir: &Path, n: u64, entries: &[Entry]) {
        let mut buf = Vec::new();
        for e in entries {
            codec::encode(e, &mut buf);
        }
        let mut f = open_segment(dir, n).unwrap();
        f.write_all(&segment_start()).unwrap();
        f.write_all(&buf).unwrap();
    }

    /// Segment `n` as `b6dd6cc` wrote it: no marker, frames of layout 1.
    fn append_v1(dir: &Path, n: u64, entries: &[Entry]) {
        let mut buf = Vec::new();
        for e in entries {
            codec::encode_in(e, Layout::V1, &mut buf);
        }
        fs::write(segment_path(dir, n), buf).unwrap();
    }

    /// A snapshot image of `state` as `b6dd6cc` wrote it (version 1, frames of layout 1).
    fn snapshot_v1(state: &State) -> Vec<u8> {
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&1u32.to_le_bytes());
        let header = state.header_entries();
        let records: Vec<Entry> = state
            .pending
            .values()
            .map(|r| Entry::Accepted((**r).clone()))
            .chain(state.staged.values().map(|r| Entry::Staged((**r).clone())))
            .collect();
        for e in header.iter().chain(&records) {
            codec::encode_in(e, Layout::V1, &mut buf);
        }
        buf.extend_from_slice(TRAILER);
        buf.extend_from_slice(&((header.len() + records.len()) as u64).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// A pending record three steps into a pipeline (found, missed after a retry, a second
    /// attempt begun), and a staged one with a skipped step.
    fn with_steps() -> State {
        let mut s = State::default();
        s.apply(rec(5));
        s.apply(test_accepted(1, 0));
        for e in [
            Entry::StepAttempted {
                partition: 0,
                seq: 5,
                step: 0,
                attempts: 1,
            },
            Entry::StepDone {
                partition: 0,
                seq: 5,
                step: 0,
                done: StepDone::Found(r#"{"account":"a-1"}"#.into()),
            },
            Entry::StepAttempted {
                partition: 0,
                seq: 5,
                step: 1,
                attempts: 2,
            },
            Entry::StepDone {
                partition: 0,
                seq: 5,
                step: 1,
                done: StepDone::Miss,
            },
            Entry::StepAttempted {
                partition: 0,
                seq: 5,
                step: 2,
                attempts: 2,
            },
        ] {
            s.apply(e);
        }
        let mut staged = (*s.pending[&(0, 5)]).clone();
        staged.partition = 2;
        staged.seq = 0;
        staged.steps[2].done = Some(StepDone::Skipped);
        s.apply(Entry::Staged(staged));
        s
    }

    #[test]
    fn a_snapshot_keeps_the_step_marks_of_pending_and_staged_records() {
        let s = with_steps();
        let r = &s.pending[&(0, 5)];
        assert_eq!(r.attempts, 5);
        assert_eq!(r.steps.len(), 3);
        let (bytes, pending) = snapshot_bytes(&s);
        assert_eq!(pending, 2);
        assert_eq!(&bytes[MAGIC.len()..MAGIC.len() + 4], &2u32.to_le_bytes());
        let back = parse_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.pending[&(0, 5)].steps, r.steps);
        assert_eq!(back.staged[&(2, 0)].steps[2].done, Some(StepDone::Skipped));
        // Written to the directory and restored.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_manifest(d, &Manifest::default()).unwrap();
        write_snapshot(d, 0, &s).unwrap();
        append(d, 0, &[]);
        let (restored, _, report) = restore(d).unwrap();
        assert_eq!(restored, s);
        assert!(report.damage.is_empty(), "{:?}", report.damage);
    }

    #[test]
    fn a_version_1_snapshot_reads_as_before() {
        let mut s = State::default();
        s.apply(rec(0));
        s.apply(Entry::Committed {
            marks: vec![],
            output: 12,
            dead_letter: 3,
        });
        let image = snapshot_v1(&s);
        assert_eq!(parse_snapshot(&image).unwrap(), s);
        // Its frames are not of layout 2: read as version 2 they are damage.
        let mut as_v2 = image.clone();
        as_v2[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&2u32.to_le_bytes());
        let end = as_v2.len() - 4;
        let crc = crc32c::crc32c(&as_v2[..end]);
        as_v2[end..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            parse_snapshot(&as_v2),
            Err(SnapshotError::Damaged(_))
        ));
    }

    #[test]
    fn a_chain_of_version_1_then_version_2_segments_restores_with_step_marks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_manifest(d, &Manifest::default()).unwrap();
        // Written by the older release: a snapshot and a segment of version 1.
        let mut old = State::default();
        old.apply(rec(0));
        fs::write(snapshot_path(d, 1), snapshot_v1(&old)).unwrap();
        append_v1(
            d,
            1,
            &[
                rec(1),
                Entry::Attempted {
                    partition: 0,
                    seq: 1,
                    attempts: 2,
                },
            ],
        );
        // Then this build: version 2, with step progress of a record of either release.
        append(
            d,
            2,
            &[
                rec(2),
                Entry::StepAttempted {
                    partition: 0,
                    seq: 0,
                    step: 1,
                    attempts: 1,
                },
                Entry::StepDone {
                    partition: 0,
                    seq: 2,
                    step: 0,
                    done: StepDone::Miss,
                },
            ],
        );
        let bytes = fs::read(segment_path(d, 2)).unwrap();
        assert_eq!(codec::segment_version(&bytes).0, 2);
        let (state, next, report) = restore(d).unwrap();
        assert_eq!(next, 3);
        assert_eq!(report.segments.len(), 2);
        assert!(report.segments.iter().all(|s| s.damage.is_none()));
        assert_eq!(
            state.pending.keys().map(|k| k.1).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let marks = |seq| state.pending[&(0, seq)].steps.clone();
        assert_eq!(
            marks(0),
            vec![
                StepMark::default(),
                StepMark {
                    attempts: 1,
                    done: None
                }
            ]
        );
        assert_eq!(state.pending[&(0, 0)].attempts, 1);
        assert_eq!(state.pending[&(0, 1)].attempts, 2);
        assert!(marks(1).is_empty());
        assert_eq!(
            marks(2),
            vec![StepMark {
                attempts: 0,
                done: Some(StepDone::Miss)
            }]
        );
        // A snapshot of it is version 2 and restores the same.
        write_snapshot(d, 3, &state).unwrap();
        append(d, 3, &[]);
        let (again, _, report) = restore(d).unwrap();
        assert_eq!(again, state);
        assert_eq!(
            report.snapshot.as_deref(),
            Some("snapshot-00000000000000000003.snap")
        );
    }

    #[test]
    fn snapshot_then_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        append(d, 0, &[rec(0), rec(1)]);
        let mut s = State::default();
        s.apply(rec(0));
        s.apply(rec(1));
        write_snapshot(d, 1, &s).unwrap();
        append(
            d,
            1,
            &[
                Entry::Committed {
                    marks: vec![(0, 0)],
                    output: 10,
                    dead_letter: 0,
                },
                rec(2),
            ],
        );
        // A torn write at the end of segment 1.
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(d, 1))
            .unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (state, next, report) = restore(d).unwrap();
        assert_eq!(next, 2);
        assert_eq!(
            state.pending.keys().map(|k| k.1).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(state.output_offset, 10);
        assert_eq!(
            report.snapshot.as_deref(),
            Some("snapshot-00000000000000000001.snap")
        );
        assert_eq!(
            report.segments.len(),
            1,
            "segment 0 is covered by the snapshot"
        );
        assert_eq!(report.segments[0].skipped_bytes, 6);
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        append(d, 0, &[rec(0)]);
        let mut s = State::default();
        s.apply(rec(0));
        write_snapshot(d, 1, &s).unwrap();
        append(d, 1, &[rec(1)]);
        s.apply(rec(1));
        write_snapshot(d, 2, &s).unwrap();
        let path = snapshot_path(d, 2);
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (state, next, report) = restore(d).unwrap();
        assert_eq!(state.pending.len(), 2, "snapshot 1 + segment 1 replay");
        assert_eq!(report.skipped_snapshots.len(), 1);
        assert_eq!(next, 3);
    }

    #[test]
    fn every_snapshot_corruption_is_detected() {
        let mut s = State::default();
        s.apply(rec(0));
        let (bytes, _) = snapshot_bytes(&s);
        assert_eq!(parse_snapshot(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(parse_snapshot(&bad).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(parse_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// A restore of `d` that stops on a version: the refusal's text.
    fn refused(d: &Path) -> String {
        match restore(d) {
            Err(RestoreError::Unsupported(e)) => e.to_string(),
            other => panic!("not refused: {:?}", other.map(|r| r.2)),
        }
    }

    #[test]
    fn a_segment_of_a_newer_format_version_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_manifest(d, &Manifest::default()).unwrap();
        append_v1(d, 0, &[rec(0)]);
        // A marker of version 1 is version 1 (as no marker).
        let mut marked = Vec::new();
        codec::encode_format(1, &mut marked);
        codec::encode_in(&rec(1), Layout::V1, &mut marked);
        fs::write(segment_path(d, 1), &marked).unwrap();
        append(d, 2, &[rec(2)]);
        let (state, _, report) = restore(d).unwrap();
        assert_eq!(state.pending.len(), 3);
        assert_eq!(report.segments[1].entries, 1);
        assert!(report.segments.iter().all(|s| s.damage.is_none()));
        let mut newer = Vec::new();
        codec::encode_format(3, &mut newer);
        codec::encode(&rec(3), &mut newer);
        fs::write(segment_path(d, 3), &newer).unwrap();
        let text = refused(d);
        assert!(
            text.starts_with(
                "journal segment journal-00000000000000000003.log has format version 3; \
                 this sluice ("
            ) && text.contains("reads versions 1..2"),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_of_a_newer_format_version_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_manifest(d, &Manifest::default()).unwrap();
        append(d, 0, &[rec(0)]);
        let mut s = State::default();
        s.apply(rec(0));
        write_snapshot(d, 1, &s).unwrap();
        write_snapshot(d, 2, &s).unwrap();
        // Snapshot 2 as a newer release would write it: whole, with its checksum.
        let path = snapshot_path(d, 2);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&3u32.to_le_bytes());
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            parse_snapshot(&bytes),
            Err(SnapshotError::Unsupported(UnsupportedVersion {
                found: 3,
                ..
            }))
        ));
        fs::write(&path, &bytes).unwrap();
        let text = refused(d);
        assert!(
            text.starts_with(
                "snapshot snapshot-00000000000000000002.snap has format version 3; this sluice ("
            ),
            "{text}"
        );
        // The same bytes with one more flip are damage: skipped for snapshot 1.
        bytes[end] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (_, _, report) = restore(d).unwrap();
        assert_eq!(
            report.snapshot.as_deref(),
            Some("snapshot-00000000000000000001.snap")
        );
        assert_eq!(report.skipped_snapshots[0].1, "checksum mismatch");
    }

    #[test]
    fn the_manifest_names_its_format_and_one_without_is_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let m = Manifest {
            newest_segment: 4,
            next_seq: BTreeMap::from([(0, 1 << 20)]),
        };
        write_manifest(d, &m).unwrap();
        let text = fs::read_to_string(d.join(MANIFEST)).unwrap();
        assert_eq!(
            text,
            r#"{"format":1,"newest_segment":4,"next_seq":{"0":1048576}}"#
        );
        assert_eq!(read_manifest(d).unwrap(), Some(m.clone()));
        // As b6dd6cc wrote it.
        fs::write(
            d.join(MANIFEST),
            r#"{"newest_segment":4,"next_seq":{"0":1048576}}"#,
        )
        .unwrap();
        assert_eq!(read_manifest(d).unwrap(), Some(m));
        assert!(check_manifest_version(d).is_ok());
        fs::write(
            d.join(MANIFEST),
            r#"{"format":2,"newest_segment":4,"next_seq":{}}"#,
        )
        .unwrap();
        let text = refused(d);
        assert!(
            text.starts_with("MANIFEST has format version 2; this sluice ("),
            "{text}"
        );
        // Unreadable is damage, not a version.
        fs::write(d.join(MANIFEST), "{").unwrap();
        let (_, _, report) = restore(d).unwrap();
        assert!(report.damage[0].contains("MANIFEST is unreadable"));
    }

    #[test]
    fn prune_keeps_what_the_oldest_kept_snapshot_needs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for n in 0..4 {
            append(d, n, &[rec(n)]);
            if n > 0 {
                write_snapshot(d, n, &State::default()).unwrap();
            }
        }
        prune(d, 2).unwrap();
        let (segments, snapshots) = list(d).unwrap();
        assert_eq!(snapshots, vec![2, 3]);
        assert_eq!(segments, vec![2, 3]);
    }
}
