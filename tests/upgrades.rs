//! Upgrades (README "Upgrades"): what earlier releases wrote and forwarded — the fixtures
//! in `tests/fixtures/` (see its README) — is read by this build as they read it, and what
//! a newer release would write is refused naming both versions. `v1/` is of `b6dd6cc`;
//! `v2/` (pipeline step marks) of this build, kept for the releases after it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::durability::codec::{self, Entry, Layout};
use sluice::durability::files;
use sluice::record::{Record, StepDone, StepMark};
use support::cluster::TestCluster;
use support::{Config, Service, binary, read_lines, serve_exit};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of fixture `name`'s `checkpoints/` in a fresh directory (as `checkpoints/`, where
/// the test harness's configs put it).
fn restored(name: &str) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(fixture(name).join("checkpoints"))
        .arg(to.path())
        .status()
        .expect("cp")
        .success();
    assert!(ok, "copy {name}");
    to
}

fn inspect_json(dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .args(["inspect", "--json", "--checkpoint-dir"])
        .arg(dir)
        .output()
        .expect("inspect");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A record's id as the client sent it (ids are kept as their JSON text).
fn id_of(raw: &str) -> String {
    serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string())
}

fn ids(records: &BTreeMap<(u32, u64), std::sync::Arc<sluice::record::Record>>) -> BTreeSet<String> {
    records.values().map(|r| id_of(&r.id)).collect()
}

#[test]
fn every_v1_checkpoint_dir_inspects_as_b6dd6cc_inspected_it() {
    for name in ["v1/standalone", "v1/cluster-a", "v1/cluster-b"] {
        let d = restored(name);
        let dir = d.path().join("checkpoints");
        let (code, stdout, stderr) = inspect_json(&dir);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let mut got: Value = serde_json::from_str(&stdout).expect("inspect JSON");
        got["dir"] = "CHECKPOINT_DIR".into();
        let text = std::fs::read_to_string(fixture(name).join("inspect.json")).expect("fixture");
        let expected: Value = serde_json::from_str(&text).expect("fixture JSON");
        assert_eq!(got, expected, "{name}: this build reads it otherwise");
    }
}

#[test]
fn the_v1_standalone_checkpoint_is_restored_and_finished_as_b6dd6cc_finishes_it() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("v1/standalone/expected.json")).expect("fixture"),
    )
    .expect("JSON");
    let rows = expected["emitted_on_restart"].as_array().expect("rows");
    let key = |r: &Value| {
        (
            r["id"].as_str().expect("id").to_string(),
            r["partition"].as_u64().expect("partition"),
            r["seq"].as_u64().expect("seq"),
        )
    };
    let want: BTreeSet<(String, u64, u64)> = rows.iter().map(key).collect();
    assert_eq!(want.len(), 8, "the fixture's 8 pending records");
    let d = restored("v1/standalone");
    // The restore itself: the pending records with their ids, partitions and seqs.
    let (state, next_segment, report) =
        files::restore(&d.path().join("checkpoints")).expect("restore");
    let pending: BTreeSet<(String, u64, u64)> = state
        .pending
        .iter()
        .map(|((p, s), r)| (id_of(&r.id), u64::from(*p), *s))
        .collect();
    assert_eq!(pending, want);
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(
        report.snapshot.as_deref(),
        Some("snapshot-00000000000000000002.snap")
    );
    assert_eq!(next_segment, 3);
    // The real binary on it: exactly the envelopes b6dd6cc emitted from the same directory.
    let config = Config {
        // As the fixture was made, with a deadline that no record's first attempt (when
        // the fixture was written) is past.
        pipeline: "partitions = 2\nmode = \"ordered\"\ncapacity = 4\ntimeout_ms = 315360000000\n"
            .into(),
        retry: "max_attempts = 5\n".into(),
        checkpoint: "interval_ms = 50\n".into(),
        ..Config::default()
    };
    let svc = Service::start_in(&config, d.path());
    svc.wait_quiescent(Duration::from_secs(30));
    let (out, dead) = svc.finish();
    let mut got: Vec<Value> = out
        .iter()
        .map(|e| (e, "output"))
        .chain(dead.iter().map(|e| (e, "dead_letter")))
        .map(|(e, sink)| {
            serde_json::json!({
                "id": e["id"], "partition": e["partition"], "seq": e["seq"],
                "outcome": e["outcome"], "sink": sink,
            })
        })
        .collect();
    got.sort_by_key(|r| r["id"].as_str().unwrap_or("").to_string());
    assert_eq!(&got, rows);
    assert!(
        out.iter().all(|e| e["record"]["enrichment"].is_object()),
        "enriched: {out:?}"
    );
}

#[test]
fn the_v1_cluster_checkpoints_hold_what_b6dd6cc_staged_and_imported() {
    let (a, b) = (restored("v1/cluster-a"), restored("v1/cluster-b"));
    let (a, _, ra) = files::restore(&a.path().join("checkpoints")).expect("restore a");
    let (b, _, rb) = files::restore(&b.path().join("checkpoints")).expect("restore b");
    assert!(ra.damage.is_empty() && rb.damage.is_empty());
    // When the nodes were killed, b owned partitions 0 and 2 and a owned 1 and 3: a
    // stages only b's, and each holds pending only its own.
    let partitions = |m: &BTreeMap<(u32, u64), std::sync::Arc<sluice::record::Record>>| {
        m.keys().map(|(p, _)| *p).collect::<BTreeSet<u32>>()
    };
    assert_eq!(partitions(&a.staged), BTreeSet::from([0, 2]));
    assert_eq!(partitions(&b.pending), BTreeSet::from([0, 2]));
    assert_eq!(partitions(&a.pending), BTreeSet::from([1, 3]));
    assert!(a.epochs.contains_key(&1) && a.epochs.contains_key(&3));
    assert!(b.epochs.contains_key(&0) && b.epochs.contains_key(&2));
    assert!(b.staged.is_empty());
    // b's share of `held-*` is still staged on a (b refused it); its share of `fwd-*`
    // was imported by b; nothing is in two places and nothing is missing.
    let staged = ids(&a.staged);
    assert!(staged.iter().all(|i| i.starts_with("held-")), "{staged:?}");
    assert_eq!(staged.len(), 4);
    let imported = ids(&b.pending);
    assert!(
        imported.iter().all(|i| i.starts_with("fwd-")),
        "{imported:?}"
    );
    assert_eq!(imported.len(), 4);
    let local = ids(&a.pending);
    assert_eq!(local.len(), 8);
    let mut all = BTreeSet::new();
    for set in [&staged, &imported, &local] {
        for id in set {
            assert!(all.insert(id.clone()), "{id} held twice");
        }
    }
    let sent: BTreeSet<String> = (0..8)
        .flat_map(|i| [format!("fwd-{i}"), format!("held-{i}")])
        .collect();
    assert_eq!(all, sent);
    // b's resend watermark for a: a's stage numbers it took, per partition.
    let marks: BTreeMap<u32, u64> = b
        .imported
        .iter()
        .filter(|((source, _), _)| source == "a")
        .map(|((_, p), upto)| (*p, *upto))
        .collect();
    assert_eq!(marks, BTreeMap::from([(0, 2), (2, 2)]));
    // a's next stage numbers continue after the ones b took.
    for (p, upto) in &marks {
        assert!(a.next_stage.get(p).copied().unwrap_or(0) >= *upto);
    }
}

/// The refusal's one line, from `serve` (exit 2) and `inspect` (exit 2); `reads`: the
/// versions it names as read ("version 1", "versions 1..2").
fn assert_refused(dir: &Path, what: &str, found: u32, reads: &str) {
    let config = Config::default().render(dir);
    let (code, err) = serve_exit(dir, "serve.toml", &config);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("format version"))
        .collect();
    assert_eq!(code, Some(2), "{what}: {err}");
    assert_eq!(lines.len(), 1, "{what}: one line: {err}");
    let expect = format!("{what} has format version {found}; this sluice (");
    assert!(
        lines[0].contains(&format!(
            "checkpoint.dir `{}`: ",
            dir.join("checkpoints").display()
        )) && lines[0].contains(&expect)
            && lines[0].contains(&format!(") reads {reads}")),
        "{what}: {err}"
    );
    let (code, stdout, stderr) = inspect_json(&dir.join("checkpoints"));
    assert_eq!(code, Some(2), "{what}: {stdout}{stderr}");
    assert!(stderr.contains(&expect), "{what}: {stderr}");
}

#[test]
fn a_checkpoint_dir_of_a_newer_format_version_is_refused_naming_both() {
    // The newest segment as a release writing journal version 3 would begin it.
    let d = restored("v1/standalone");
    let seg = d
        .path()
        .join("checkpoints/journal-00000000000000000002.log");
    let mut bytes = Vec::new();
    codec::encode_format(3, &mut bytes);
    bytes.extend(std::fs::read(&seg).expect("segment"));
    std::fs::write(&seg, bytes).expect("write");
    assert_refused(
        d.path(),
        "journal segment journal-00000000000000000002.log",
        3,
        "versions 1..2",
    );
    // The same marker with version 1 reads as before.
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[..13].copy_from_slice(&{
        let mut m = Vec::new();
        codec::encode_format(1, &mut m);
        m
    });
    std::fs::write(&seg, bytes).expect("write");
    let (code, stdout, stderr) = inspect_json(&d.path().join("checkpoints"));
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["pending"], 8);

    // The newest snapshot whole, of snapshot version 3: refused, not skipped for the older.
    let d = restored("v1/standalone");
    let snap = d
        .path()
        .join("checkpoints/snapshot-00000000000000000002.snap");
    let mut bytes = std::fs::read(&snap).expect("snapshot");
    bytes[10..14].copy_from_slice(&3u32.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&snap, bytes).expect("write");
    assert_refused(
        d.path(),
        "snapshot snapshot-00000000000000000002.snap",
        3,
        "versions 1..2",
    );

    // A MANIFEST of version 2.
    let d = restored("v1/standalone");
    let manifest = d.path().join("checkpoints/MANIFEST");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    assert!(!text.contains("format"), "b6dd6cc wrote no format: {text}");
    std::fs::write(&manifest, text.replacen('{', "{\"format\":2,", 1)).expect("write");
    assert_refused(d.path(), "MANIFEST", 2, "version 1");

    // A segment of this build's version 3 in a directory of version 2 too.
    let d = restored("v2/standalone");
    let seg = d
        .path()
        .join("checkpoints/journal-00000000000000000001.log");
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[..13].copy_from_slice(&{
        let mut m = Vec::new();
        codec::encode_format(3, &mut m);
        m
    });
    std::fs::write(&seg, bytes).expect("write");
    assert_refused(
        d.path(),
        "journal segment journal-00000000000000000001.log",
        3,
        "versions 1..2",
    );
}

#[test]
fn this_build_writes_version_2_segments_after_the_version_1_ones_and_reads_the_mix() {
    let d = restored("v1/standalone");
    let config = Config {
        pipeline: "partitions = 2\ntimeout_ms = 315360000000\n".into(),
        retry: "max_attempts = 5\n".into(),
        checkpoint: "interval_ms = 600000\n".into(),
        ..Config::default()
    };
    let mut svc = Service::start_in(&config, d.path());
    let records: Vec<Value> = (0..10)
        .map(|i| serde_json::json!({"id": format!("new-{i}"), "user_id": format!("u{i}")}))
        .collect();
    assert_eq!(svc.post_all(&records, 10).len(), 10);
    svc.kill9();
    let dir = d.path().join("checkpoints");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("MANIFEST")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["format"], 1, "the MANIFEST did not change");
    // The fixture's segments (1 and 2) stay version 1; this build's begin with a marker.
    let (segments, _) = files::list(&dir).expect("list");
    let mut written = 0;
    for n in &segments {
        let bytes = std::fs::read(files::segment_path(&dir, *n)).expect("segment");
        let (version, start) = codec::segment_version(&bytes);
        if *n <= 2 {
            assert_eq!((version, start), (1, 0), "segment {n}");
        } else if !bytes.is_empty() {
            written += 1;
            assert_eq!(version, 2, "segment {n}");
            assert_eq!(codec::decode_all(&bytes[start..], Layout::V2).1, None);
        }
    }
    assert!(written > 0, "{segments:?}");
    // Restored as one chain: version 1 (from the fixture's snapshot) then version 2.
    let (state, _, report) = files::restore(&dir).expect("restore");
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert!(
        report.segments.iter().all(|s| s.damage.is_none()),
        "{:?}",
        report.segments
    );
    assert_eq!(
        report.snapshot.as_deref(),
        Some("snapshot-00000000000000000002.snap"),
        "no snapshot was due: the chain starts at the fixture's"
    );
    assert!(
        report
            .segments
            .iter()
            .any(|s| s.name == "journal-00000000000000000002.log")
    );
    // What is pending is the fixture's and this run's, nothing else (nothing misread).
    let ids: BTreeSet<String> = state.pending.values().map(|r| id_of(&r.id)).collect();
    assert!(
        ids.iter()
            .all(|i| ["slow-", "late-", "new-"].iter().any(|p| i.starts_with(p))),
        "{ids:?}"
    );
}

#[test]
fn the_v1_fixtures_frames_are_layout_1_byte_for_byte() {
    // Re-encoded in layout 1 by this build, every frame b6dd6cc wrote is the same bytes:
    // layout 1 is read (and, for batches without step marks, sent) exactly as it was.
    for name in ["v1/standalone", "v1/cluster-a", "v1/cluster-b"] {
        let dir = fixture(name).join("checkpoints");
        let (segments, snapshots) = files::list(&dir).expect("list");
        let mut images: Vec<(String, Vec<u8>)> = Vec::new();
        for n in segments {
            let bytes = std::fs::read(files::segment_path(&dir, n)).expect("segment");
            assert_eq!(codec::segment_version(&bytes), (1, 0), "{name} {n}");
            images.push((format!("{name} segment {n}"), bytes));
        }
        for n in snapshots {
            let bytes = std::fs::read(files::snapshot_path(&dir, n)).expect("snapshot");
            assert_eq!(&bytes[10..14], &1u32.to_le_bytes(), "{name} snapshot {n}");
            // MAGIC | version | frames | "END!" | count u64 | crc u32
            images.push((
                format!("{name} snapshot {n}"),
                bytes[14..bytes.len() - 16].to_vec(),
            ));
        }
        for (what, frames) in images {
            let mut pos = 0;
            while pos < frames.len() {
                let len = u32::from_le_bytes(frames[pos..pos + 4].try_into().expect("4 bytes"));
                let frame = &frames[pos..pos + 8 + len as usize];
                // A batch frame (tag 15: one request's entries, all or none) holds frames.
                let inner = if frame[8] == 15 { &frame[9..] } else { frame };
                let (entries, err) = codec::decode_all(inner, Layout::V1);
                assert_eq!(err, None, "{what} at {pos}");
                let mut again = Vec::new();
                for e in &entries {
                    codec::encode_in(e, Layout::V1, &mut again);
                }
                assert!(
                    again == inner,
                    "{what}: the frame at {pos} re-encoded otherwise"
                );
                pos += frame.len();
            }
        }
    }
    let body = std::fs::read(fixture("v1/forward/import-body.bin")).expect("fixture");
    let (entries, err) = codec::decode_all(&body, Layout::V1);
    assert_eq!(err, None);
    let mut again = Vec::new();
    for e in &entries {
        codec::encode_in(e, Layout::V1, &mut again);
    }
    assert_eq!(again, body);
}

fn mark(attempts: u32, done: Option<StepDone>) -> StepMark {
    StepMark { attempts, done }
}

fn found(row: &str) -> Option<StepDone> {
    Some(StepDone::Found(row.into()))
}

/// Records by their id.
fn by_id(
    records: &BTreeMap<(u32, u64), std::sync::Arc<Record>>,
) -> BTreeMap<String, std::sync::Arc<Record>> {
    records
        .values()
        .map(|r| (id_of(&r.id), r.clone()))
        .collect()
}

/// The pipeline of the v2 fixtures: `account` (after `user`), `geo`, `user` — step indexes
/// 0, 1, 2 (tests/fixtures/README.md).
#[test]
fn the_v2_standalone_checkpoint_restores_every_records_step_marks() {
    let d = restored("v2/standalone");
    let (state, next_segment, report) =
        files::restore(&d.path().join("checkpoints")).expect("restore");
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!(
        report.snapshot.as_deref(),
        Some("snapshot-00000000000000000001.snap")
    );
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.segments[0].damage, None);
    assert_eq!(next_segment, 2);
    let pending = by_id(&state.pending);
    assert_eq!(
        pending.keys().cloned().collect::<Vec<_>>(),
        vec!["decided-0", "mid-0", "mid-1", "plain-0"]
    );
    let steps = |id: &str| (pending[id].steps.clone(), pending[id].attempts);
    // Found, then a miss after a retry, and the dependent step's second attempt begun
    // (the last two after the snapshot, from the journal).
    assert_eq!(
        steps("mid-0"),
        (
            vec![
                mark(2, None),
                mark(2, Some(StepDone::Miss)),
                mark(1, found(r#"{"account_id":"a-1","name":"Ada"}"#)),
            ],
            5
        )
    );
    // A miss whose dependent was skipped; the independent step's first attempt begun.
    assert_eq!(
        steps("mid-1"),
        (
            vec![
                mark(0, Some(StepDone::Skipped)),
                mark(1, None),
                mark(1, Some(StepDone::Miss)),
            ],
            2
        )
    );
    // Every step finished and the envelope fixed.
    assert_eq!(
        steps("decided-0"),
        (
            vec![
                mark(1, found(r#"{"plan":"pro"}"#)),
                mark(3, found(r#"{"country":"NZ"}"#)),
                mark(1, found(r#"{"account_id":"a-4","name":"Dan"}"#)),
            ],
            5
        )
    );
    let decided = pending["decided-0"].decided.as_ref().expect("decided");
    assert!(decided.envelope.contains(r#""outcome":"ok""#));
    assert_eq!(steps("plain-0"), (Vec::new(), 0));
    assert_eq!(pending["plain-0"].first_attempt_ms, 0);
    assert!(pending["mid-0"].first_attempt_ms > pending["mid-0"].accepted_ms);
    // Written again (a snapshot of this build), the same state.
    let (image, _) = files::snapshot_bytes(&state);
    assert_eq!(files::parse_snapshot(&image).as_ref(), Ok(&state));
}

#[test]
fn the_v2_cluster_checkpoint_holds_a_handover_mid_pipeline_with_its_step_marks() {
    let d = restored("v2/cluster-a");
    let (state, _, report) = files::restore(&d.path().join("checkpoints")).expect("restore");
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert!(state.pending.is_empty(), "handed over");
    assert_eq!(state.epochs.get(&1), Some(&7));
    assert_eq!(state.next_stage_of(1), 2);
    let staged = by_id(&state.staged);
    assert_eq!(
        staged.keys().cloned().collect::<Vec<_>>(),
        vec!["h-0", "h-1"]
    );
    assert!(staged.values().all(|r| r.partition == 1));
    assert_eq!(
        (staged["h-0"].seq, staged["h-1"].seq),
        (0, 1),
        "stage numbers"
    );
    // h-0 was staged before the snapshot, h-1 after it (from the journal).
    assert_eq!(
        staged["h-0"].steps,
        vec![
            mark(1, None),
            mark(0, Some(StepDone::Skipped)),
            mark(1, found(r#"{"account_id":"a-7"}"#)),
        ]
    );
    assert_eq!(staged["h-0"].attempts, 2);
    assert_eq!(
        staged["h-1"].steps,
        vec![mark(0, None), mark(0, None), mark(2, None)]
    );
    assert_eq!(staged["h-1"].attempts, 2);
}

#[test]
fn every_v2_checkpoint_dir_inspects_as_it_did_when_written() {
    for name in ["v2/standalone", "v2/cluster-a"] {
        let d = restored(name);
        let dir = d.path().join("checkpoints");
        let (code, stdout, stderr) = inspect_json(&dir);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let mut got: Value = serde_json::from_str(&stdout).expect("inspect JSON");
        got["dir"] = "CHECKPOINT_DIR".into();
        let text = std::fs::read_to_string(fixture(name).join("inspect.json")).expect("fixture");
        let expected: Value = serde_json::from_str(&text).expect("fixture JSON");
        assert_eq!(got, expected, "{name}: this build reads it otherwise");
    }
    // People are told about the records part-way through a pipeline.
    for (name, line) in [
        (
            "v2/standalone",
            "with step progress: 3 pending (7 steps finished) and 0 held for other nodes \
             (0 steps finished)",
        ),
        (
            "v2/cluster-a",
            "with step progress: 0 pending (0 steps finished) and 2 held for other nodes \
             (2 steps finished)",
        ),
    ] {
        let d = restored(name);
        let out = Command::new(binary())
            .args(["inspect", "--checkpoint-dir"])
            .arg(d.path().join("checkpoints"))
            .output()
            .expect("inspect");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {text}");
        assert!(text.contains(line), "{name}: {text}");
    }
    // A directory without pipelines says nothing of steps.
    let d = restored("v1/standalone");
    let out = Command::new(binary())
        .args(["inspect", "--checkpoint-dir"])
        .arg(d.path().join("checkpoints"))
        .output()
        .expect("inspect");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("step progress"));
}

/// The records of the v2 handover batch (what `a` sends `b`), decoded as the import
/// route decodes a batch of version 2.
fn v2_batch() -> Vec<Record> {
    let body = std::fs::read(fixture("v2/forward/import-body.bin")).expect("fixture");
    let (entries, err) = codec::decode_all(&body, Layout::V2);
    assert_eq!(err, None);
    entries
        .into_iter()
        .map(|e| match e {
            Entry::Staged(r) => r,
            e => panic!("not a staged record: {e:?}"),
        })
        .collect()
}

#[test]
fn the_v2_handover_batch_carries_the_step_marks_the_sender_held() {
    let headers =
        std::fs::read_to_string(fixture("v2/forward/import-headers.txt")).expect("fixture");
    assert!(
        headers.lines().any(|l| l == "x-sluice-format: 2"),
        "{headers}"
    );
    assert!(
        headers.lines().any(|l| l == "x-sluice-handover: 1"),
        "{headers}"
    );
    // Exactly what the sender had staged (the v2 cluster fixture is the same node).
    let d = restored("v2/cluster-a");
    let (state, _, _) = files::restore(&d.path().join("checkpoints")).expect("restore");
    let staged: Vec<Record> = state.staged.values().map(|r| (**r).clone()).collect();
    assert_eq!(v2_batch(), staged);
}

/// `POST /internal/v1/import` with the headers of fixture `version` (`v1`, `v2`: its
/// epoch replaced, its format with `format` if given) and `body`.
fn import(
    base: &str,
    version: &str,
    epoch: u64,
    format: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let headers =
        std::fs::read_to_string(fixture(&format!("{version}/forward/import-headers.txt")))
            .expect("fixture");
    let mut req = agent.post(format!("{base}/internal/v1/import"));
    for (name, value) in headers.lines().filter_map(|l| l.split_once(": ")) {
        req = match name {
            "x-sluice-epoch" => req.header(name, epoch.to_string()),
            "x-sluice-format" if format.is_some() => req,
            _ => req.header(name, value),
        };
    }
    if let Some(f) = format {
        req = req.header("x-sluice-format", f);
    }
    let mut r = req.send(body).expect("POST");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn batches_forwarded_by_b6dd6cc_and_of_version_2_are_imported_and_one_of_a_newer_format_refused() {
    let config = Config {
        pipeline: "partitions = 4\n".into(),
        ..Config::default()
    };
    let test = "batches_forwarded_by_b6dd6cc_and_of_version_2_are_imported";
    let Some(c) = TestCluster::start(test, 1, 1, config) else {
        return;
    };
    c.wait_balanced(Duration::from_secs(20));
    let epoch = c.view()["partitions"][0]["epoch"].as_u64().expect("epoch");
    let node = c.node(0);
    let body = std::fs::read(fixture("v1/forward/import-body.bin")).expect("fixture");
    // A newer format: refused before anything is read, naming both versions.
    let (status, text) = import(&node.base, "v1", epoch, Some("3"), &body);
    assert_eq!(status, 415, "{text}");
    let problem: Value = serde_json::from_str(&text).expect("problem");
    assert_eq!(
        problem["type"],
        "urn:sluice:problem:unsupported-format-version"
    );
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("the forwarded batch has format version 3; this sluice (")
            && detail.contains("reads versions 1..2"),
        "{detail}"
    );
    // As b6dd6cc sent it (no format header): both records taken, then emitted.
    let (status, text) = import(&node.base, "v1", epoch, None, &body);
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).expect("receipt");
    assert_eq!(
        (receipt["received"].as_u64(), receipt["accepted"].as_u64()),
        (Some(2), Some(2))
    );
    let until = Instant::now() + Duration::from_secs(20);
    let emitted = loop {
        let out = read_lines(&c.out_path(0));
        if out.len() >= 2 {
            break out;
        }
        assert!(Instant::now() < until, "not emitted: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut got: Vec<(&str, u64)> = emitted
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or(""),
                e["partition"].as_u64().unwrap_or(9),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![("fwd-3", 0), ("fwd-7", 0)]);
    assert!(emitted.iter().all(|e| e["outcome"] == "ok"));
    // The same batch again (a resend by a sender that crashed before the answer): dropped.
    let (status, text) = import(&node.base, "v1", epoch, Some("1"), &body);
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).expect("receipt");
    assert_eq!(receipt["accepted"].as_u64(), Some(0), "{receipt}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_lines(&c.out_path(0)).len(), 2, "nothing emitted twice");
    // The v2 handover batch of a pipeline (its own headers: version 2, partition 1): taken
    // whole; read as version 1 it would be damage, so the version is what decides.
    let body = std::fs::read(fixture("v2/forward/import-body.bin")).expect("fixture");
    let epoch = c.view()["partitions"][1]["epoch"].as_u64().expect("epoch");
    let (status, text) = import(&node.base, "v2", epoch, Some("1"), &body);
    assert_eq!(status, 400, "{text}");
    let (status, text) = import(&node.base, "v2", epoch, None, &body);
    assert_eq!(status, 200, "{text}");
    let receipt: Value = serde_json::from_str(&text).expect("receipt");
    assert_eq!(
        (receipt["received"].as_u64(), receipt["accepted"].as_u64()),
        (Some(2), Some(2)),
        "{receipt}"
    );
}
