//! A precise delay line for simulated latency.
//!
//! tokio's timer has millisecond granularity and fires up to ~2 ms late, which at a
//! simulated 10 ms lookup is a 10–20% error and would make every Little's-law measurement
//! about the timer rather than the engine. One thread per delay line sleeps on a condvar
//! until the earliest deadline (sub-millisecond accuracy on Linux) and completes the
//! waiting futures through oneshot channels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Entry {
    due: Instant,
    order: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    next_order: u64,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

/// Handle to a delay line; dropping the last handle stops its thread.
pub struct DelayLine {
    inner: Arc<Inner>,
}

impl DelayLine {
    /// Start the delay line's thread.
    pub fn start() -> std::io::Result<DelayLine> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("sluice-delay".into())
            .spawn(move || run(&worker))?;
        Ok(DelayLine { inner })
    }

    /// A receiver that completes once `delay` has passed.
    pub fn after(&self, delay: Duration) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let due = Instant::now() + delay;
        let mut st = match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let earliest = st.heap.peek().map(|Reverse(e)| e.due);
        let order = st.next_order;
        st.next_order += 1;
        st.heap.push(Reverse(Entry {
            due,
            order,
            done: tx,
        }));
        drop(st);
        if earliest.is_none_or(|e| due < e) {
            self.inner.wake.notify_one();
        }
        rx
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.closed = true;
        }
        self.inner.wake.notify_one();
    }
}

fn run(inner: &Inner) {
    let mut st = match inner.state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        while st.heap.peek().is_some_and(|Reverse(e)| e.due <= now) {
            if let Some(Reverse(e)) = st.heap.pop() {
                // The waiter may be gone (its record timed out): nothing to do then.
                let _ = e.done.send(());
            }
        }
        let wait = st
            .heap
            .peek()
            .map(|Reverse(e)| e.due.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(3600));
        st = match inner.wake.wait_timeout(st, wait) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_no_earlier_than_due_and_in_deadline_order() {
        let line = DelayLine::start().unwrap();
        let t0 = Instant::now();
        let mut slow = line.after(Duration::from_millis(40));
        let fast = line.after(Duration::from_millis(5));
        fast.blocking_recv().unwrap();
        let fast_at = t0.elapsed();
        assert!(fast_at >= Duration::from_millis(5));
        if fast_at < Duration::from_millis(40) {
            assert!(
                slow.try_recv().is_err(),
                "the later deadline must not fire first"
            );
        }
        slow.blocking_recv().unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(40));
    }
}
