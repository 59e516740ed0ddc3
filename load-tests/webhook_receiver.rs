//! A webhook receiver for benchmarks: it takes every POST, counts the envelopes in it and
//! answers 204, and does nothing else.
//!
//! It exists so that `load-tests/webhook-bench.sh` can measure what the webhook sink
//! (`output.kind = "webhook"`) costs sluice itself — batching, HTTP, at-least-once
//! bookkeeping — against the file sink, with a receiver that is never the bottleneck and
//! that says how many envelopes actually arrived (so a lost record shows up as a count
//! below the number of records sent; at least once allows a count above it).
//!
//! ```text
//! cargo run --release --example webhook-receiver -- --bind 127.0.0.1:0
//! # first line on stdout: webhook-receiver listening on http://127.0.0.1:PORT
//! curl -s http://127.0.0.1:PORT/count    # {"posts":N,"envelopes":M}
//! ```
//!
//! A POST to any path is read as it streams in (no copy of the body), its `\n` bytes are
//! counted as envelopes (sluice sends NDJSON, every envelope newline-terminated), and it is
//! counted only once its whole body arrived. Bodies over `--max-body-mib` get 413 and are
//! not counted. `GET /count` answers the totals; any other method gets 405.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::Parser;
use futures_util::StreamExt;

/// See module docs.
#[derive(Parser, Debug)]
#[command(
    name = "webhook-receiver",
    about = "Counting webhook receiver for benchmarks"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Largest body taken, in MiB; a larger one is answered 413 and not counted.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
}

/// Totals since start.
#[derive(Default)]
struct Counts {
    posts: AtomicU64,
    envelopes: AtomicU64,
}

struct State {
    counts: Counts,
    max_body: usize,
}

type Data = web::Data<Arc<State>>;

/// Any path: a POST is counted once its whole body arrived.
async fn receive(req: HttpRequest, mut body: web::Payload, state: Data) -> HttpResponse {
    if req.method() != Method::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", "POST"))
            .finish();
    }
    let (mut bytes, mut lines) = (0usize, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return HttpResponse::BadRequest().body(format!("reading the body: {e}")),
        };
        bytes = bytes.saturating_add(chunk.len());
        if bytes > state.max_body {
            return HttpResponse::build(StatusCode::PAYLOAD_TOO_LARGE)
                .body(format!("body over {} bytes", state.max_body));
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    state.counts.posts.fetch_add(1, Ordering::Relaxed);
    state.counts.envelopes.fetch_add(lines, Ordering::Relaxed);
    HttpResponse::NoContent().finish()
}

/// `GET /count`: `{"posts":N,"envelopes":M}`.
async fn count(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "posts": state.counts.posts.load(Ordering::Relaxed),
        "envelopes": state.counts.envelopes.load(Ordering::Relaxed),
    }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let state = Arc::new(State {
        counts: Counts::default(),
        max_body: args.max_body_mib.saturating_mul(1 << 20),
    });
    let server = HttpServer::new({
        let state = state.clone();
        move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/count", web::get().to(count))
                .default_service(web::to(receive))
        }
    })
    .workers(args.workers.max(1))
    .backlog(1024)
    .disable_signals()
    .bind(&args.bind)
    .unwrap_or_else(|e| panic!("webhook-receiver: cannot bind {}: {e}", args.bind));
    let addr = server
        .addrs()
        .first()
        .copied()
        .expect("webhook-receiver: bound to no address");
    println!("webhook-receiver listening on http://{addr}");
    server.run().await
}
