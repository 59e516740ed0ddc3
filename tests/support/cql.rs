//! A CQL node for tests: the in-process test node (`tests/cql-node`), or a real ScyllaDB /
//! Cassandra when `SLUICE_TEST_CQL=host:port` is set (its keyspace and tables are created
//! with the driver). Fault injection, stop and restart need the test node.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use serde_json::Value;
use sluice::cql::values::BindType;
use sluice_cql_node::table::Table;
use sluice_cql_node::{Faults, Node};

/// The schema of the users table, as in `config/cql-example.toml`.
pub const USERS: &str =
    "sluice_demo.users(user_id text PRIMARY KEY, name text, tier text, country text)";

/// The schemas of the pipeline example's tables (`config/pipeline-example.toml`), with
/// `config/pipeline-users.jsonl` and `config/pipeline-accounts.jsonl` as their rows.
pub const PIPELINE_USERS: &str =
    "sluice_demo.users(user_id text PRIMARY KEY, name text, tier text, account_id text)";
pub const PIPELINE_ACCOUNTS: &str =
    "sluice_demo.accounts(account_id text PRIMARY KEY, plan text, status text)";

/// A CQL endpoint and, for the test node, its handle.
pub struct CqlTarget {
    pub addr: String,
    node: Option<Node>,
    runtime: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

impl CqlTarget {
    /// Tables given as (schema, JSONL rows).
    pub fn start(tables: &[(&str, String)]) -> CqlTarget {
        let runtime = runtime();
        if let Ok(addr) = std::env::var("SLUICE_TEST_CQL") {
            runtime.block_on(create_on_real_node(&addr, tables));
            return CqlTarget {
                addr,
                node: None,
                runtime,
            };
        }
        let parsed: Vec<Table> = tables
            .iter()
            .map(|(schema, rows)| {
                let mut t = Table::from_schema(schema).expect("schema");
                t.load_jsonl(rows).expect("rows");
                t
            })
            .collect();
        let node = runtime
            .block_on(Node::start(
                "127.0.0.1:0".parse().expect("addr"),
                parsed,
                Faults::default(),
            ))
            .expect("start the CQL test node");
        CqlTarget {
            addr: node.addr().to_string(),
            node: Some(node),
            runtime,
        }
    }

    /// Whether this is the in-process test node (faults, stop/restart available).
    pub fn is_test_node(&self) -> bool {
        self.node.is_some()
    }

    fn node(&self) -> &Node {
        self.node
            .as_ref()
            .expect("this test needs the CQL test node (fault injection)")
    }

    /// Replace the node's faults.
    pub fn set_faults(&self, f: Faults) {
        self.node().set_faults(f);
    }

    /// SELECTs the node served.
    pub fn selects(&self) -> u64 {
        self.node()
            .stats()
            .selects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TCP connections the node accepted.
    pub fn connections(&self) -> u64 {
        self.node()
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop the node (connections dropped, port closed).
    pub fn stop(&self) {
        self.node().stop();
    }

    /// Listen again on the same port.
    pub fn restart(&self) {
        self.runtime
            .block_on(self.node().restart())
            .expect("restart");
    }

    /// Rows in a table of the test node.
    pub fn row_count(&self, table: &str) -> usize {
        self.node().row_count(table)
    }

    /// Run a SELECT through the driver (test node or real node); each cell as text
    /// (`None` for NULL).
    pub fn select(&self, query: &str) -> Vec<Vec<Option<String>>> {
        self.runtime.block_on(async {
            let session: Session = SessionBuilder::new()
                .known_node(&self.addr)
                .build()
                .await
                .expect("connect");
            let result = session
                .query_unpaged(query, &[])
                .await
                .expect("select")
                .into_rows_result()
                .expect("rows");
            result
                .rows::<scylla::value::Row>()
                .expect("typed rows")
                .map(|r| {
                    r.expect("row")
                        .columns
                        .into_iter()
                        .map(|c| {
                            c.map(|v| match v {
                                scylla::value::CqlValue::Text(t)
                                | scylla::value::CqlValue::Ascii(t) => t,
                                other => sluice::cql::values::to_json(&other).to_string(),
                            })
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// Skip a test that needs fault injection when running against a real node, visibly.
    pub fn needs_test_node(&self, test: &str) -> bool {
        if self.is_test_node() {
            return true;
        }
        eprintln!(
            "SKIP {test}: needs the CQL test node's fault injection (SLUICE_TEST_CQL is set)"
        );
        false
    }
}

fn cql_type_to_bind(t: &str) -> Option<BindType> {
    Some(match t {
        "text" | "varchar" => BindType::Text,
        "ascii" => BindType::Ascii,
        "int" => BindType::Int,
        "bigint" => BindType::BigInt,
        "smallint" => BindType::SmallInt,
        "tinyint" => BindType::TinyInt,
        "boolean" => BindType::Boolean,
        "uuid" => BindType::Uuid,
        "timeuuid" => BindType::TimeUuid,
        "double" => BindType::Double,
        "float" => BindType::Float,
        "decimal" => BindType::Decimal,
        "timestamp" => BindType::Timestamp,
        _ => return None,
    })
}

async fn create_on_real_node(addr: &str, tables: &[(&str, String)]) {
    let session: Session = SessionBuilder::new()
        .known_node(addr)
        .build()
        .await
        .expect("connect to SLUICE_TEST_CQL");
    for (schema, rows) in tables {
        let t = Table::from_schema(schema).expect("schema");
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
                    t.keyspace
                ),
                &[],
            )
            .await
            .expect("create keyspace");
        let cols: Vec<String> = schema
            [schema.find('(').unwrap_or(0) + 1..schema.rfind(')').unwrap_or(0)]
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        session
            .query_unpaged(
                format!(
                    "CREATE TABLE IF NOT EXISTS {}.{} ({})",
                    t.keyspace,
                    t.name,
                    cols.join(", ")
                ),
                &[],
            )
            .await
            .expect("create table");
        let names: Vec<&str> = cols
            .iter()
            .filter_map(|c| c.split_whitespace().next())
            .collect();
        let types: Vec<Option<BindType>> = cols
            .iter()
            .map(|c| c.split_whitespace().nth(1).and_then(cql_type_to_bind))
            .collect();
        let insert = session
            .prepare(format!(
                "INSERT INTO {}.{} ({}) VALUES ({})",
                t.keyspace,
                t.name,
                names.join(", "),
                vec!["?"; names.len()].join(", ")
            ))
            .await
            .expect("prepare insert");
        for line in rows.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("row");
            let values: Vec<Option<scylla::value::CqlValue>> = names
                .iter()
                .zip(&types)
                .map(|(n, ty)| match (v.get(*n), ty) {
                    (Some(x), Some(ty)) if !x.is_null() => ty.bind(x).ok(),
                    _ => None,
                })
                .collect();
            session
                .execute_unpaged(&insert, values)
                .await
                .expect("insert row");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
