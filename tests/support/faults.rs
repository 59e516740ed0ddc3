//! Fault injection for the real binary: an `LD_PRELOAD` library (`io_faults.c`, built here
//! with the system C compiler) that makes `fsync`/`fdatasync` fail with EIO or run slowly
//! while files in a control directory say so. The process under test is the real one; only
//! the answer of those two calls changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built library, or why it could not be built (the caller prints a visible SKIP).
pub fn library() -> Result<&'static Path, String> {
    static LIB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIB.get_or_init(build)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn build() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/io_faults.c");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("io-faults");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let out = out_dir.join(format!("libiofaults-{}.so", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .map_err(|e| format!("{cc} not runnable: {e}"))?;
    if !status.success() {
        return Err(format!("{cc} failed to build {}: {status}", src.display()));
    }
    Ok(out)
}

/// The control directory of one process under test.
pub struct Faults {
    dir: PathBuf,
}

impl Faults {
    /// Control files live in `dir` (created).
    pub fn new(dir: &Path) -> Faults {
        std::fs::create_dir_all(dir).expect("faults dir");
        Faults {
            dir: dir.to_path_buf(),
        }
    }

    /// The environment to start the process with: `LD_PRELOAD` and the control directory.
    pub fn env(&self, lib: &Path) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            ("SLUICE_FAULTS_DIR".into(), self.dir.display().to_string()),
        ]
    }

    /// From now on, fsyncs of files whose path contains `pattern` ("" = every file) fail.
    pub fn fail_fsync(&self, pattern: &str) {
        std::fs::write(self.dir.join("fsync_fail"), pattern).expect("fsync_fail");
    }

    /// From now on, every fsync first sleeps `ms` milliseconds (0 stops it).
    pub fn delay_fsync(&self, ms: u64) {
        std::fs::write(self.dir.join("fsync_delay_ms"), ms.to_string()).expect("fsync_delay_ms");
    }

    /// Stop failing and delaying.
    pub fn heal(&self) {
        let _ = std::fs::remove_file(self.dir.join("fsync_fail"));
        let _ = std::fs::remove_file(self.dir.join("fsync_delay_ms"));
    }

    /// The calls failed or delayed so far, one `failed|delayed <path>` line each.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("fsync_calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
