//! The versions of the formats sluice writes and reads (README "Upgrades"): journal
//! segments, snapshots, the MANIFEST and the batches forwarded between nodes each carry
//! one, so that a file or a batch of a newer release is refused, naming both versions,
//! instead of being misread or taken for damage.
//!
//! Version 1 of every format is what releases up to commit `b6dd6cc` wrote, with no marker
//! where none existed then (the fixtures in `tests/fixtures/v1/` are of that commit):
//!
//! | format | where the version is | no marker means |
//! |---|---|---|
//! | journal segment | a first frame with tag 16 and a `u32` ([`crate::durability::codec::segment_version`]), written from version 2 on | 1 |
//! | snapshot | the `u32` after the magic (since version 1) | — |
//! | MANIFEST | its `"format"` field | 1 |
//! | forwarded batch | the `x-sluice-format` request header ([`FORWARD_HEADER`]) | 1 |
//!
//! Version 2 (pipelines, README "Pipelines") holds each record's step marks (attempts
//! and result per step) and the step entries `StepAttempted`/`StepDone`: journal segments
//! (with a marker), snapshots and forwarded batches carry frames of
//! [`crate::durability::codec::Layout::V2`]. The MANIFEST did not change: still 1.
//!
//! This build reads versions 1 and 2 and writes 2 — except a forwarded batch without step
//! marks, which it sends as version 1 (byte for byte what `b6dd6cc` sends), so peers of
//! either version take it during a rolling upgrade; a batch with step marks goes as version
//! 2, which a peer of version 1 refuses (415) and the sender keeps until it is upgraded.
//! A directory this build wrote is refused by a build that reads version 1 only.

use std::fmt;

use super::codec::Layout;

/// The request header naming the forwarded batch's format version (absent: 1).
pub const FORWARD_HEADER: &str = "x-sluice-format";

/// A versioned format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Journal,
    Snapshot,
    Manifest,
    Forward,
}

impl Format {
    /// The oldest and the newest version this build reads.
    pub const fn reads(self) -> (u32, u32) {
        match self {
            Format::Journal | Format::Snapshot | Format::Forward => (1, 2),
            Format::Manifest => (1, 1),
        }
    }

    /// The version this build writes (the newest it reads; a forwarded batch may go as
    /// an older one, [`Layout::carrying`]).
    pub const fn current(self) -> u32 {
        self.reads().1
    }

    /// [`Format::check`], and the layout of the frames of version `found` of a format made
    /// of journal frames (journal segment, snapshot, forwarded batch): version N, layout N.
    pub fn layout(self, what: impl Into<String>, found: u32) -> Result<Layout, UnsupportedVersion> {
        self.check(what, found)?;
        Ok(if found >= Layout::V2.version() {
            Layout::V2
        } else {
            Layout::V1
        })
    }

    /// `Ok` when this build reads version `found`; else the refusal naming `what` (e.g.
    /// "journal segment journal-…log") and both versions.
    pub fn check(self, what: impl Into<String>, found: u32) -> Result<(), UnsupportedVersion> {
        let (oldest, newest) = self.reads();
        if (oldest..=newest).contains(&found) {
            return Ok(());
        }
        Err(UnsupportedVersion {
            what: what.into(),
            found,
            oldest,
            newest,
        })
    }
}

/// Data in a format version this build does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnsupportedVersion {
    /// What carries it, e.g. "snapshot snapshot-…snap".
    pub what: String,
    pub found: u32,
    /// The versions this build reads.
    pub oldest: u32,
    pub newest: u32,
}

impl fmt::Display for UnsupportedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has format version {}; this sluice ({}) reads ",
            self.what,
            self.found,
            env!("CARGO_PKG_VERSION")
        )?;
        if self.oldest == self.newest {
            write!(f, "version {}", self.oldest)?;
        } else {
            write!(f, "versions {}..{}", self.oldest, self.newest)?;
        }
        if self.found > self.newest {
            write!(f, " (a newer release wrote it: run one that reads it)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAMES: [Format; 3] = [Format::Journal, Format::Snapshot, Format::Forward];

    #[test]
    fn frame_formats_read_versions_1_and_2_and_write_2_in_the_current_layout() {
        for format in FRAMES {
            assert_eq!(format.current(), 2);
            assert_eq!(format.current(), Layout::CURRENT.version());
            assert_eq!(format.layout("x", 1), Ok(Layout::V1));
            assert_eq!(format.layout("x", 2), Ok(Layout::V2));
            for found in [0, 3, u32::MAX] {
                let e = format.layout("journal segment j", found).unwrap_err();
                assert_eq!((e.found, e.oldest, e.newest), (found, 1, 2));
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!(
                        "journal segment j has format version {found}; this sluice ("
                    )) && text.contains(") reads versions 1..2"),
                    "{text}"
                );
                assert_eq!(text.contains("a newer release"), found > 2, "{text}");
            }
        }
    }

    #[test]
    fn the_manifest_stays_at_version_1_and_refuses_the_others_naming_both() {
        let format = Format::Manifest;
        assert_eq!(format.check("x", 1), Ok(()));
        assert_eq!(format.current(), 1);
        for found in [0, 2, u32::MAX] {
            let e = format.check("MANIFEST", found).unwrap_err();
            assert_eq!((e.found, e.oldest, e.newest), (found, 1, 1));
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "MANIFEST has format version {found}; this sluice ("
                )) && text.contains(") reads version 1"),
                "{text}"
            );
            assert_eq!(text.contains("a newer release"), found > 1, "{text}");
        }
    }

    #[test]
    fn a_range_of_readable_versions_is_named_as_one() {
        let e = UnsupportedVersion {
            what: "snapshot s".into(),
            found: 3,
            oldest: 1,
            newest: 2,
        };
        assert!(e.to_string().contains("reads versions 1..2"), "{e}");
    }
}
