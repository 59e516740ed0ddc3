//! Recovery of a node from its checkpoint directory: read the newest valid snapshot and the
//! journal after it, cut the file sinks back to their committed lengths, start the journal
//! thread over the restored state, and hand the state back for re-issue.
//!
//! Kept apart from `node::run` so the protocol reads top to bottom in one place, and so the
//! cluster can decide per partition what happens to the restored pending records.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::NodeError;
use crate::durability::state::State;
use crate::durability::{files, journal};
use crate::engine::Engine;
use crate::engine::hash::partition_of;
use crate::settings::{OnDamage, Settings};

/// What recovery produced: the state whose pending records still have to be re-issued.
pub struct Recovered {
    pub state: State,
    /// Milliseconds spent reading and replaying.
    pub millis: u64,
}

/// Restore `dir` into a running (not yet ready) engine and start the journal thread.
pub async fn recover(
    engine: &Engine,
    settings: &Settings,
    dir: PathBuf,
    journal: &journal::JournalHandle,
    inbox: journal::JournalInbox,
) -> Result<Recovered, NodeError> {
    let started = Instant::now();
    let read_dir = dir.clone();
    let (mut state, next_segment, report) =
        actix_rt::task::spawn_blocking(move || files::restore(&read_dir))
            .await
            .map_err(|e| NodeError::Runtime(format!("restore failed: {e}")))?
            .map_err(|e| match e {
                // Not damage and not a failure: this build is older than the data.
                files::RestoreError::Unsupported(v) => {
                    NodeError::Usage(vec![format!("checkpoint.dir `{}`: {v}", dir.display())])
                }
                files::RestoreError::Io(e) => NodeError::Runtime(format!(
                    "cannot read checkpoint.dir `{}`: {e}",
                    dir.display()
                )),
            })?;
    let accepted_loss = check_chain(&mut state, &report, settings, &dir)?;
    check_partitions(&state, settings.pipeline.partitions as u32, &dir)?;
    if state.has_offsets {
        engine
            .truncate_sinks(&state)
            .await
            .map_err(|e| NodeError::Runtime(format!("cannot restore the sinks: {e}")))?;
    }
    let has_offsets = state.has_offsets;
    let skipped: u64 = report.segments.iter().map(|s| s.skipped_bytes).sum();
    journal::spawn(
        inbox,
        dir,
        state.clone(),
        next_segment,
        Duration::from_millis(settings.checkpoint.interval_ms),
        engine.shared().metrics.clone(),
        engine.shared().last_checkpoint.clone(),
        engine.shared().journal_health.clone(),
    )
    .map_err(|e| NodeError::Runtime(format!("cannot start the journal: {e}")))?;
    if accepted_loss {
        // A whole chain from here on: a crash before the next periodic snapshot must not
        // find the same gap again.
        journal
            .checkpoint()
            .await
            .map_err(|e| NodeError::Runtime(format!("cannot snapshot after the loss: {e}")))?;
    }
    if !has_offsets {
        // A fresh directory: commit the sinks' current lengths before anything is emitted,
        // so a crash before the first regular commit truncates back to exactly here.
        engine
            .flush()
            .await
            .map_err(|e| NodeError::Runtime(format!("cannot commit the sinks: {e}")))?;
        journal
            .write_durable(Vec::new())
            .await
            .map_err(|_| NodeError::Runtime(journal::JournalError::Stopped.to_string()))?
            .map_err(|e| NodeError::Runtime(e.to_string()))?;
    }
    tracing::info!(
        snapshot = report.snapshot.as_deref().unwrap_or("none"),
        segments = report.segments.len(),
        skipped_snapshots = report.skipped_snapshots.len(),
        skipped_bytes = skipped,
        pending = state.pending.len(),
        staged = state.staged.len(),
        ms = started.elapsed().as_millis() as u64,
        "checkpoint read"
    );
    Ok(Recovered {
        state,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Pending (and staged) records were hashed with the partition count they were accepted
/// under; with another count some keys would land in another partition while older records
/// of theirs are still pending, and per-key order would break. Refuse, with the counts.
fn check_partitions(
    state: &State,
    partitions: u32,
    dir: &std::path::Path,
) -> Result<(), NodeError> {
    let records: Vec<&crate::record::Record> = state
        .pending
        .values()
        .chain(state.staged.values())
        .map(|r| r.as_ref())
        .collect();
    let moved = records
        .iter()
        .filter(|r| partition_of(&r.canonical, partitions) != r.partition)
        .count();
    if moved == 0 {
        return Ok(());
    }
    let highest = records.iter().map(|r| r.partition).max().unwrap_or(0);
    let earlier = (highest + 1..=65_536).find(|n| {
        records
            .iter()
            .all(|r| partition_of(&r.canonical, *n) == r.partition)
    });
    let earlier = earlier.map_or("another value".to_string(), |n| n.to_string());
    Err(NodeError::Usage(vec![format!(
        "pipeline.partitions: the checkpoint in `{}` holds {} pending record(s) written with \
         pipeline.partitions = {earlier}; with {partitions}, {moved} of them would belong to \
         another partition and per-key order would break. Start with {earlier} until \
         /v1/status shows pending 0, then change it",
        dir.display(),
        records.len(),
    )]))
}

/// A missing piece of the journal chain: refuse to start (exit 2) naming it, or — with
/// `checkpoint.on_damage = "accept_loss"` — go on from what is left, with every partition's
/// seqs moved 2^32 above anything the manifest or the state knew (so none is reused).
/// True when a loss was accepted.
fn check_chain(
    state: &mut State,
    report: &files::RestoreReport,
    settings: &Settings,
    dir: &std::path::Path,
) -> Result<bool, NodeError> {
    if report.damage.is_empty() {
        return Ok(false);
    }
    if settings.checkpoint.on_damage == OnDamage::Refuse {
        let mut lines: Vec<String> = report
            .damage
            .iter()
            .map(|d| format!("checkpoint.dir `{}` is damaged: {d}", dir.display()))
            .collect();
        lines.push(format!(
            "checkpoint.on_damage: records in the missing pieces would be lost; to start from \
             what is left set checkpoint.on_damage = \"accept_loss\" (or \
             SLUICE__CHECKPOINT__ON_DAMAGE=accept_loss); `sluice inspect --checkpoint-dir {}` \
             shows the details",
            dir.display()
        ));
        return Err(NodeError::Usage(lines));
    }
    const JUMP: u64 = 1 << 32;
    let leased = report
        .manifest
        .as_ref()
        .map(|m| m.next_seq.clone())
        .unwrap_or_default();
    let partitions: std::collections::BTreeSet<u32> = leased
        .keys()
        .chain(state.next_seq.keys())
        .copied()
        .chain(0..settings.pipeline.partitions as u32)
        .collect();
    for p in partitions {
        let known = state
            .next_seq_of(p)
            .max(leased.get(&p).copied().unwrap_or(0));
        state.next_seq.insert(p, known.saturating_add(JUMP));
    }
    for d in &report.damage {
        tracing::error!(dir = %dir.display(), damage = %d,
            "starting from a damaged checkpoint directory (checkpoint.on_damage = accept_loss): \
             records in the missing pieces are lost; seqs jump by 2^32");
    }
    Ok(true)
}
