use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;
use crate::envelope::{Envelopes, OutcomeKind};
use crate::sink::{Guarantee, Refusal, Sink};

/// A writer that keeps what it got, or fails like a closed pipe.
#[derive(Clone, Default)]
struct Pipe {
    got: Arc<Mutex<Vec<u8>>>,
    closed: Arc<Mutex<bool>>,
}

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if *self.closed.lock().unwrap() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.got.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn one(id: &str) -> Envelopes {
    let mut b = Envelopes::new();
    b.push_with(id.into(), 0, 0, OutcomeKind::Ok, true, |buf| {
        buf.extend_from_slice(format!("{{\"id\":\"{id}\"}}").as_bytes())
    });
    b
}

#[test]
fn a_closed_pipe_keeps_the_batch_and_turns_the_sink_unhealthy() {
    let pipe = Pipe::default();
    let mut s = StdoutSink::to(Box::new(pipe.clone()));
    assert_eq!(s.guarantee(), Guarantee::AtLeastOnce);
    s.submit(one("a")).unwrap();
    assert_eq!(&pipe.got.lock().unwrap()[..], b"{\"id\":\"a\"}\n");
    *pipe.closed.lock().unwrap() = true;
    match s.submit(one("b")) {
        Err(Refusal::Failed(b, _)) => assert_eq!(b.items()[0].id.as_ref(), "b"),
        other => panic!("expected a failed write, got {other:?}"),
    }
    assert!(s.health().unwrap().contains("stdout"));
    *pipe.closed.lock().unwrap() = false;
    s.submit(one("b")).unwrap();
    assert_eq!(s.health(), None);
    let mut done = Vec::new();
    s.completed(&mut done);
    assert_eq!(done.len(), 2);
}
