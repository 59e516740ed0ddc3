//! Operating safety, black-box against the real binary: what an operator's mistake, a
//! damaged data directory or a stream fault does (README "Operating").

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Config, Service, SmallDisk, binary, read_lines, serve_exit, spawn_serve, wait_exit};

fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "user_id": format!("u{}", i % 50 + 1)}))
        .collect()
}

#[test]
fn a_second_instance_on_the_same_checkpoint_dir_exits_2_naming_the_holder() {
    let first = Service::start(&Config::default());
    let ids = first.post_all(&records("a", 200), 100);
    first.wait_quiescent(Duration::from_secs(10));
    // The same config (same checkpoint dir and sinks), another port.
    let text = Config::default().render(&first.dir);
    let (code, err) = serve_exit(&first.dir, "second.toml", &text);
    assert_eq!(code, Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("in use"))
        .unwrap_or_else(|| panic!("no line names the lock: {err}"));
    assert!(line.contains("checkpoints"), "names the dir: {line}");
    assert!(
        line.contains(&format!("pid {}", first.pid().unwrap())),
        "names the holder: {line}"
    );
    // The first instance is untouched: its output still holds every record.
    assert_eq!(first.status()["pending"], 0);
    let (out, dead) = first.finish();
    support::assert_exactly_once(&ids, &out, &dead);
}

#[test]
fn a_second_instance_writing_the_same_output_file_exits_2() {
    let first = Service::start(&Config::default());
    let ids = first.post_all(&records("b", 100), 100);
    first.wait_quiescent(Duration::from_secs(10));
    let other = tempfile::tempdir().unwrap();
    // Its own checkpoint dir, but the first instance's output file.
    let text = Config::default().render(other.path()).replace(
        &other.path().join("out.jsonl").display().to_string(),
        &first.dir.join("out.jsonl").display().to_string(),
    );
    let (code, err) = serve_exit(other.path(), "second.toml", &text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("out.jsonl") && l.contains("in use by another process")),
        "{err}"
    );
    let (out, dead) = first.finish();
    support::assert_exactly_once(&ids, &out, &dead);
    assert_eq!(read_lines(&other.path().join("dead.jsonl")).len(), 0);
}

#[test]
fn changing_partitions_while_records_are_pending_is_refused_with_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Config {
        pipeline: "partitions = 2\ntimeout_ms = 60000\n".into(),
        memory: "delay_ms = [5000, 5000]\n".into(),
        ..Config::default()
    };
    let mut svc = Service::start_in(&slow, dir.path());
    let ids = svc.post_all(&records("p", 100), 100);
    assert_eq!(svc.status()["pending"], 100);
    svc.kill9();
    let mut raised = Config {
        pipeline: "partitions = 4\ntimeout_ms = 60000\n".into(),
        ..Config::default()
    };
    let (code, err) = serve_exit(dir.path(), "raised.toml", &raised.render(dir.path()));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("holds 100 pending record(s) written with pipeline.partitions = 2; with 4,"),
        "{err}"
    );
    // Back to 2: everything drains, nothing lost; then 4 is fine.
    raised.pipeline = "partitions = 2\n".into();
    let svc = Service::start_in(&raised, dir.path());
    svc.wait_quiescent(Duration::from_secs(20));
    let (out, dead) = svc.finish();
    support::assert_exactly_once(&ids, &out, &dead);
    raised.pipeline = "partitions = 4\n".into();
    let svc = Service::start_in(&raised, dir.path());
    assert_eq!(svc.status()["pending"], 0);
}

#[test]
fn a_file_moved_away_keeps_records_pending_until_sighup_reopens_it() {
    let svc = Service::start(&Config::default());
    let mut ids = svc.post_all(&records("r", 300), 100);
    svc.wait_quiescent(Duration::from_secs(10));
    let out = svc.dir.join("out.jsonl");
    let rotated = svc.dir.join("out.1.jsonl");
    std::fs::rename(&out, &rotated).unwrap();
    // Written after the move: nowhere to go, so nothing is counted emitted.
    ids.extend(svc.post_all(&records("s", 200), 100));
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("output") && body.contains("moved"), "{body}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        svc.status()["pending"],
        200,
        "kept pending while the file is gone"
    );
    assert!(!out.exists(), "not recreated without SIGHUP");
    svc.signal("HUP");
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(10));
    // Still alive and accepting after SIGHUP.
    ids.extend(svc.post_all(&records("t", 100), 100));
    svc.wait_quiescent(Duration::from_secs(10));
    let first = read_lines(&rotated);
    let (rest, dead) = svc.finish();
    assert_eq!(
        first.len(),
        300,
        "the rotated file keeps what was written before the move"
    );
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    support::assert_exactly_once(&ids, &all, &dead);
}

#[test]
fn a_file_replaced_by_a_new_one_is_reopened_at_once_and_a_crash_after_it_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start_in(&Config::default(), dir.path());
    let mut ids = svc.post_all(&records("a", 300), 100);
    svc.wait_quiescent(Duration::from_secs(10));
    let out = dir.path().join("out.jsonl");
    let rotated = dir.path().join("out.1.jsonl");
    // logrotate's `create`: move the file away and put an empty one in its place.
    std::fs::rename(&out, &rotated).unwrap();
    std::fs::write(&out, "").unwrap();
    ids.extend(svc.post_all(&records("b", 300), 100));
    svc.wait_quiescent(Duration::from_secs(10));
    assert_eq!(
        read_lines(&out).len(),
        300,
        "written to the new file without SIGHUP"
    );
    // More, then a crash: the restore must cut the new file, not mistake it for the old one.
    ids.extend(svc.post_all(&records("c", 300), 100));
    svc.kill9();
    let svc = Service::start_in(&Config::default(), dir.path());
    svc.wait_quiescent(Duration::from_secs(10));
    let first = read_lines(&rotated);
    let (rest, dead) = svc.finish();
    assert_eq!(first.len(), 300);
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    support::assert_exactly_once(&ids, &all, &dead);
}

#[test]
fn a_removed_output_directory_keeps_records_pending_until_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sinks");
    let text = Config::default().render(dir.path()).replace(
        &dir.path().join("out.jsonl").display().to_string(),
        &sub.join("out.jsonl").display().to_string(),
    );
    let svc = Service::start_in_with_text(&Config::default(), dir.path(), &text);
    let mut ids = svc.post_all(&records("a", 100), 100);
    svc.wait_quiescent(Duration::from_secs(10));
    let before = read_lines(&sub.join("out.jsonl"));
    std::fs::remove_dir_all(&sub).unwrap();
    ids.extend(svc.post_all(&records("b", 100), 100));
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("output"), "{body}");
    assert_eq!(svc.status()["pending"], 100);
    svc.signal("HUP");
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(10));
    let after = read_lines(&sub.join("out.jsonl"));
    let (_, dead) = svc.finish();
    assert_eq!(before.len(), 100);
    assert_eq!(after.len(), 100, "the recreated file holds what waited");
    // The first 100 went with the removed directory: the operator removed them.
    let waited: Vec<String> = ids[100..].to_vec();
    support::assert_exactly_once(&waited, &after, &dead);
}

#[test]
fn stdout_carries_envelopes_only_and_a_closed_pipe_keeps_records_pending() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        output_stdout: true,
        ..Config::default()
    };
    let text = config
        .render(dir.path())
        .replace("shutdown_grace_ms = 20000", "shutdown_grace_ms = 1000");
    std::fs::write(dir.path().join("s.toml"), text).unwrap();
    let mut child = spawn_serve(dir.path(), "s.toml", Stdio::piped(), Stdio::piped());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    let mut seen = String::new();
    while !banner.contains("listening on") {
        banner.clear();
        let n = stderr.read_line(&mut banner).unwrap();
        seen.push_str(&banner);
        assert!(n > 0, "no listening line on stderr: {seen}");
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    let base = banner
        .trim()
        .strip_prefix("sluice listening on ")
        .unwrap()
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let mut r = agent.get(format!("{base}{path}")).call().unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let post = |recs: &[Value]| {
        agent
            .post(format!("{base}/v1/records"))
            .header("content-type", "application/json")
            .send(serde_json::to_vec(recs).unwrap().as_slice())
            .unwrap()
            .status()
            .as_u16()
    };
    let until = Instant::now() + Duration::from_secs(10);
    while get("/readyz").0 != 200 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(post(&records("a", 5)), 202);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..5 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not an envelope: {line:?}: {e}"));
        assert!(v["id"].as_str().unwrap().starts_with('a'));
    }
    // The reader goes away (`sluice serve | head -5`).
    drop(stdout);
    assert_eq!(post(&records("b", 5)), 202);
    let until = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (code, body) = get("/readyz");
        if code == 503 {
            break body;
        }
        assert!(Instant::now() < until, "/readyz stayed {code}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(body.contains("stdout"), "{body}");
    let status: Value = serde_json::from_str(&get("/v1/status").1).unwrap();
    assert_eq!(
        status["pending"], 5,
        "nothing counted emitted that went nowhere: {status}"
    );
    let metrics = get("/metrics").1;
    assert!(
        metrics.contains("sluice_records_emitted_total{outcome=\"ok\"} 5"),
        "only the first 5"
    );
    // SIGTERM: the grace runs out with 5 pending (kept in the checkpoint); a clean exit.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0));
}

#[test]
fn an_output_file_cut_mid_line_before_a_restart_never_glues_two_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_in(&Config::default(), dir.path());
    svc.post_all(&records("a", 50), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    drop(svc.finish());
    let out = dir.path().join("out.jsonl");
    let len = std::fs::metadata(&out).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let svc = Service::start_in(&Config::default(), dir.path());
    let more = svc.post_all(&records("b", 50), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    // Every line parses (read_lines panics on a glued or torn line).
    let (lines, _) = svc.finish();
    assert_eq!(
        lines.len(),
        49 + 50,
        "the torn envelope is gone, the rest intact"
    );
    let ids: Vec<&str> = lines.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(more.iter().all(|m| ids.contains(&m.as_str())));
}

#[test]
fn max_attempts_holds_across_kill_9_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        pipeline: "timeout_ms = 60000\n".into(),
        retry: "max_attempts = 3\ninitial_backoff_ms = 40\nmax_backoff_ms = 80\njitter = 0.0\n"
            .into(),
        memory: "fail_field = \"/_sim/fail_attempts\"\ndelay_ms = [5, 15]\n".into(),
        ..Config::default()
    };
    let recs: Vec<Value> = (0..400)
        .map(|i| json!({"id": format!("f{i}"), "user_id": "u1", "_sim": {"fail_attempts": 10}}))
        .collect();
    let mut svc = Service::start_in(&cfg, dir.path());
    let ids = svc.post_all(&recs, 100);
    for cycle in 0..6 {
        std::thread::sleep(Duration::from_millis(30 + 17 * cycle));
        svc.kill9();
        svc = Service::start_in(&cfg, dir.path());
    }
    svc.wait_quiescent(Duration::from_secs(60));
    let (out, dead) = svc.finish();
    support::assert_exactly_once(&ids, &out, &dead);
    let over: Vec<&Value> = dead
        .iter()
        .filter(|e| e["attempts"].as_u64().unwrap() > 3)
        .collect();
    assert!(
        over.is_empty(),
        "{} records made more than 3 attempts, e.g. {}",
        over.len(),
        over[0]
    );
    assert!(dead.iter().all(|e| e["outcome"] == "failed"));
}

/// A crashed checkpoint directory (no snapshot, three journal segments from three starts)
/// and, in a copy, one with a snapshot taken before the last crash; every record pending.
fn crashed_dirs() -> (tempfile::TempDir, Config, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        pipeline: "timeout_ms = 600000\n".into(),
        memory: "delay_ms = [60000, 60000]\n".into(),
        checkpoint: "interval_ms = 600000\n".into(),
        ..Config::default()
    };
    let mut ids = Vec::new();
    for round in 0..3 {
        let mut svc = Service::start_in(&cfg, dir.path());
        ids.extend(svc.post_all(&records(&format!("c{round}-"), 50), 50));
        svc.kill9();
    }
    (dir, cfg, ids)
}

fn copy_dir(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .args([
            "-a",
            &format!("{}/.", from.display()),
            &to.path().display().to_string(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    to
}

fn inspect(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(binary())
        .args(["inspect", "--checkpoint-dir"])
        .arg(dir.join("checkpoints"))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn segment(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    dir.join("checkpoints").join(format!("journal-{n:020}.log"))
}

#[test]
fn a_missing_piece_of_the_journal_chain_is_refused_and_named() {
    let (crashed, cfg, _) = crashed_dirs();
    assert!(
        segment(crashed.path(), 2).exists(),
        "three starts, three segments"
    );
    let (code, text) = inspect(crashed.path());
    assert_eq!(code, Some(0), "the whole chain inspects clean: {text}");
    for (name, lost, expect) in [
        ("newest segment deleted", 2u64, "missing between 0 and 2"),
        ("a gap in the middle", 1, "journal-00000000000000000001.log"),
        ("the first segment deleted", 0, "no snapshot is left"),
    ] {
        let d = copy_dir(crashed.path());
        std::fs::remove_file(segment(d.path(), lost)).unwrap();
        let (code, err) = serve_exit(d.path(), "again.toml", &cfg.render(d.path()));
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains("is damaged") && err.contains(expect),
            "{name}: {err}"
        );
        assert!(
            err.contains("accept_loss"),
            "{name}: says how to go on: {err}"
        );
        let (code, text) = inspect(d.path());
        assert_eq!(code, Some(1), "{name}: inspect exits non-zero: {text}");
        assert!(
            text.contains("DAMAGED") && text.contains(expect),
            "{name}: {text}"
        );
    }
    let d = copy_dir(crashed.path());
    std::fs::remove_file(d.path().join("checkpoints/MANIFEST")).unwrap();
    let (code, err) = serve_exit(d.path(), "again.toml", &cfg.render(d.path()));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("MANIFEST is missing"), "{err}");
}

#[test]
fn deleted_or_corrupt_snapshots_are_refused_and_an_accepted_loss_never_reuses_a_seq() {
    let (crashed, cfg, _) = crashed_dirs();
    // A snapshot (which prunes the segments before it), then more records and a crash.
    let mut svc = Service::start_in(&cfg, crashed.path());
    assert_eq!(svc.post_json("/v1/checkpoint", &[]).status, 200);
    let after = svc.post_all(&records("late-", 50), 50);
    svc.kill9();
    let snaps: Vec<std::path::PathBuf> = std::fs::read_dir(crashed.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    assert!(!snaps.is_empty());
    for (name, damage) in [
        ("every snapshot deleted", false),
        ("every snapshot bit-flipped", true),
    ] {
        let d = copy_dir(crashed.path());
        for s in &snaps {
            let p = d.path().join("checkpoints").join(s.file_name().unwrap());
            if damage {
                let mut b = std::fs::read(&p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        let (code, err) = serve_exit(d.path(), "again.toml", &cfg.render(d.path()));
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains("no snapshot"), "{name}: {err}");
        assert_eq!(inspect(d.path()).0, Some(1), "{name}");
    }
    // Accepting the loss: it starts, what survived is processed, and no seq is reused.
    let d = copy_dir(crashed.path());
    for s in &snaps {
        std::fs::remove_file(d.path().join("checkpoints").join(s.file_name().unwrap())).unwrap();
    }
    let mut accept = Config {
        checkpoint: "interval_ms = 50\non_damage = \"accept_loss\"\n".into(),
        ..Config::default()
    };
    let svc = Service::start_in(&accept, d.path());
    let fresh = svc.post_all(&records("new-", 50), 50);
    svc.wait_quiescent(Duration::from_secs(20));
    let (out, _) = svc.finish();
    let mut seen = std::collections::HashSet::new();
    for e in &out {
        let key = (e["partition"].as_u64().unwrap(), e["seq"].as_u64().unwrap());
        assert!(seen.insert(key), "seq reused: {key:?}");
    }
    let new_seqs: Vec<u64> = out
        .iter()
        .filter(|e| e["id"].as_str().unwrap().starts_with("new-"))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(new_seqs.len(), fresh.len());
    assert!(
        new_seqs.iter().all(|s| *s >= 1 << 32),
        "seqs jumped past the loss: {new_seqs:?}"
    );
    // The records after the snapshot survived (their segment is whole).
    let ids: Vec<&str> = out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(after.iter().all(|a| ids.contains(&a.as_str())));
    // A restart after the accepted loss finds a whole chain again.
    accept.checkpoint = "interval_ms = 50\n".into();
    let svc = Service::start_in(&accept, d.path());
    assert_eq!(svc.status()["pending"], 0);
}

#[test]
fn ids_come_back_exactly_as_sent_and_generated_ids_cannot_collide() {
    let svc = Service::start(&Config::default());
    // A client id shaped like a generated one is refused, so the two can never meet.
    let r = svc.post_json(
        "/v1/records",
        &[json!({"id": "sluice:p0-1", "user_id": "u1"})],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("reserved"), "{}", r.body);
    // A number keeps every digit; 5 and "5" stay two ids; a generated id has the prefix.
    let body = br#"[{"id": 18446744073709551617, "user_id": "u1"},
                   {"id": 5, "user_id": "u2"}, {"id": "5", "user_id": "u3"},
                   {"id": "p0-1", "user_id": "u4"}, {"user_id": "u5"}]"#;
    let r = svc.post_as("/v1/records", Some("application/json"), None, body);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        r.body
            .starts_with(r#"{"accepted":5,"ids":[18446744073709551617,5,"5","p0-1","sluice:p"#),
        "{}",
        r.body
    );
    svc.wait_quiescent(Duration::from_secs(10));
    let text = std::fs::read_to_string(svc.dir.join("out.jsonl")).unwrap();
    for needle in [
        r#"{"id":18446744073709551617,"#,
        r#"{"id":5,"#,
        r#"{"id":"5","#,
        r#"{"id":"p0-1","#,
        r#"{"id":"sluice:p"#,
    ] {
        assert_eq!(text.matches(needle).count(), 1, "{needle} once in\n{text}");
    }
}

#[test]
fn a_full_journal_disk_refuses_whole_requests_processes_nothing_of_them_and_recovers() {
    let Some(disk) = SmallDisk::mount("4m", "a_full_journal_disk_refuses_whole_requests") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = Config::default().render(dir.path()).replace(
        &dir.path().join("checkpoints").display().to_string(),
        &disk.path.join("checkpoints").display().to_string(),
    );
    let svc = Service::start_in_with_text(&Config::default(), dir.path(), &text);
    let mut acked = svc.post_all(&records("a", 200), 100);
    svc.wait_quiescent(Duration::from_secs(10));
    let filler = disk.fill();
    // Every request now is refused whole: 503, and nothing of it is processed.
    let mut refused = Vec::new();
    for b in 0..5 {
        let batch = records(&format!("full{b}-"), 100);
        let r = svc.post_json("/v1/records", &batch);
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("nothing"), "{}", r.body);
        refused.extend(batch.iter().map(|v| v["id"].as_str().unwrap().to_string()));
    }
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("journal"), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    let out = read_lines(&dir.path().join("out.jsonl"));
    let written: std::collections::HashSet<&str> =
        out.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        refused.iter().all(|id| !written.contains(id.as_str())),
        "a refused request was processed"
    );
    // Space returns: the journal writes again on its own.
    std::fs::remove_file(filler).unwrap();
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("b", 200), 100));
    svc.wait_quiescent(Duration::from_secs(10));
    let m = svc.get("/metrics").body;
    assert!(
        m.contains("sluice_records_accepted_total 400"),
        "refused requests are not counted accepted: {}",
        m.lines()
            .find(|l| l.starts_with("sluice_records_accepted_total"))
            .unwrap_or("")
    );
    let (out, dead) = svc.finish();
    support::assert_exactly_once(&acked, &out, &dead);
}

#[test]
fn sigterm_right_after_the_listening_line_is_a_graceful_stop() {
    use std::io::{BufRead, BufReader};
    for attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.toml"),
            Config::default().render(dir.path()),
        )
        .unwrap();
        let mut child = spawn_serve(dir.path(), "s.toml", Stdio::piped(), Stdio::null());
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line}");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(20)),
            Some(0),
            "attempt {attempt}: SIGTERM during startup is a clean stop"
        );
    }
}

/// An idle node uses next to no CPU. The journal thread used to wait zero time for its next
/// op once nothing was left unsynced (its lazy-sync deadline stayed in the past), spinning a
/// whole core on every idle node.
#[test]
fn an_idle_node_does_not_spin() {
    let svc = Service::start(&Config::default());
    let ids = svc.post_all(&records("idle", 500), 100);
    assert_eq!(ids.len(), 500);
    svc.wait_quiescent(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let before = svc.cpu_time().expect("cpu time");
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let used = svc.cpu_time().expect("cpu time") - before;
    // A spinning thread alone uses the whole window; an idle node a few ticks.
    assert!(
        used < window / 5,
        "an idle node used {used:?} of CPU in {window:?}"
    );
}
