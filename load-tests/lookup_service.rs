//! A small HTTP lookup service over a JSONL table, for HTTP pipeline steps in benchmarks and
//! the README's worked example (README "Pipelines"):
//!
//! - `GET /users/{key}` → the row (200) or 404;
//! - `POST /batch` with `{"keys": [[k], ...]}` → `{"results": [row | null, ...]}` in order;
//! - `GET /stats` → `{"requests": N, "keys": M}` (lookup requests and keys served so far).
//!
//! ```text
//! cargo run --release --example lookup-service -- --table config/sample-users.jsonl \
//!     --key user_id [--port 9100] [--port-file F] [--delay-ms 0]
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

struct State {
    rows: HashMap<String, Value>,
    delay: Duration,
    requests: AtomicU64,
    keys: AtomicU64,
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn get_one(state: web::Data<Arc<State>>, key: web::Path<String>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    state.keys.fetch_add(1, Ordering::Relaxed);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    match state.rows.get(key.as_str()) {
        Some(row) => HttpResponse::Ok().json(row),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn batch(state: web::Data<Arc<State>>, body: web::Json<Value>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let Some(keys) = body.get("keys").and_then(Value::as_array) else {
        return HttpResponse::BadRequest().body("expected {\"keys\": [...]}");
    };
    state.keys.fetch_add(keys.len() as u64, Ordering::Relaxed);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let results: Vec<Value> = keys
        .iter()
        .map(|k| {
            let first = match k {
                Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            state
                .rows
                .get(&key_text(&first))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect();
    HttpResponse::Ok().json(json!({ "results": results }))
}

async fn stats(state: web::Data<Arc<State>>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "keys": state.keys.load(Ordering::Relaxed),
    }))
}

fn main() -> std::io::Result<()> {
    let mut table = None;
    let mut key = "user_id".to_string();
    let mut port = 0u16;
    let mut port_file = None;
    let mut delay_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("lookup-service: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--table" => table = Some(value()),
            "--key" => key = value(),
            "--port" => port = value().parse().unwrap_or(0),
            "--port-file" => port_file = Some(value()),
            "--delay-ms" => delay_ms = value().parse().unwrap_or(0),
            _ => {
                eprintln!(
                    "usage: lookup-service --table FILE [--key COLUMN] [--port N] [--port-file F] [--delay-ms N]"
                );
                std::process::exit(2)
            }
        }
    }
    let Some(table) = table else {
        eprintln!("lookup-service: --table FILE is required");
        std::process::exit(2)
    };
    let text = std::fs::read_to_string(&table)?;
    let mut rows = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut row: Value = serde_json::from_str(line)
            .map_err(|e| std::io::Error::other(format!("{table} line {}: {e}", n + 1)))?;
        let k = row
            .as_object_mut()
            .and_then(|o| o.remove(&key))
            .ok_or_else(|| std::io::Error::other(format!("{table} line {}: no `{key}`", n + 1)))?;
        rows.insert(key_text(&k), row);
    }
    let state = Arc::new(State {
        rows,
        delay: Duration::from_millis(delay_ms),
        requests: AtomicU64::new(0),
        keys: AtomicU64::new(0),
    });
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::JsonConfig::default().limit(64 << 20))
                .route("/users/{key}", web::get().to(get_one))
                .route("/batch", web::post().to(batch))
                .route("/stats", web::get().to(stats))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?;
        let addr = server.addrs()[0];
        println!("lookup-service listening on http://{addr}");
        if let Some(f) = port_file {
            std::fs::write(f, addr.port().to_string())?;
        }
        server.run().await
    })
}
