//! The command line: `check-config` and `enrich`, exit codes and messages.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{binary, sample_table, serve_exit};

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

/// A config for a service in `dir`: `[server]` binds an ephemeral port (plus `server`),
/// `[lookup.memory]` reads the sample table unless `memory` sets `table`, then `rest`.
fn config_text(server: &str, memory: &str, rest: &str) -> String {
    let table = if memory.contains("table") {
        String::new()
    } else {
        format!("table = \"{}\"\n", sample_table().display())
    };
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\n{server}\n[lookup.memory]\n{table}{memory}\n{rest}\n"
    )
}

/// `sluice check-config --config NAME` in `dir` with `text` as the file.
fn check_config(dir: &std::path::Path, name: &str, text: &str) -> (i32, String, String) {
    std::fs::write(dir.join(name), text).unwrap();
    run(&["check-config", "--config", name], &[], None, dir)
}

#[test]
fn two_file_sinks_on_one_file_are_refused_however_spelled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let real = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("data/out.jsonl");
    std::os::unix::fs::symlink(&real, dir.path().join("link.jsonl")).unwrap();
    let abs = real.display().to_string();
    let same = format!(
        "sluice: output.path and dead_letter.path are the same file `{abs}`: each file sink needs \
         a file of its own (on a restart one would cut away the other's records)"
    );
    for other in [
        "data/out.jsonl",
        "./data/out.jsonl",
        abs.as_str(),
        "link.jsonl",
        "data/../data/out.jsonl",
    ] {
        let text = config_text(
            "",
            "",
            &format!(
                "[output]\npath = \"data/out.jsonl\"\n[dead_letter]\npath = \"{other}\"\n\
                 [checkpoint]\ndir = \"ck\"\n"
            ),
        );
        let (code, out, err) = check_config(dir.path(), "same.toml", &text);
        assert_eq!(code, 2, "{other}: {err}");
        assert!(out.is_empty(), "{other}");
        assert_eq!(
            err.lines().collect::<Vec<_>>(),
            vec![same.as_str()],
            "{other}"
        );
    }

    // serve refuses it alike, before any sink is opened: what the file holds stays.
    std::fs::write(&real, "{\"id\":\"acknowledged\"}\n").unwrap();
    let text = config_text(
        "",
        "",
        "[output]\npath = \"./data/out.jsonl\"\n[dead_letter]\npath = \"link.jsonl\"\n\
         [checkpoint]\ndir = \"ck\"\n",
    );
    let (code, err) = serve_exit(dir.path(), "serve.toml", &text);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().collect::<Vec<_>>(), vec![same.as_str()]);
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        "{\"id\":\"acknowledged\"}\n"
    );

    // A sink's file inside the checkpoint directory.
    let text = config_text(
        "",
        "",
        "[output]\npath = \"./data/ck/out.jsonl\"\n[checkpoint]\ndir = \"data/ck\"\n",
    );
    let (code, _, err) = check_config(dir.path(), "inside.toml", &text);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![format!(
            "sluice: output.path: `./data/ck/out.jsonl` is inside checkpoint.dir `{}`; a sink's \
             file must be outside the checkpoint directory",
            real.parent().unwrap().join("ck").display()
        )]
    );

    // Only file sinks have files: a stdout output beside a file dead letter is fine.
    let text = config_text(
        "",
        "",
        "[output]\nkind = \"stdout\"\npath = \"data/out.jsonl\"\n\
         [dead_letter]\npath = \"data/out.jsonl\"\n",
    );
    let (code, _, err) = check_config(dir.path(), "stdout.toml", &text);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_config_runs_the_validation_serve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("folder")).unwrap();
    std::fs::write(d.join("plain"), "").unwrap();
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"user_id\":\"u1\",\"name\":\"Ada\"}\n{\"user_id\":\"u2\",\n",
    )
    .unwrap();
    std::fs::write(d.join("nokey.jsonl"), "{\"name\":\"Ada\"}\n").unwrap();
    let cases = [
        (
            config_text("", "table = \"folder\"\n", ""),
            "lookup.memory.table: `folder` is a directory, not a JSONL file",
        ),
        (
            config_text("", "table = \"bad.jsonl\"\n", ""),
            "lookup.memory.table: `bad.jsonl` line 2: invalid JSON at column",
        ),
        (
            config_text("", "table = \"nokey.jsonl\"\n", ""),
            "lookup.memory.table: `nokey.jsonl` line 1: no `user_id` column",
        ),
        (
            config_text("", "", "[checkpoint]\ndir = \"\"\n"),
            "checkpoint.dir: must not be empty",
        ),
        (
            config_text("", "", "[checkpoint]\ndir = \"plain\"\n"),
            "checkpoint.dir: `plain` is not a directory",
        ),
        (
            config_text("", "", "[output]\npath = \"folder\"\n"),
            "output.path: `folder` is a directory, not a file",
        ),
        (
            config_text("", "", "[dead_letter]\npath = \"folder\"\n"),
            "dead_letter.path: `folder` is a directory, not a file",
        ),
        (
            config_text("workers = 600\n", "", ""),
            "server.workers: must be at most 512 (0 = one per core), got 600",
        ),
    ];
    for (text, want) in &cases {
        let (code, out, err) = check_config(d, "case.toml", text);
        assert_eq!(code, 2, "check-config, {want}: {err}");
        assert!(out.is_empty());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].starts_with(&format!("sluice: {want}")), "{err}");
        let (code, serve_err) = serve_exit(d, "case.toml", text);
        assert_eq!(code, Some(2), "serve, {want}: {serve_err}");
        assert_eq!(serve_err, err, "serve and check-config say the same");
    }

    // Every problem at once, one line each.
    let text = config_text(
        "workers = 600\n",
        "table = \"bad.jsonl\"\n",
        "[output]\npath = \"folder\"\n[checkpoint]\ndir = \"plain\"\n[retry]\nmax_attempts = 0\n",
    );
    let (code, _, err) = check_config(d, "all.toml", &text);
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    for key in [
        "server.workers",
        "retry.max_attempts",
        "checkpoint.dir",
        "output.path",
        "lookup.memory.table",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("sluice: {key}: "))),
            "{key}: {err}"
        );
    }
}

#[test]
fn values_are_not_coerced_and_enum_errors_name_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        "",
        "",
        "[pipeline]\npartitions = 1.5\ncapacity = inf\nbacklog = true\nmode = \"fifo\"\n\
         on_timeout = \"drop\"\n\
         [retry]\non = [\"error\", \"never\"]\nmultiplier = 2\n\
         [lookup]\nbackend = \"redis\"\non_miss = \"skip\"\n\
         [output]\nkind = \"s3\"\n[dead_letter]\nkind = \"kafka\"\n\
         [checkpoint]\nack = \"maybe\"\n",
    );
    let (code, out, err) = check_config(dir.path(), "types.toml", &text);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    let mut lines: Vec<&str> = err.lines().collect();
    lines.sort_unstable();
    let mut want = vec![
        "sluice: types.toml: pipeline.partitions: expected an integer, got 1.5",
        "sluice: types.toml: pipeline.capacity: expected an integer, got inf",
        "sluice: types.toml: pipeline.backlog: expected an integer, got true",
        "sluice: types.toml: pipeline.mode: \"fifo\" is not one of ordered, unordered, key_ordered",
        "sluice: types.toml: pipeline.on_timeout: \"drop\" is not one of dead_letter, pass_through",
        "sluice: types.toml: retry.on: \"never\" is not one of error, timeout, miss",
        "sluice: types.toml: lookup.backend: \"redis\" is not one of memory, cql",
        "sluice: types.toml: lookup.on_miss: \"skip\" is not one of emit, dead_letter",
        "sluice: types.toml: output.kind: \"s3\" is not one of file, stdout, cql, webhook",
        "sluice: types.toml: dead_letter.kind: \"kafka\" is not one of file, stdout, cql, webhook",
        "sluice: types.toml: checkpoint.ack: \"maybe\" is not one of durable, received",
    ];
    want.sort_unstable();
    assert_eq!(lines, want);

    // From the environment too: parsed as the key's type, checked against its names.
    let (code, _, err) = run(
        &["check-config"],
        &[
            ("SLUICE__PIPELINE__PARTITIONS", "1.5"),
            ("SLUICE__PIPELINE__MODE", "fifo"),
            (
                "SLUICE__LOOKUP__MEMORY__TABLE",
                sample_table().to_str().unwrap(),
            ),
        ],
        None,
        dir.path(),
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![
            "sluice: env SLUICE__PIPELINE__MODE: \"fifo\" is not one of ordered, unordered, key_ordered",
            "sluice: env SLUICE__PIPELINE__PARTITIONS: expected an integer, got `1.5`",
        ]
    );
}

/// The entries of a help section (`Commands:`, `Options:`): each item's first line and its
/// description (on that line after the item, or on the next, more indented line).
fn help_entries(help: &str, section: &str) -> Vec<(String, String)> {
    let mut lines = help
        .lines()
        .skip_while(|l| l.trim() != section)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .peekable();
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let (item, mut description) = match trimmed.split_once("  ") {
            Some((item, rest)) => (item.to_string(), rest.trim().to_string()),
            None => (trimmed.to_string(), String::new()),
        };
        let indent = line.len() - trimmed.len();
        if description.is_empty()
            && let Some(next) = lines.next_if(|n| n.len() - n.trim_start().len() > indent)
        {
            description = next.trim().to_string();
        }
        out.push((item, description));
    }
    out
}

#[test]
fn every_command_and_option_says_what_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let (code, help, _) = run(&["--help"], &[], None, dir.path());
    assert_eq!(code, 0);
    let commands = help_entries(&help, "Commands:");
    let described = |name: &str| {
        commands
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{help}"))
    };
    assert_eq!(described("cluster"), "Cluster commands (read from etcd)");
    assert!(
        described("inspect").starts_with("Show what a checkpoint directory holds"),
        "{help}"
    );
    let mut invocations: Vec<Vec<&str>> = Vec::new();
    for (name, description) in &commands {
        assert!(
            !description.is_empty(),
            "`{name}` has no description:\n{help}"
        );
        if name != "help" && name != "cluster" {
            invocations.push(vec![name]);
        }
    }
    assert!(invocations.len() >= 4, "{help}");
    invocations.push(vec!["cluster", "status"]);
    for args in invocations {
        let mut with_help = args.clone();
        with_help.push("--help");
        let (code, help, _) = run(&with_help, &[], None, dir.path());
        assert_eq!(code, 0, "{args:?}");
        let options = help_entries(&help, "Options:");
        assert!(!options.is_empty(), "{args:?}:\n{help}");
        for (option, description) in options {
            assert!(
                !description.is_empty(),
                "`sluice {}`: {option} has no description:\n{help}",
                args.join(" ")
            );
        }
    }
}

/// A memory step `name` over the sample table, binding `bind`, merging at `into`.
fn memory_step(name: &str, bind: &str, into: &str, extra: &str) -> String {
    format!(
        "[lookup.steps.{name}]\nbackend = \"memory\"\ntable = \"{}\"\nkey_column = \"user_id\"\n\
         binds = [\"{bind}\"]\ninto = \"{into}\"\n{extra}",
        sample_table().display()
    )
}

#[test]
fn check_config_and_serve_refuse_bad_pipelines_naming_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = "[server]\nbind = \"127.0.0.1:0\"\n";
    let cases: [(String, &[&str]); 3] = [
        (
            format!(
                "{head}{}{}",
                memory_step("a", "/b/x", "/a", ""),
                memory_step("b", "/a/y", "/b", "")
            ),
            &["lookup.steps: the steps depend on each other in a cycle: a -> b -> a"],
        ),
        (
            format!(
                "{head}{}{}{}",
                memory_step("a", "/k", "/x", "after = [\"nobody\"]\n"),
                memory_step("b", "/k", "/x", ""),
                memory_step("c", "/k", "/c", "attempt_timeout_ms = 0\n")
            ),
            &[
                "lookup.steps.a.into and lookup.steps.b.into: both merge at `/x` (each step needs \
                 a place of its own)",
                "lookup.steps.a.after: no step is named `nobody`",
                "lookup.steps.c.attempt_timeout_ms: must be at least 1",
            ],
        ),
        (
            format!(
                "{head}[lookup]\nbackend = \"memory\"\n[lookup.memory]\nkey_column = \"id\"\n{}",
                memory_step("a", "/k", "/a", "")
            ),
            &[
                "lookup.backend (case.toml), lookup.memory.key_column (case.toml): single-lookup \
               keys cannot be set with [lookup.steps.*]",
            ],
        ),
    ];
    for (text, want) in &cases {
        let (code, out, err) = check_config(d, "case.toml", text);
        assert_eq!(code, 2, "check-config: {err}");
        assert!(out.is_empty());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), want.len(), "one line per problem: {err}");
        for (line, want) in lines.iter().zip(want.iter()) {
            assert!(line.starts_with(&format!("sluice: {want}")), "{err}");
        }
        let (code, serve_err) = serve_exit(d, "case.toml", text);
        assert_eq!(code, Some(2), "serve: {serve_err}");
        assert_eq!(serve_err, err, "serve and check-config say the same");
    }

    // The mix from the environment: named with the variable.
    std::fs::write(d.join("steps.toml"), memory_step("a", "/k", "/a", "")).unwrap();
    let (code, _, err) = run(
        &["check-config", "--config", "steps.toml"],
        &[("SLUICE__LOOKUP__ON_MISS", "dead_letter")],
        None,
        d,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(
            "sluice: lookup.on_miss (env SLUICE__LOOKUP__ON_MISS): single-lookup keys cannot be set"
        ) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn the_pipeline_example_is_accepted_and_printed_with_every_step() {
    let (code, out, err) = run(
        &["check-config", "--config", "config/pipeline-example.toml"],
        &[],
        None,
        &repo(),
    );
    assert_eq!(code, 0, "{err}");
    let printed: toml::Table = toml::from_str(&out).expect("prints TOML");
    let lookup = printed["lookup"].as_table().unwrap();
    assert!(
        !lookup.contains_key("backend") && !lookup.contains_key("memory"),
        "no single-lookup keys beside steps: {out}"
    );
    let steps = lookup["steps"].as_table().unwrap();
    assert_eq!(
        steps.keys().collect::<Vec<_>>(),
        vec!["account", "geo", "plan", "user"]
    );
    assert_eq!(steps["user"]["backend"].as_str(), Some("cql"));
    assert_eq!(
        steps["user"]["cache"]["miss_ttl_ms"].as_integer(),
        Some(5000)
    );
    assert_eq!(
        steps["account"]["binds"][0].as_str(),
        Some("/user/account_id")
    );
    assert_eq!(steps["plan"]["table"].as_str(), Some("config/plans.jsonl"));
    assert_eq!(
        steps["geo"]["url"].as_str(),
        Some("http://127.0.0.1:9100/geo/{0}")
    );
    // Defaults are printed too; keys of other backends are not.
    assert_eq!(
        steps["account"]["attempt_timeout_ms"].as_integer(),
        Some(500)
    );
    assert!(!steps["account"].as_table().unwrap().contains_key("url"));
    assert_eq!(lookup["cql"]["keyspace"].as_str(), Some("sluice_demo"));
}

#[test]
fn env_overrides_of_step_keys_show_in_check_config() {
    let query = "SELECT name, tier, account_id FROM users_v2 WHERE user_id = ?";
    let (code, out, err) = run(
        &["check-config", "--config", "config/pipeline-example.toml"],
        &[
            ("SLUICE__LOOKUP__STEPS__USER__QUERY", query),
            ("SLUICE__LOOKUP__STEPS__PLAN__DELAY_MS", "2,5"),
            ("SLUICE__LOOKUP__STEPS__GEO__HEADERS__X_API_KEY", "k1"),
            ("SLUICE__LOOKUP__STEPS__DEVICE__BACKEND", "memory"),
            ("SLUICE__LOOKUP__STEPS__DEVICE__INTO", "/device"),
            (
                "SLUICE__LOOKUP__STEPS__DEVICE__TABLE",
                "config/sample-users.jsonl",
            ),
            ("SLUICE__LOOKUP__STEPS__DEVICE__KEY_COLUMN", "user_id"),
            ("SLUICE__LOOKUP__STEPS__DEVICE__BINDS", "/device_owner"),
        ],
        None,
        &repo(),
    );
    assert_eq!(code, 0, "{err}");
    let printed: toml::Table = toml::from_str(&out).expect("prints TOML");
    let steps = &printed["lookup"]["steps"];
    assert_eq!(steps["user"]["query"].as_str(), Some(query));
    assert_eq!(
        steps["plan"]["delay_ms"].as_array().unwrap(),
        &vec![toml::Value::Integer(2), toml::Value::Integer(5)]
    );
    assert_eq!(steps["geo"]["headers"]["x-api-key"].as_str(), Some("k1"));
    assert_eq!(steps["device"]["into"].as_str(), Some("/device"));
    assert_eq!(steps["device"]["binds"][0].as_str(), Some("/device_owner"));

    // A wrong value from the environment names the variable and the step key.
    let (code, _, err) = run(
        &["check-config", "--config", "config/pipeline-example.toml"],
        &[("SLUICE__LOOKUP__STEPS__GEO__CONCURRENCY", "0")],
        None,
        &repo(),
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "sluice: lookup.steps.geo.concurrency: must be at least 1\n"
    );
}
