//! Batches of rendered envelopes as the sinks receive them: one NDJSON buffer plus, per
//! envelope, who it is (id, partition, seq, outcome) and where its line ends. A sink can
//! write the buffer as it is (files, a webhook body) or go envelope by envelope (CQL), and
//! report back exactly which envelopes it delivered or rejected.
//!
//! A leaf module: it depends on nothing of the service, so sinks can use it without
//! importing the engine.

use std::sync::Arc;

use serde::Serialize;

/// The four terminal outcomes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Ok,
    Miss,
    Timeout,
    Failed,
}

impl OutcomeKind {
    /// All outcomes, in metric-label order.
    pub const ALL: [OutcomeKind; 4] = [
        OutcomeKind::Ok,
        OutcomeKind::Miss,
        OutcomeKind::Timeout,
        OutcomeKind::Failed,
    ];

    /// The name used in envelopes and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Miss => "miss",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Failed => "failed",
        }
    }

    /// Index into [`OutcomeKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The outcome at `index` (journal decoding); `None` past the end.
    pub fn from_index(index: usize) -> Option<OutcomeKind> {
        OutcomeKind::ALL.get(index).copied()
    }
}

/// Who one envelope of a batch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The record's id (as in the envelope).
    pub id: Arc<str>,
    pub partition: u32,
    pub seq: u64,
    pub outcome: OutcomeKind,
    /// The record is in the journal: once a sink took it, it is committed as terminal.
    pub journaled: bool,
    /// End of the envelope's line (after its `\n`) in the batch's buffer.
    end: usize,
}

/// Envelopes of one or more partitions, in the order they are to be written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Envelopes {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

impl Envelopes {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of lines.
    pub fn with_capacity(bytes: usize) -> Self {
        Envelopes {
            bytes: Vec::with_capacity(bytes),
            items: Vec::new(),
        }
    }

    /// Append one envelope: `write` appends its JSON text (no newline) to the buffer.
    pub fn push_with(
        &mut self,
        id: Arc<str>,
        partition: u32,
        seq: u64,
        outcome: OutcomeKind,
        journaled: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        write(&mut self.bytes);
        self.bytes.push(b'\n');
        self.items.push(Item {
            id,
            partition,
            seq,
            outcome,
            journaled,
            end: self.bytes.len(),
        });
    }

    /// Append a copy of envelope `i` of `other`.
    pub fn push_from(&mut self, other: &Envelopes, i: usize) {
        let item = &other.items[i];
        self.push_with(
            item.id.clone(),
            item.partition,
            item.seq,
            item.outcome,
            item.journaled,
            |buf| buf.extend_from_slice(other.line(i)),
        );
    }

    /// Number of envelopes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No envelopes.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All lines, each ending in `\n` (an NDJSON body or a file append).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Who each envelope is, in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Envelope `i`'s JSON text without its newline.
    pub fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.items[i - 1].end };
        &self.bytes[start..self.items[i].end - 1]
    }

    /// Move every envelope of `other` to the end of this batch.
    pub fn append(&mut self, mut other: Envelopes) {
        if self.items.is_empty() {
            *self = other;
            return;
        }
        let base = self.bytes.len();
        self.bytes.append(&mut other.bytes);
        self.items.extend(other.items.into_iter().map(|mut it| {
            it.end += base;
            it
        }));
    }

    /// Split off the first `n` envelopes (all when fewer) as a batch of their own.
    pub fn take_front(&mut self, n: usize) -> Envelopes {
        if n >= self.items.len() {
            return std::mem::take(self);
        }
        let cut = self.items[n - 1].end;
        let rest_bytes = self.bytes.split_off(cut);
        let rest_items: Vec<Item> = self
            .items
            .split_off(n)
            .into_iter()
            .map(|mut it| {
                it.end -= cut;
                it
            })
            .collect();
        Envelopes {
            bytes: std::mem::replace(&mut self.bytes, rest_bytes),
            items: std::mem::replace(&mut self.items, rest_items),
        }
    }

    /// The envelopes whose index `keep` accepts, as a new batch (the rest are dropped).
    pub fn select(&self, mut keep: impl FnMut(usize) -> bool) -> Envelopes {
        let mut out = Envelopes::new();
        for i in 0..self.items.len() {
            if keep(i) {
                out.push_from(self, i);
            }
        }
        out
    }

    /// Envelope `i` with `"error": reason` added as its last member: how an envelope a
    /// sink refused reaches the dead letter (output envelopes carry no `error` member).
    pub fn with_error(&self, i: usize, reason: &str) -> Vec<u8> {
        let line = self.line(i);
        let mut out = Vec::with_capacity(line.len() + reason.len() + 16);
        match line.iter().rposition(|b| *b == b'}') {
            Some(close) => {
                out.extend_from_slice(&line[..close]);
                out.extend_from_slice(b",\"error\":");
                // Writing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, reason);
                out.extend_from_slice(&line[close..]);
            }
            None => out.extend_from_slice(line),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> Envelopes {
        let mut b = Envelopes::new();
        for s in 0..n {
            b.push_with(format!("r{s}").into(), 1, s, OutcomeKind::Ok, true, |buf| {
                buf.extend_from_slice(format!("{{\"seq\":{s}}}").as_bytes())
            });
        }
        b
    }

    #[test]
    fn lines_split_and_append_keep_every_envelope_in_order() {
        let mut b = batch(5);
        assert_eq!(b.line(0), b"{\"seq\":0}");
        assert_eq!(b.line(4), b"{\"seq\":4}");
        let front = b.take_front(2);
        assert_eq!(front.len(), 2);
        assert_eq!(b.len(), 3);
        assert_eq!(front.bytes(), b"{\"seq\":0}\n{\"seq\":1}\n");
        assert_eq!(b.line(0), b"{\"seq\":2}");
        let mut joined = front;
        joined.append(b);
        assert_eq!(joined, batch(5));
        let odd = joined.select(|i| i % 2 == 1);
        assert_eq!(odd.bytes(), b"{\"seq\":1}\n{\"seq\":3}\n");
        assert_eq!(odd.items()[1].seq, 3);
        assert_eq!(joined.take_front(10), batch(5));
        assert!(joined.is_empty());
    }

    #[test]
    fn an_error_is_added_as_the_last_member() {
        let b = batch(1);
        let v: serde_json::Value =
            serde_json::from_slice(&b.with_error(0, "table \"x\" missing")).unwrap();
        assert_eq!(v["seq"], 0);
        assert_eq!(v["error"], "table \"x\" missing");
    }
}
