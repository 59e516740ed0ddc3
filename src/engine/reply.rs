//! Collects the envelopes of a synchronous `/v1/enrich` request, in request order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// One envelope's JSON text.
pub type Envelope = Vec<u8>;

/// Gathers one envelope per record of a request and hands the full list over once the
/// last one arrives.
pub struct Collector {
    slots: Mutex<Vec<Envelope>>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Vec<Envelope>>>>,
}

/// Where one record's envelope goes: its collector and its index in the request.
pub struct ReplySlot {
    collector: Arc<Collector>,
    index: usize,
}

impl Collector {
    /// A collector for `n` records and the receiver that gets them in request order.
    pub fn new(n: usize) -> (Arc<Collector>, oneshot::Receiver<Vec<Envelope>>) {
        let (tx, rx) = oneshot::channel();
        let c = Arc::new(Collector {
            slots: Mutex::new(vec![Envelope::new(); n]),
            remaining: AtomicUsize::new(n),
            done: Mutex::new(Some(tx)),
        });
        if n == 0 {
            c.finish();
        }
        (c, rx)
    }

    /// The slot for record `index`.
    pub fn slot(self: &Arc<Self>, index: usize) -> ReplySlot {
        ReplySlot {
            collector: self.clone(),
            index,
        }
    }

    fn finish(&self) {
        if let Some(tx) = self.done.lock().take() {
            let all = std::mem::take(&mut *self.slots.lock());
            // The requester may have gone away (client disconnected): nothing to do then.
            let _ = tx.send(all);
        }
    }
}

impl ReplySlot {
    /// Store this record's envelope; the last one completes the request. Consumes the slot,
    /// so a record can answer only once.
    pub fn deliver(self, envelope: Envelope) {
        if let Some(slot) = self.collector.slots.lock().get_mut(self.index) {
            *slot = envelope;
        }
        if self.collector.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.collector.finish();
        }
    }

    /// True once nobody waits for this record's envelope any more: the request's client went
    /// away (the HTTP handler, and with it the receiver, was dropped) or it was answered
    /// otherwise. A partition may then end the record early instead of holding an in-flight
    /// slot for an answer nobody reads.
    pub fn is_abandoned(&self) -> bool {
        self.collector
            .done
            .lock()
            .as_ref()
            .is_none_or(|tx| tx.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: u8) -> Envelope {
        vec![b'0' + n]
    }

    #[test]
    fn answers_in_request_order_once_all_arrived() {
        let (c, mut rx) = Collector::new(3);
        c.slot(2).deliver(json(2));
        c.slot(0).deliver(json(0));
        assert!(rx.try_recv().is_err());
        c.slot(1).deliver(json(1));
        assert_eq!(rx.try_recv().unwrap(), vec![json(0), json(1), json(2)]);
    }

    #[test]
    fn a_slot_knows_when_its_request_is_gone() {
        let (c, rx) = Collector::new(2);
        let (a, b) = (c.slot(0), c.slot(1));
        assert!(!a.is_abandoned());
        drop(rx);
        assert!(a.is_abandoned() && b.is_abandoned());
        // Delivering to an abandoned request is harmless.
        a.deliver(json(0));
        b.deliver(json(1));
    }

    #[test]
    fn empty_request_answers_at_once() {
        let (_c, mut rx) = Collector::new(0);
        assert_eq!(rx.try_recv().unwrap(), Vec::<Envelope>::new());
    }
}
