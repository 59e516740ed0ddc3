//! `sluice inspect --checkpoint-dir DIR [--json]`: what a checkpoint directory holds —
//! snapshots, journal segments, pending records per partition, next seq, and any torn or
//! corrupt data found. Read-only: it runs the same restore the service runs.

use std::path::Path;

use serde_json::json;

use super::CliError;
use crate::durability::files;

/// Print the report; `json` selects machine-readable output.
pub fn run(dir: &Path, json: bool) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(vec![format!(
            "--checkpoint-dir: `{}` is not a directory",
            dir.display()
        )]));
    }
    let (segments, snapshots) = files::list(dir)
        .map_err(|e| CliError::Runtime(format!("cannot list `{}`: {e}", dir.display())))?;
    let (state, next_segment, report) = files::restore(dir).map_err(|e| match e {
        files::RestoreError::Unsupported(v) => {
            CliError::Usage(vec![format!("checkpoint dir `{}`: {v}", dir.display())])
        }
        files::RestoreError::Io(e) => {
            CliError::Runtime(format!("cannot read `{}`: {e}", dir.display()))
        }
    })?;
    let damage = report.damage.clone();
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let per_partition = state.pending_per_partition();
    // Pending records whose envelope is fixed (sent again as they are after a restart).
    let decided = state
        .pending
        .values()
        .filter(|r| r.decided.is_some())
        .count();
    let mut staged: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for (p, _) in state.staged.keys() {
        *staged.entry(*p).or_default() += 1;
    }
    let mut ids: std::collections::BTreeSet<u32> = state.next_seq.keys().copied().collect();
    ids.extend(staged.keys().copied());
    let partitions: Vec<_> = ids
        .iter()
        .map(|p| {
            json!({
                "partition": p,
                "pending": per_partition.get(p).copied().unwrap_or(0),
                "staged": staged.get(p).copied().unwrap_or(0),
                "next_seq": state.next_seq_of(*p),
                "epoch": state.epochs.get(p),
            })
        })
        .collect();
    if json {
        let doc = json!({
            "dir": dir.display().to_string(),
            "snapshots": snapshots.iter().map(|n| json!({
                "name": format!("snapshot-{n:020}.snap"),
                "bytes": size(files::snapshot_path(dir, *n)),
            })).collect::<Vec<_>>(),
            "segments": segments.iter().map(|n| json!({
                "name": format!("journal-{n:020}.log"),
                "bytes": size(files::segment_path(dir, *n)),
            })).collect::<Vec<_>>(),
            "restore": report,
            "pending": state.pending.len(),
            "decided": decided,
            "staged": state.staged.len(),
            "in_doubt": state.in_doubt.iter().map(|((p, from), (upto, node))| json!({
                "partition": p, "from": from, "upto": upto, "node": node,
            })).collect::<Vec<_>>(),
            "partitions": partitions,
            "committed_offsets": {"output": state.output_offset, "dead_letter": state.dead_letter_offset},
            "next_segment": next_segment,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return damaged(dir, &damage);
    }
    println!("checkpoint directory {}", dir.display());
    println!("snapshots ({}):", snapshots.len());
    for n in &snapshots {
        let name = format!("snapshot-{n:020}.snap");
        let status = if report.snapshot.as_deref() == Some(name.as_str()) {
            "used".to_string()
        } else if let Some((_, why)) = report.skipped_snapshots.iter().find(|(s, _)| *s == name) {
            format!("CORRUPT: {why}")
        } else {
            "older".to_string()
        };
        println!(
            "  {name}  {} bytes  {status}",
            size(files::snapshot_path(dir, *n))
        );
    }
    println!("journal segments ({}):", segments.len());
    for n in &segments {
        let name = format!("journal-{n:020}.log");
        let replay = report.segments.iter().find(|s| s.name == name);
        let status = match replay {
            None => "covered by the snapshot".to_string(),
            Some(s) => match (&s.damage, s.damaged_at) {
                (Some(why), Some(at)) => format!(
                    "{} entries, TORN/CORRUPT at byte {at} ({why}), {} bytes skipped",
                    s.entries, s.skipped_bytes
                ),
                _ => format!("{} entries", s.entries),
            },
        };
        println!(
            "  {name}  {} bytes  {status}",
            size(files::segment_path(dir, *n))
        );
    }
    println!(
        "pending records: {} ({decided} with their envelope fixed, sent again as is; plus {} \
         held for other nodes' partitions)",
        state.pending.len(),
        state.staged.len()
    );
    // Pipelines: records part-way through their steps resume there after a restart.
    let in_pipeline = |records: &std::collections::BTreeMap<
        (u32, u64),
        std::sync::Arc<crate::record::Record>,
    >| {
        let mut n = 0;
        let mut finished = 0;
        for r in records.values().filter(|r| !r.steps.is_empty()) {
            n += 1;
            finished += r.steps.iter().filter(|m| m.done.is_some()).count();
        }
        (n, finished)
    };
    let (pending_steps, pending_done) = in_pipeline(&state.pending);
    let (staged_steps, staged_done) = in_pipeline(&state.staged);
    if pending_steps + staged_steps > 0 {
        println!(
            "  with step progress: {pending_steps} pending ({pending_done} steps finished) and \
             {staged_steps} held for other nodes ({staged_done} steps finished); finished steps \
             are not looked up again"
        );
    }
    for p in &partitions {
        let epoch = match p["epoch"].as_u64() {
            Some(e) => format!(", last epoch {e}"),
            None => String::new(),
        };
        println!(
            "  partition {}: pending {}, staged {}, next seq {}{epoch}",
            p["partition"], p["pending"], p["staged"], p["next_seq"]
        );
    }
    for ((p, from), (upto, node)) in &state.in_doubt {
        println!(
            "  in doubt: partition {p} stage numbers {from}..{upto} went to {node}, whose answer \
             was lost; held here until {node} says whether it has them"
        );
    }
    println!(
        "committed sink lengths: output {} bytes, dead letter {} bytes",
        state.output_offset, state.dead_letter_offset
    );
    for d in &damage {
        println!("DAMAGED: {d}");
    }
    damaged(dir, &damage)
}

/// A damaged directory is an error (exit 1): scripts and probes must not read "fine".
fn damaged(dir: &std::path::Path, damage: &[String]) -> Result<(), CliError> {
    if damage.is_empty() {
        return Ok(());
    }
    Err(CliError::Runtime(format!(
        "checkpoint directory `{}` is damaged: {}",
        dir.display(),
        damage.join("; ")
    )))
}
