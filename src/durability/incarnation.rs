//! Which life of a node id this checkpoint directory is (README "Cluster", *Incarnations*).
//!
//! A node that starts on an empty `checkpoint.dir` (its PersistentVolumeClaim re-created, an
//! `emptyDir`) has forgotten everything its earlier life staged, forwarded and numbered: its
//! stage numbers start again at 0. If the other nodes knew it only by its id they would take
//! its new batches for resends of its former life's and drop them. So a fresh directory
//! gets a new random incarnation, kept in `checkpoint.dir/INCARNATION` (written atomically
//! before anything else), and everything that identifies a sender — import watermarks,
//! generated ids of staged records, the member key in etcd — names the incarnation too.
//!
//! A directory written before incarnations existed (data but no `INCARNATION` file) is the
//! *first* incarnation, spelled as the empty string: its peers' watermarks were kept under
//! the bare node id, which is what an empty incarnation maps to (`engine/outbox.rs`,
//! `Source::to_key`), so an upgrade in place neither drops nor doubles anything.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::files;

/// The file's name inside the checkpoint directory.
pub const FILE: &str = "INCARNATION";

/// Why the incarnation could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    #[error("checkpoint.dir `{dir}`: cannot read `{FILE}`: {source}")]
    Read { dir: PathBuf, source: io::Error },
    #[error("checkpoint.dir `{dir}`: cannot write `{FILE}`: {source}")]
    Write { dir: PathBuf, source: io::Error },
    #[error(
        "checkpoint.dir `{dir}`: `{FILE}` holds `{found}`, not an incarnation (16 hex digits); \
         it was damaged or written by something else"
    )]
    Malformed { dir: PathBuf, found: String },
}

/// Whether `dir` holds nothing a node wrote (no journal segment, snapshot or manifest).
pub fn is_fresh(dir: &Path) -> io::Result<bool> {
    let (segments, snapshots) = files::list(dir)?;
    Ok(segments.is_empty() && snapshots.is_empty() && !dir.join(files::MANIFEST).exists())
}

/// This directory's incarnation: the one recorded in it; a new one for a fresh directory
/// (recorded durably before this returns); the empty (first) incarnation for a directory
/// written before incarnations existed.
pub fn establish(dir: &Path) -> Result<String, IncarnationError> {
    let path = dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim();
            if is_valid(found) {
                return Ok(found.to_string());
            }
            return Err(IncarnationError::Malformed {
                dir: dir.to_path_buf(),
                found: found.chars().take(40).collect(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(IncarnationError::Read {
                dir: dir.to_path_buf(),
                source,
            });
        }
    }
    let fresh = is_fresh(dir).map_err(|source| IncarnationError::Read {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !fresh {
        return Ok(String::new());
    }
    let new = generate();
    write(dir, &new).map_err(|source| IncarnationError::Write {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(new)
}

/// 16 lowercase hex digits (the empty first incarnation is never written).
fn is_valid(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A new random incarnation (never the empty one).
pub fn generate() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn write(dir: &Path, value: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    files::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_gets_a_new_incarnation_and_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let first = establish(d.path()).unwrap();
        assert!(is_valid(&first), "{first}");
        assert_eq!(establish(d.path()).unwrap(), first, "kept across restarts");
        let e = tempfile::tempdir().unwrap();
        assert_ne!(
            establish(e.path()).unwrap(),
            first,
            "another volume, another life"
        );
    }

    #[test]
    fn a_directory_from_before_incarnations_is_the_first_one() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(files::MANIFEST), b"{}").unwrap();
        assert_eq!(establish(d.path()).unwrap(), "");
        assert!(!d.path().join(FILE).exists(), "nothing invented for it");
    }

    #[test]
    fn a_damaged_file_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(FILE), b"not one\n").unwrap();
        let e = establish(d.path()).unwrap_err().to_string();
        assert!(e.contains("INCARNATION") && e.contains("not one"), "{e}");
    }
}
