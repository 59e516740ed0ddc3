//! One process per checkpoint directory: an exclusive advisory lock (`flock`) on
//! `checkpoint.dir/LOCK`, held for the life of the process and released by the kernel when
//! it exits, however it exits. The file says who holds it, so a second instance can name
//! the holder instead of silently adopting the first one's committed lengths.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the checkpoint directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "checkpoint.dir `{dir}` is in use by another sluice ({holder}); two instances must not share a checkpoint directory"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("checkpoint.dir `{dir}`: cannot lock `{LOCK_FILE}`: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Lock `dir` for this process, recording `who` (e.g. the node id) with the pid.
pub fn lock_dir(dir: &Path, who: &str) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "holder unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let since = crate::durability::journal::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    );
    let text = format!("pid {}, node {who}, since {since}\n", std::process::id());
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .map_err(io)?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_the_first_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), "n1").unwrap();
        let err = lock_dir(dir.path(), "n2").unwrap_err().to_string();
        assert!(err.contains("is in use by another sluice"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("node n1"), "{err}");
        drop(first);
        let again = lock_dir(dir.path(), "n2");
        assert!(again.is_ok(), "released with the first holder");
    }
}
