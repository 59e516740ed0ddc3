//! Snapshots: `files::parse_snapshot` (what restore reads from `snapshot-<N>.snap`) on
//! arbitrary bytes.
//!
//! Input: `[flags][position][bytes…]`. Flag bit 0: rewrite every frame's CRC32C (see
//! `sluice_fuzz::reseal`). Flag bit 1: wrap the bytes as a snapshot's frames — magic and
//! version before, trailer (frame count as decoded) and checksum after — so mutations
//! reach the frames and the fold instead of stopping at the header or the checksum; flag
//! bit 2: wrapped as version 1 (frames of layout 1), else as this build's version.
//!
//! Invariants:
//! - never panics; damage is an `Err` with a non-empty, one-line reason;
//! - a snapshot that reads is canonical: writing its state again gives an image that
//!   reads as the same state and is a fixed point of read-then-write;
//! - any single flipped byte and any truncation of a good image is reported as damage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::durability::codec::{self, Layout};
use sluice::durability::files::{parse_snapshot, snapshot_bytes};
use sluice::durability::state::State;

/// Magic + version (that of `layout`), and the trailer tag, as the writer lays them out
/// (taken from the image of an empty state: `MAGIC | version | "END!" | count u64 | crc u32`).
fn frame(layout: Layout) -> (Vec<u8>, Vec<u8>) {
    let (empty, _) = snapshot_bytes(&State::default());
    let tail = 4 + 8 + 4;
    let head = empty.len() - tail;
    let mut magic_version = empty[..head].to_vec();
    magic_version[head - 4..].copy_from_slice(&layout.version().to_le_bytes());
    (magic_version, empty[head..head + 4].to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut it = data.iter();
    let flags = it.next().copied().unwrap_or(0);
    let position = it.next().copied().unwrap_or(0);
    let mut frames = it.as_slice().to_vec();
    if flags & 1 == 1 {
        sluice_fuzz::reseal(&mut frames);
    }
    let image = if flags & 2 == 2 {
        let layout = if flags & 4 == 4 { Layout::V1 } else { Layout::CURRENT };
        let (head, trailer) = frame(layout);
        let count = codec::decode_all(&frames, layout).0.len() as u64;
        let mut image = head;
        image.extend_from_slice(&frames);
        image.extend_from_slice(&trailer);
        image.extend_from_slice(&count.to_le_bytes());
        let crc = crc32c::crc32c(&image);
        image.extend_from_slice(&crc.to_le_bytes());
        image
    } else {
        frames
    };

    let state = match parse_snapshot(&image) {
        Ok(state) => state,
        Err(why) => {
            let why = why.to_string();
            assert!(!why.is_empty() && !why.contains('\n'), "reason: {why:?}");
            return;
        }
    };
    let (written, _) = snapshot_bytes(&state);
    let reread = parse_snapshot(&written).unwrap_or_else(|e| panic!("its own image is damaged: {e}"));
    assert_eq!(reread, state, "the state written again reads back differently");
    assert_eq!(snapshot_bytes(&reread).0, written, "writing is not a fixed point");

    let at = usize::from(position) * image.len() / 256;
    let mut flipped = image.clone();
    flipped[at] ^= 1 << (flags >> 5);
    assert!(parse_snapshot(&flipped).is_err(), "a flip at byte {at} went unnoticed");
    assert!(parse_snapshot(&image[..at]).is_err(), "a cut at byte {at} went unnoticed");
});
