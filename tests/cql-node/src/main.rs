//! `cargo run -p sluice-cql-node -- --port 9042 --table "sluice_demo.users(user_id text PRIMARY KEY, name text, tier text, country text)=config/sample-users.jsonl"`
//!
//! Flags: `--port N`, `--table SCHEMA=FILE` (repeatable; FILE may be empty for a table
//! that only receives INSERTs: `SCHEMA=`), `--latency-ms LO,HI`, `--error-ratio R`,
//! `--error-kind read_timeout|overloaded|unavailable|server_error|write_timeout`,
//! `--drop-ratio R`. Runs until Ctrl-C.

use std::net::SocketAddr;

use sluice_cql_node::table::Table;
use sluice_cql_node::wire::ErrorKind;
use sluice_cql_node::{Faults, Node};

fn fail(msg: String) -> ! {
    eprintln!("sluice-cql-node: {msg}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut port = 9042u16;
    let mut tables = Vec::new();
    let mut faults = Faults::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--port: bad value {value}")))
            }
            "--table" => {
                let (schema, file) = value.rsplit_once('=').unwrap_or((value.as_str(), ""));
                let mut t =
                    Table::from_schema(schema).unwrap_or_else(|e| fail(format!("--table: {e}")));
                if !file.is_empty() {
                    let text = std::fs::read_to_string(file)
                        .unwrap_or_else(|e| fail(format!("--table: {file}: {e}")));
                    t.load_jsonl(&text)
                        .unwrap_or_else(|e| fail(format!("--table: {file}: {e}")));
                }
                tables.push(t);
            }
            "--latency-ms" => {
                let (lo, hi) = value
                    .split_once(',')
                    .unwrap_or((value.as_str(), value.as_str()));
                faults.latency_ms = (
                    lo.trim()
                        .parse()
                        .unwrap_or_else(|_| fail(format!("--latency-ms: {value}"))),
                    hi.trim()
                        .parse()
                        .unwrap_or_else(|_| fail(format!("--latency-ms: {value}"))),
                );
            }
            "--error-ratio" => {
                faults.error_ratio = value
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--error-ratio: {value}")))
            }
            "--error-kind" => {
                faults.error_kind = Some(
                    ErrorKind::parse(&value)
                        .unwrap_or_else(|| fail(format!("--error-kind: {value}"))),
                )
            }
            "--drop-ratio" => {
                faults.drop_ratio = value
                    .parse()
                    .unwrap_or_else(|_| fail(format!("--drop-ratio: {value}")))
            }
            other => fail(format!("unknown flag {other}")),
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Node::start(addr, tables, faults)
        .await
        .unwrap_or_else(|e| fail(format!("cannot listen on {addr}: {e}")));
    println!("sluice-cql-node listening on {}", node.addr());
    let _ = tokio::signal::ctrl_c().await;
}
