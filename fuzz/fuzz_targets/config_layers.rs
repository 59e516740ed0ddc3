//! Configuration layering: `settings::load_from` (defaults < file < environment, then the
//! value checks) on an arbitrary TOML file and arbitrary environment variables.
//!
//! Input: `[flags] TOML text 0x00 NAME=VALUE 0x00 NAME=VALUE …`. Names are prefixed with
//! `SLUICE__` unless they already are; values may hold anything but NUL (as a real
//! environment). Flag bit 0 clear: the TOML is written to a file and passed as
//! `--config`; set: no file.
//!
//! Invariants:
//! - never panics; the result is either settings that pass `validate` or a non-empty list
//!   of problems, each one non-empty line;
//! - accepted settings are stable: rendering them as TOML (`check-config`) and loading
//!   that file gives the same settings.
//!
//! The working directory is the repository (the defaults name `config/` files).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::settings::{LoadError, Settings, load_from, validate};
use sluice_fuzz::Split;

/// One file per fuzzing process, rewritten for every input.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-fuzz-{}-{name}.toml", std::process::id()))
}

fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::env::set_current_dir(repo).expect("the repository is the working directory");
    });
}

fn check_problems(e: &LoadError) {
    assert!(!e.problems.is_empty(), "an error without problems");
    for p in &e.problems {
        assert!(!p.trim().is_empty(), "an empty problem in {:?}", e.problems);
        assert!(!p.contains(['\n', '\r']), "a problem spans lines: {p:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    setup();
    let mut input = Split::new(data);
    let flags = input.byte();
    let toml = input.until(0);
    let mut env = Vec::new();
    for pair in input.rest().split(|b| *b == 0) {
        let pair = String::from_utf8_lossy(pair);
        let (name, value) = pair.split_once('=').unwrap_or((&pair, ""));
        let name = if name.starts_with("SLUICE__") {
            name.to_string()
        } else {
            format!("SLUICE__{name}")
        };
        env.push((name, value.to_string()));
    }

    let path = scratch("input");
    let file = if flags & 1 == 0 {
        std::fs::write(&path, toml).expect("the scratch file can be written");
        Some(path.as_path())
    } else {
        None
    };
    let settings: Settings = match load_from(file, env) {
        Ok(s) => s,
        Err(e) => {
            check_problems(&e);
            return;
        }
    };
    assert_eq!(validate(&settings), Vec::<String>::new());

    let rendered = settings.to_toml();
    let again_path = scratch("rendered");
    std::fs::write(&again_path, &rendered).expect("the scratch file can be written");
    match load_from(Some(&again_path), Vec::new()) {
        Ok(again) => assert_eq!(again, settings, "the rendered settings load differently:\n{rendered}"),
        Err(e) => panic!("the rendered settings do not load: {:?}\n{rendered}", e.problems),
    }
});
