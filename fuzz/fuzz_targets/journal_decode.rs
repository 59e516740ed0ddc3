//! Journal frames: `codec::decode` and `codec::decode_all` on arbitrary bytes, and the
//! fold of what they decode (`State::apply`, as restore replays a segment).
//!
//! Input: `[flags][bytes…]`. With flag bit 0 set, every frame's CRC32C is rewritten first
//! (`sluice_fuzz::reseal`), so mutations reach the payload decoder instead of stopping
//! at the checksum. Flag bit 1 selects the frame layout: set, layout 1 (segments of
//! version 1, as the seed corpus's); clear, layout 2 (records with step marks, step
//! entries).
//!
//! Invariants:
//! - `decode`: a frame is at least its 8-byte header and never longer than the input; a
//!   truncation reports the input's length and a need beyond it; the decoded entry
//!   encodes to the same bytes in its layout (the one non-canonical field: a record's `splice` flag is
//!   any non-zero byte when read, 1 when written) and decodes back to itself.
//! - `decode_all`: a bad frame is reported at an offset inside the input; the entries
//!   before it are exactly what decoding the input cut at that offset gives, without an
//!   error; the entries encode and decode back to themselves.
//! - folding the entries into a `State` never panics, and a snapshot of that state reads
//!   back as the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::durability::codec::{self, Entry, FrameError, Layout};
use sluice::durability::files::{parse_snapshot, snapshot_bytes};
use sluice::durability::state::State;

/// Offset of a record's `splice` byte in an Accepted/Staged frame: header 8, tag 1,
/// partition 4, seq 8, accepted_ms 8, first_attempt_ms 8, attempts 4.
const SPLICE_AT: usize = 8 + 1 + 4 + 8 + 8 + 8 + 4;

fuzz_target!(|data: &[u8]| {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if flags & 1 == 1 {
        sluice_fuzz::reseal(&mut buf);
    }
    let layout = if flags & 2 == 2 { Layout::V1 } else { Layout::V2 };

    match codec::decode(&buf, layout) {
        Ok((entry, n)) => {
            assert!((8..=buf.len()).contains(&n), "frame length {n} of {}", buf.len());
            let mut again = Vec::new();
            codec::encode_in(&entry, layout, &mut again);
            assert_eq!(again.len(), n, "re-encoded to another length: {entry:?}");
            let is_record = matches!(entry, Entry::Accepted(_) | Entry::Staged(_));
            for (i, (a, b)) in again.iter().zip(&buf[..n]).enumerate() {
                let canonical_difference = (4..8).contains(&i) || (is_record && i == SPLICE_AT);
                assert!(a == b || canonical_difference, "byte {i} differs after re-encoding {entry:?}");
            }
            assert_eq!(codec::decode(&again, layout), Ok((entry, n)));
        }
        Err(FrameError::Truncated { have, need }) => {
            assert_eq!(have, buf.len());
            assert!(need > have);
        }
        Err(_) => {}
    }

    let (entries, err) = codec::decode_all(&buf, layout);
    let whole = match err {
        Some((at, why)) => {
            assert!(at < buf.len(), "bad frame reported at {at} of {} ({why})", buf.len());
            at
        }
        None => buf.len(),
    };
    assert_eq!(
        codec::decode_all(&buf[..whole], layout),
        (entries.clone(), None),
        "the good prefix decodes differently alone"
    );
    let mut again = Vec::new();
    for e in &entries {
        codec::encode_in(e, layout, &mut again);
    }
    assert!(again.len() <= whole, "entries grew when encoded again");
    assert_eq!(codec::decode_all(&again, layout), (entries.clone(), None));

    let mut state = State::default();
    for e in entries {
        state.apply(e);
    }
    let (image, _) = snapshot_bytes(&state);
    assert_eq!(parse_snapshot(&image).as_ref(), Ok(&state), "a snapshot of the fold reads back differently");
});
