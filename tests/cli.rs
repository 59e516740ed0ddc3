//! The command line: `check-config` and `enrich`, exit codes and messages.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{binary, sample_table};

fn run(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
    dir: &std::path::Path,
) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_prints_the_effective_config() {
    let (code, out, err) = run(
        &["check-config"],
        &[("SLUICE__PIPELINE__CAPACITY", "250")],
        None,
        &repo(),
    );
    assert_eq!(code, 0, "{err}");
    let parsed: toml::Table = toml::from_str(&out).expect("prints TOML");
    assert_eq!(parsed["pipeline"]["capacity"].as_integer(), Some(250));
    assert_eq!(parsed["pipeline"]["mode"].as_str(), Some("ordered"));
    assert_eq!(
        parsed["lookup"]["memory"]["key_column"].as_str(),
        Some("user_id")
    );
}

#[test]
fn check_config_exits_2_with_one_line_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[pipeline]\ncapcity = 5\n[retry]\nmax_attempts = 0\n[lookup.memory]\ntable = \"/nope.jsonl\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[],
        None,
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "unknown keys are reported before values: {err}"
    );
    assert!(lines[0].contains("unknown key `pipeline.capcity`"), "{err}");

    std::fs::write(
        &cfg,
        "[retry]\nmax_attempts = 0\n[lookup.memory]\ntable = \"/nope.jsonl\"\n",
    )
    .unwrap();
    let (code, _, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("SLUICE__PIPELINE__TIMEOUT_MS", "soon")],
        None,
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("SLUICE__PIPELINE__TIMEOUT_MS: expected an integer"),
        "{err}"
    );

    let (code, _, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[],
        None,
        dir.path(),
    );
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(err.contains("retry.max_attempts"));
    assert!(err.contains("lookup.memory.table: cannot read `/nope.jsonl`"));
}

#[test]
fn serve_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        &["serve"],
        &[("SLUICE__PIPELINE__PARTITIONS", "0")],
        None,
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pipeline.partitions"), "{err}");
}

#[test]
fn enrich_writes_envelopes_reports_bad_lines_and_summarizes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\":\"a\",\"user_id\":\"u1\"}\n\
         {\"id\":\"b\",\"user_id\":\"u2\"}\n\
         not json\n\
         \n\
         {\"id\":\"c\"}\n\
         {\"id\":\"d\",\"user_id\":\"ghost\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let (code, stdout, err) = run(
        &[
            "enrich",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--dead-letter",
            dead.to_str().unwrap(),
        ],
        &[(
            "SLUICE__LOOKUP__MEMORY__TABLE",
            sample_table().to_str().unwrap(),
        )],
        None,
        dir.path(),
    );
    assert_eq!(code, 1, "rejected lines make the run fail: {err}");
    assert!(stdout.is_empty());
    assert!(err.contains("line 3: not valid JSON"), "{err}");
    assert!(
        err.contains("line 5: /user_id: the key is missing"),
        "{err}"
    );
    assert!(err.contains("3 records in"), "{err}");
    assert!(err.contains("ok 2, miss 1, timeout 0, failed 0"), "{err}");
    assert!(err.contains("2 rejected input lines"), "{err}");
    let lines = support::read_lines(&out);
    let mut ids: Vec<&str> = lines.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["a", "b", "d"]);
    let d = lines.iter().find(|e| e["id"] == "d").unwrap();
    assert_eq!(d["outcome"], "miss");
    assert!(!dead.exists() || support::read_lines(&dead).is_empty());
}

#[test]
fn enrich_streams_stdin_to_stdout_in_every_mode() {
    let input: String = (0..2000)
        .map(|i| format!("{{\"id\":\"r{i}\",\"user_id\":\"u{}\"}}\n", i % 50 + 1))
        .collect();
    for mode in ["ordered", "unordered", "key_ordered"] {
        let dir = tempfile::tempdir().unwrap();
        let (code, stdout, err) = run(
            &["enrich"],
            &[
                (
                    "SLUICE__LOOKUP__MEMORY__TABLE",
                    sample_table().to_str().unwrap(),
                ),
                ("SLUICE__PIPELINE__MODE", mode),
                ("SLUICE__PIPELINE__CAPACITY", "7"),
                ("SLUICE__PIPELINE__BACKLOG", "10"),
            ],
            Some(&input),
            dir.path(),
        );
        assert_eq!(code, 0, "{err}");
        let envelopes: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(envelopes.len(), 2000, "{mode}");
        let mut ids: Vec<&str> = envelopes
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2000, "{mode}: each record once");
        assert!(envelopes.iter().all(|e| e["outcome"] == "ok"));
    }
}

#[test]
fn enrich_with_a_missing_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        &["enrich", "--input", "/no/such/file.jsonl"],
        &[(
            "SLUICE__LOOKUP__MEMORY__TABLE",
            sample_table().to_str().unwrap(),
        )],
        None,
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--input: cannot open `/no/such/file.jsonl`"),
        "{err}"
    );
}
