//! sluice's CQL lookup rate against a raw `scylla` driver loop, side by side in one run,
//! on the CQL test node (same latency, same session options, same concurrency).
//!
//! ```text
//! cargo build --release --bin sluice --example cql-bench
//! target/release/examples/cql-bench [--records N] [--latency-ms L] [--concurrency C]
//! ```
//!
//! The node serves a table of N distinct keys; both sides look up every key once (so
//! request coalescing cannot help sluice). sluice runs as `sluice enrich` with
//! `partitions = 2` and `capacity = C / 2`.

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice::cql::session::connect_session;
use sluice_cql_node::table::Table;
use sluice_cql_node::{Faults, Node};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = arg("--records", 100_000);
    let latency = arg("--latency-ms", 2);
    let concurrency = arg("--concurrency", 200).max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = String::new();
    let mut input = String::new();
    for i in 0..records {
        rows.push_str(&format!(
            "{{\"user_id\":\"k{i}\",\"name\":\"n{i}\",\"tier\":\"pro\",\"country\":\"NL\"}}\n"
        ));
        input.push_str(&format!("{{\"id\":\"r{i}\",\"user_id\":\"k{i}\"}}\n"));
    }
    let mut users = Table::from_schema(
        "sluice_demo.users(user_id text PRIMARY KEY, name text, tier text, country text)",
    )
    .expect("schema");
    users.load_jsonl(&rows).expect("rows");
    let node = runtime
        .block_on(Node::start(
            "127.0.0.1:0".parse().expect("addr"),
            vec![users],
            Faults {
                latency_ms: (latency, latency),
                ..Faults::default()
            },
        ))
        .expect("node");
    let addr = node.addr().to_string();
    println!(
        "# cql-bench: {records} lookups, node latency {latency} ms, concurrency {concurrency} \
         (C/L = {:.0}/s)",
        concurrency as f64 * 1000.0 / latency.max(1) as f64
    );

    // Raw driver loop: `concurrency` requests in flight over one session.
    let raw_rate = runtime.block_on(async {
        let session = connect_session(std::slice::from_ref(&addr), "sluice_demo")
            .await
            .expect("session");
        let prepared = session
            .prepare("SELECT name, tier, country FROM users WHERE user_id = ?")
            .await
            .expect("prepare");
        let started = Instant::now();
        let results: Vec<bool> = futures_util::stream::iter(0..records)
            .map(|i| {
                let (session, prepared) = (&session, &prepared);
                async move {
                    session
                        .execute_unpaged(prepared, (format!("k{i}"),))
                        .await
                        .is_ok()
                }
            })
            .buffer_unordered(concurrency as usize)
            .collect()
            .await;
        let ok = results.iter().filter(|b| **b).count();
        assert_eq!(ok as u64, records, "raw loop: every lookup succeeds");
        records as f64 / started.elapsed().as_secs_f64()
    });
    println!("raw driver loop: {raw_rate:.0} lookups/s");

    let cfg = dir.path().join("cql.toml");
    std::fs::write(
        &cfg,
        format!(
            "[pipeline]\npartitions = 2\ncapacity = {}\nmode = \"unordered\"\n\
             [lookup]\nbackend = \"cql\"\nattempt_timeout_ms = 5000\n\
             [lookup.cql]\ncontact_points = [\"{addr}\"]\nconsistency = \"ONE\"\n\
             [dead_letter]\npath = \"{}\"\n",
            concurrency / 2,
            dir.path().join("dead.jsonl").display()
        ),
    )
    .expect("config");
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, input).expect("input");
    let bin = std::env::var("SLUICE_BIN").unwrap_or_else(|_| "target/release/sluice".into());
    let out = std::process::Command::new(&bin)
        .args(["enrich", "--no-progress", "--config"])
        .arg(&cfg)
        .arg("--input")
        .arg(&input_path)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    let summary = String::from_utf8_lossy(&out.stderr);
    let line = summary
        .lines()
        .find(|l| l.starts_with("sluice enrich:"))
        .unwrap_or_else(|| panic!("no summary from sluice: {summary}"));
    let rate: f64 = line
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    println!("sluice enrich (cql backend): {rate:.0} lookups/s — {line}");
    println!(
        "ratio sluice / raw driver: {:.1} %",
        100.0 * rate / raw_rate
    );
    let _ = std::io::stdout().flush();
    drop(node);
    std::thread::sleep(Duration::from_millis(10));
}
