use super::*;
use crate::envelope::{Envelopes, OutcomeKind};
use crate::sink::{Completion, Guarantee, Refusal, Sink};

fn batch(lines: &[&str]) -> Envelopes {
    let mut b = Envelopes::new();
    for (i, l) in lines.iter().enumerate() {
        b.push_with(
            format!("r{i}").into(),
            0,
            i as u64,
            OutcomeKind::Ok,
            true,
            |buf| buf.extend_from_slice(l.as_bytes()),
        );
    }
    b
}

#[test]
fn appends_creates_directories_reports_delivery_and_rewinds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/out.jsonl");
    let p = path.to_str().unwrap();
    let mut s = FileSink::open(p).unwrap();
    assert_eq!(s.guarantee(), Guarantee::ExactlyOnce);
    s.submit(batch(&["{\"x\":1}"])).unwrap();
    assert_eq!(s.in_flight(), 1);
    let mut done = Vec::new();
    s.completed(&mut done);
    assert!(matches!(&done[..], [Completion::Delivered(b)] if b.len() == 1));
    assert_eq!(s.in_flight(), 0);
    s.flush(false).unwrap();
    drop(s);
    let mut s = FileSink::open(p).unwrap();
    assert_eq!(s.rewind().unwrap().position(), 8);
    s.submit(batch(&["{\"x\":2}"])).unwrap();
    s.flush(true).unwrap();
    assert_eq!(s.rewind().unwrap().position(), 16);
    s.rewind().unwrap().truncate(8).unwrap();
    s.submit(batch(&["{\"x\":3}"])).unwrap();
    s.flush(true).unwrap();
    assert_eq!(s.rewind().unwrap().position(), 16);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"x\":1}\n{\"x\":3}\n"
    );
    assert_eq!(s.health(), None);
}

#[test]
fn a_file_cut_mid_line_is_never_appended_onto() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let p = path.to_str().unwrap();
    let mut s = FileSink::open(p).unwrap();
    s.submit(batch(&["{\"x\":1}", "{\"x\":2}"])).unwrap();
    s.flush(true).unwrap();
    assert_eq!(s.rewind().unwrap().position(), 16);
    drop(s);
    // Someone cuts the file in the middle of the second line.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(12)
        .unwrap();
    let mut s = FileSink::open(p).unwrap();
    s.rewind().unwrap().truncate(16).unwrap();
    assert_eq!(
        s.rewind().unwrap().position(),
        8,
        "back to the last whole line"
    );
    s.submit(batch(&["{\"x\":3}"])).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"x\":1}\n{\"x\":3}\n",
        "no line glued to a fragment"
    );
}

#[test]
fn after_a_failed_fsync_nothing_new_is_taken_and_the_unsynced_bytes_are_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let p = path.to_str().unwrap();
    let mut s = FileSink::open(p).unwrap();
    s.submit(batch(&["{\"x\":1}"])).unwrap();
    s.flush(true).unwrap();
    s.submit(batch(&["{\"x\":2}"])).unwrap();
    // The kernel may drop the dirty pages of a failed writeback: pretend it did.
    s.fail_syncs = true;
    assert!(s.flush(true).is_err());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8)
        .unwrap();
    assert!(
        s.health().unwrap().contains("out.jsonl"),
        "{:?}",
        s.health()
    );
    assert!(
        matches!(s.submit(batch(&["{\"x\":3}"])), Err(Refusal::Failed(b, _)) if b.len() == 1),
        "no new batch while the file cannot sync"
    );
    assert!(s.flush(true).is_err(), "still failing");
    s.fail_syncs = false;
    s.flush(true).unwrap();
    assert_eq!(s.health(), None);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"x\":1}\n{\"x\":2}\n",
        "written again from the copy"
    );
    s.submit(batch(&["{\"x\":3}"])).unwrap();
    s.flush(true).unwrap();
    assert_eq!(s.rewind().unwrap().position(), 24);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n"
    );
}
