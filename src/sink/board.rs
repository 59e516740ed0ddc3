//! What a sink that works on threads of its own (CQL, webhook) shares with the emitter's
//! thread: finished batches waiting to be collected, how many envelopes it holds, whether
//! it is failing, and the emitter's waker and metrics.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::{Attach, Completion};
use crate::metrics::Metrics;

/// See module docs.
#[derive(Default)]
pub struct Board {
    done: Mutex<Vec<Completion>>,
    in_flight: AtomicUsize,
    failing: Mutex<Option<String>>,
    attach: Mutex<Option<Attach>>,
}

impl Board {
    /// `n` envelopes were taken.
    pub fn took(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` envelopes taken were given back without being sent (the sink stopped).
    pub fn gave_back(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    /// Envelopes taken and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Report what became of `n` envelopes taken earlier, and wake the emitter.
    pub fn report(&self, completions: Vec<Completion>, n: usize) {
        self.done.lock().extend(completions);
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        if let Some(a) = self.attach.lock().as_ref() {
            (a.waker)();
        }
    }

    /// Move the reported completions into `out`.
    pub fn collect(&self, out: &mut Vec<Completion>) {
        out.append(&mut self.done.lock());
    }

    /// The destination fails (and is retried): true when it was healthy until now, so the
    /// caller logs once per failing spell.
    pub fn failing(&self, problem: String) -> bool {
        self.failing.lock().replace(problem).is_none()
    }

    /// The destination works: true when it was failing until now.
    pub fn works(&self) -> bool {
        self.failing.lock().take().is_some()
    }

    /// `None` when healthy, else the last problem.
    pub fn health(&self) -> Option<String> {
        self.failing.lock().clone()
    }

    /// Keep the emitter's waker and metrics.
    pub fn attach(&self, attach: Attach) {
        *self.attach.lock() = Some(attach);
    }

    /// The engine's metrics, once attached.
    pub fn metrics(&self) -> Option<Metrics> {
        self.attach.lock().as_ref().map(|a| a.metrics.clone())
    }
}
