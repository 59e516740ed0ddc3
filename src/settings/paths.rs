//! Where a configured path really is: the same file spelled two ways (`./data/out.jsonl`,
//! `data/out.jsonl`, an absolute path, a symlink, `data/../data/out.jsonl`) resolves to the
//! same path here, whether or not it exists yet.

use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// `path` made absolute against `base` (the working directory) with every symlink followed
/// and `.`/`..` removed. The part that exists is resolved by the filesystem (as
/// `canonicalize` would), the part that does not yet exist is appended to it as written
/// (a file that does not exist yet is its existing parent plus its name). A dangling
/// symlink resolves to where it points.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    let mut links = 0;
    resolve_abs(&base.join(path), &mut links)
}

fn resolve_abs(path: &Path, links: &mut usize) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => out.push(part),
            Component::CurDir => {}
            // `out` holds no symlink, so its parent is the real parent.
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                let is_link =
                    std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink());
                if is_link
                    && *links < MAX_LINKS
                    && let Ok(target) = std::fs::read_link(&out)
                {
                    *links += 1;
                    out.pop();
                    // An absolute target replaces `out`; a relative one is below it.
                    let joined = out.join(target);
                    out = resolve_abs(&joined, links);
                }
            }
        }
    }
    out
}

/// Whether two resolved paths are one file: equal, or (both existing) the same inode, as
/// with hard links.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// The deepest part of a resolved `path` that exists (the path itself when it does).
pub fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_file_resolve_to_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let real = std::fs::canonicalize(base).unwrap();
        let want = real.join("data/out.jsonl");
        // Neither `data` nor the file exist yet.
        for spelled in [
            "data/out.jsonl",
            "./data/out.jsonl",
            "data/../data/out.jsonl",
            "data/./out.jsonl",
            "data//out.jsonl",
        ] {
            assert_eq!(resolve(base, Path::new(spelled)), want, "{spelled}");
        }
        assert_eq!(resolve(base, &want), want);
        // The directory exists, the file not yet.
        std::fs::create_dir(base.join("data")).unwrap();
        assert_eq!(resolve(base, Path::new("data/../data/out.jsonl")), want);
        // A symlinked directory, then a symlink to the (not yet existing) file.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(base.join("data"), base.join("alias")).unwrap();
            assert_eq!(resolve(base, Path::new("alias/out.jsonl")), want);
            std::os::unix::fs::symlink("data/out.jsonl", base.join("link.jsonl")).unwrap();
            assert_eq!(resolve(base, Path::new("link.jsonl")), want);
            std::fs::write(&want, "").unwrap();
            assert_eq!(resolve(base, Path::new("link.jsonl")), want);
            // A loop ends (unresolved) instead of spinning.
            std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
            let _ = resolve(base, Path::new("loop/x"));
        }
        assert_ne!(resolve(base, Path::new("data/dead.jsonl")), want);
    }

    #[test]
    fn hard_links_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "x").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        assert!(same_file(&a, &b));
        assert!(!same_file(&a, &dir.path().join("c")));
    }
}
