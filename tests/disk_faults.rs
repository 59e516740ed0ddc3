//! Disk full and I/O errors, black-box against the real binary (README "Operating"): a
//! small tmpfs filled by the test, a read-only filesystem, and fsyncs that fail (an
//! `LD_PRELOAD` library, `support::faults`). Whatever fails, the process stays up, answers
//! 503 naming the cause, `/readyz` says why, it writes again by itself once it can, and every
//! acknowledged record ends exactly once. Each test prints `SKIP <name>: …` where the machine
//! cannot mount a tmpfs or build the fault library.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::faults::{self, Faults};
use support::{Config, Service, SmallDisk, metric_sum, read_lines};

fn records(prefix: &str, n: usize, user: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "user_id": format!("{user}{}", i % 50 + 1)}))
        .collect()
}

/// The process runs (not gone, not a zombie).
fn assert_alive(svc: &Service, when: &str) {
    let pid = svc.pid().expect("started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    assert!(
        matches!(state, Some(c) if c != 'Z' && c != 'X'),
        "{when}: the service died (state {state:?})"
    );
}

fn metric(svc: &Service, name: &str) -> f64 {
    metric_sum(&svc.get("/metrics").body, name)
}

/// `config` rendered for `dir` with `from` (a path under `dir`) moved to `to`.
fn moved(config: &Config, dir: &Path, from: &str, to: &Path) -> String {
    config.render(dir).replace(
        &dir.join(from).display().to_string(),
        &to.display().to_string(),
    )
}

/// (a) The journal and the process's stderr (its log file, verbose) on one tmpfs that fills
/// up: the reported SIGABRT. The service answers every request (202 only when durable, else
/// a 503 problem naming the journal), stays up, counts the log lines it could not write, and
/// takes records again once there is room; after a kill -9 and a restart every 202 has
/// exactly one outcome.
#[test]
fn a_full_disk_holding_journal_and_logs_never_kills_the_service_and_loses_nothing() {
    let name = "a_full_disk_holding_journal_and_logs_never_kills_the_service";
    let Some(disk) = SmallDisk::mount("4m", name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        env: vec![("RUST_LOG".into(), "trace".into())],
        stderr_path: Some(disk.path.join("sluice.log")),
        ..Config::default()
    };
    let text = moved(
        &config,
        dir.path(),
        "checkpoints",
        &disk.path.join("checkpoints"),
    );
    let mut svc = Service::start_in_with_text(&config, dir.path(), &text);
    let mut acked = svc.post_all(&records("a", 100, "u"), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    let filler = disk.fill();
    let mut refused = 0;
    for i in 0..60 {
        let batch = records(&format!("full{i}-"), 10, "u");
        let r = svc
            .try_post_json("/v1/records", &batch)
            .unwrap_or_else(|| panic!("request {i}: no answer: the service died"));
        match r.status {
            202 => acked.extend(
                r.json()["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string()),
            ),
            503 => {
                let p = r.problem(503);
                let detail = p["detail"].as_str().unwrap();
                assert!(detail.contains("journal"), "{detail}");
                refused += 1;
            }
            s => panic!("request {i}: unexpected {s}: {}", r.body),
        }
        assert_alive(&svc, &format!("after request {i}"));
    }
    assert!(refused >= 50, "only {refused} of 60 refused on a full disk");
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("journal"), "{body}");
    assert!(
        metric(&svc, "sluice_log_write_errors_total") > 0.0,
        "log lines were dropped, and counted"
    );
    assert_alive(&svc, "on the full disk");
    // Room again: the journal writes again on its own, no restart.
    std::fs::remove_file(filler).unwrap();
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("b", 100, "u"), 50));
    svc.wait_quiescent(Duration::from_secs(10));
    svc.kill9();
    let svc = Service::start_in_with_text(&config, dir.path(), &text);
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    support::assert_exactly_once(&acked, &out, &dead);
}

/// (b)/(c) A sink file (`sink`: "output" or "dead_letter") on a tmpfs that fills up: the
/// records stay pending, nothing is counted emitted that is not in the file, `/readyz`
/// names the sink; once there is room everything arrives, exactly once.
fn a_full_sink_disk(sink: &str, name: &str) {
    let Some(disk) = SmallDisk::mount("2m", name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (file, user, config) = if sink == "output" {
        ("out.jsonl", "u", Config::default())
    } else {
        // Unknown users go to the dead letter.
        let config = Config {
            lookup: "on_miss = \"dead_letter\"".into(),
            ..Config::default()
        };
        ("dead.jsonl", "nobody", config)
    };
    let path = disk.path.join(file);
    let text = moved(&config, dir.path(), file, &path);
    let mut svc = Service::start_in_with_text(&config, dir.path(), &text);
    let mut acked = svc.post_all(&records("a", 100, user), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    let filler = disk.fill();
    acked.extend(svc.post_all(&records("b", 200, user), 50));
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains(sink), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    // The sink retries every 20 ms: a retry's write may be in the file for a moment before
    // it is cut back (a reader of a live file can see it), so look between two retries.
    let (mut in_file, mut emitted) = (-1.0, 0.0);
    for _ in 0..100 {
        let text = std::fs::read(&path).unwrap_or_default();
        emitted = metric(&svc, "sluice_records_emitted_total");
        if text.is_empty() || text.ends_with(b"\n") {
            in_file = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as f64;
            if in_file == emitted {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(7));
    }
    let pending = svc.status()["pending"].as_f64().unwrap();
    assert_eq!(emitted, in_file, "counted emitted = what the file holds");
    assert_eq!(emitted + pending, 300.0);
    assert!(pending >= 150.0, "kept pending: {pending}");
    assert_alive(&svc, "on the full disk");
    std::fs::remove_file(filler).unwrap();
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("c", 100, user), 50));
    svc.wait_quiescent(Duration::from_secs(10));
    assert_eq!(svc.terminate(), Some(0), "graceful exit");
    let lines = read_lines(&path);
    let other = read_lines(&dir.path().join(if sink == "output" {
        "dead.jsonl"
    } else {
        "out.jsonl"
    }));
    support::assert_exactly_once(&acked, &lines, &other);
    assert_eq!(lines.len(), 400, "all in the {sink} file");
}

#[test]
fn a_full_output_disk_keeps_records_pending_and_delivers_them_once_there_is_room() {
    a_full_sink_disk("output", "a_full_output_disk_keeps_records_pending");
}

#[test]
fn a_full_dead_letter_disk_keeps_records_pending_and_delivers_them_once_there_is_room() {
    a_full_sink_disk(
        "dead_letter",
        "a_full_dead_letter_disk_keeps_records_pending",
    );
}

/// (d) The output's filesystem turns read-only and back. Linux refuses `mount -o
/// remount,ro` while a file on it is open for writing (the sink's), so the read-only
/// filesystem is mounted over the output's directory instead: the path then names nothing
/// the sink may write (EROFS even on SIGHUP's reopen). Records stay pending with `/readyz`
/// naming the output; with the read-only mount gone the sink writes on in its file, every
/// record exactly once.
#[test]
fn a_read_only_output_filesystem_keeps_records_pending_until_it_is_writable_again() {
    let name = "a_read_only_output_filesystem_keeps_records_pending";
    let Some(disk) = SmallDisk::mount("2m", name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sinks = disk.path.join("sinks");
    std::fs::create_dir(&sinks).unwrap();
    let path = sinks.join("out.jsonl");
    let config = Config::default();
    let text = moved(&config, dir.path(), "out.jsonl", &path);
    let mut svc = Service::start_in_with_text(&config, dir.path(), &text);
    let mut acked = svc.post_all(&records("a", 100, "u"), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    match disk.remount(true) {
        Ok(()) => {
            // A kernel that allows it: the sink's writes fail with EROFS.
            acked.extend(svc.post_all(&records("b", 200, "u"), 50));
            let body = svc.wait_readyz(503, "", Duration::from_secs(10));
            assert!(body.contains("output"), "{body}");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(svc.status()["pending"], 200);
            disk.remount(false).unwrap();
        }
        Err(e) => {
            eprintln!(
                "NOTE {name}: `mount -o remount,ro` refused while the sink's file is open ({e}); \
                 a read-only filesystem is mounted over its directory instead"
            );
            let ro = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                .arg(&sinks)
                .status()
                .unwrap();
            assert!(ro.success());
            acked.extend(svc.post_all(&records("b", 200, "u"), 50));
            let body = svc.wait_readyz(503, "", Duration::from_secs(10));
            assert!(body.contains("output"), "{body}");
            // SIGHUP reopens the path: on the read-only filesystem that fails (EROFS).
            svc.signal("HUP");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(svc.status()["pending"], 200, "kept pending");
            assert_eq!(
                metric(&svc, "sluice_records_emitted_total"),
                100.0,
                "nothing counted emitted"
            );
            assert_eq!(svc.get("/readyz").status, 503);
            assert_alive(&svc, "on the read-only filesystem");
            let gone = std::process::Command::new("umount")
                .arg(&sinks)
                .status()
                .unwrap();
            assert!(gone.success());
        }
    }
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("c", 100, "u"), 50));
    svc.wait_quiescent(Duration::from_secs(10));
    assert_eq!(svc.terminate(), Some(0), "graceful exit");
    let out = read_lines(&path);
    let dead = read_lines(&dir.path().join("dead.jsonl"));
    support::assert_exactly_once(&acked, &out, &dead);
}

/// The fault library, or a visible SKIP.
fn fault_library(name: &str) -> Option<&'static Path> {
    match faults::library() {
        Ok(lib) => Some(lib),
        Err(e) => {
            eprintln!("SKIP {name}: the fsync fault library cannot be built: {e}");
            None
        }
    }
}

/// (e) The journal's fsyncs fail (EIO): no 202 while they do, each request a 503 problem
/// naming the journal, `/readyz` 503; healed, it takes records again by itself; after a
/// kill -9 and a restart every acknowledged record ends exactly once.
#[test]
fn failing_journal_fsyncs_refuse_requests_until_healed_and_lose_nothing_acknowledged() {
    let name = "failing_journal_fsyncs_refuse_requests_until_healed";
    let Some(lib) = fault_library(name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new(&dir.path().join("faults"));
    let config = Config {
        env: faults.env(lib),
        ..Config::default()
    };
    let mut svc = Service::start_in(&config, dir.path());
    let mut acked = svc.post_all(&records("a", 200, "u"), 50);
    faults.fail_fsync(&dir.path().join("checkpoints").display().to_string());
    for i in 0..20 {
        let r = svc.post_json("/v1/records", &records(&format!("f{i}-"), 10, "u"));
        let p = r.problem(503);
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains("journal"), "{detail}");
    }
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("journal"), "{body}");
    assert!(
        faults.calls().iter().any(|c| c.starts_with("failed")),
        "the journal's fsyncs were the ones failing"
    );
    assert_alive(&svc, "with failing fsyncs");
    faults.heal();
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("b", 200, "u"), 50));
    svc.kill9();
    let svc = Service::start_in(&config, dir.path());
    svc.wait_quiescent(Duration::from_secs(10));
    let (out, dead) = svc.finish();
    support::assert_exactly_once(&acked, &out, &dead);
}

/// (f) The output file's fsyncs fail: what it wrote since its last good fsync is not taken
/// as written (it is written again), new records stay pending and are not counted emitted,
/// `/readyz` names the output; healed, everything arrives exactly once, also across a
/// kill -9.
#[test]
fn failing_output_fsyncs_keep_records_pending_and_deliver_them_once_healed() {
    let name = "failing_output_fsyncs_keep_records_pending";
    let Some(lib) = fault_library(name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new(&dir.path().join("faults"));
    let config = Config {
        env: faults.env(lib),
        ..Config::default()
    };
    let mut svc = Service::start_in(&config, dir.path());
    let mut acked = svc.post_all(&records("a", 100, "u"), 50);
    svc.wait_quiescent(Duration::from_secs(10));
    // Let a commit cover them, then make the output's fsyncs fail.
    std::thread::sleep(Duration::from_millis(150));
    let out = dir.path().join("out.jsonl");
    faults.fail_fsync(&out.display().to_string());
    let body = svc.wait_readyz(503, "", Duration::from_secs(10));
    assert!(body.contains("output"), "{body}");
    acked.extend(svc.post_all(&records("b", 200, "u"), 50));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(svc.status()["pending"], 200, "kept pending");
    assert_eq!(
        metric(&svc, "sluice_records_emitted_total"),
        100.0,
        "nothing counted emitted while the file cannot sync"
    );
    assert_eq!(svc.get("/readyz").status, 503);
    assert!(faults.calls().iter().any(|c| c.contains("out.jsonl")));
    faults.heal();
    svc.wait_quiescent(Duration::from_secs(10));
    svc.wait_readyz(200, "", Duration::from_secs(10));
    acked.extend(svc.post_all(&records("c", 100, "u"), 50));
    svc.kill9();
    let svc = Service::start_in(&config, dir.path());
    svc.wait_quiescent(Duration::from_secs(10));
    let (out_lines, dead) = svc.finish();
    support::assert_exactly_once(&acked, &out_lines, &dead);
    assert_eq!(read_lines(&out).len(), 400);
}
