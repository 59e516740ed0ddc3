//! HTTP load generator for sluice, and an input generator for `sluice enrich` benchmarks.
//!
//! ```text
//! cargo run --release --example http-load -- --url http://127.0.0.1:8080 \
//!     --records 1000000 --batch 1000 --connections 4
//! cargo run --release --example http-load -- --generate 1000000 > input.jsonl
//! ```
//!
//! Every request is a batch of `--batch` records (NDJSON). A 429 is retried after a short
//! pause (and counted); any other non-202 aborts the run. It prints records/s, request
//! latency percentiles and the 429 count, and exits non-zero if a request failed. Request
//! loops are bounded by `--records` and by `--max-seconds`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    records: usize,
    batch: usize,
    connections: usize,
    keys: usize,
    max_seconds: u64,
    generate: Option<usize>,
    path: String,
    delay_ms: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        records: 200_000,
        batch: 1000,
        connections: 4,
        keys: 1000,
        max_seconds: 300,
        generate: None,
        path: "/v1/records".into(),
        delay_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--records" => a.records = num(value()?)?,
            "--batch" => a.batch = num(value()?)?.max(1),
            "--connections" => a.connections = num(value()?)?.max(1),
            "--keys" => a.keys = num(value()?)?.max(1),
            "--max-seconds" => a.max_seconds = num(value()?)? as u64,
            "--generate" => a.generate = Some(num(value()?)?),
            "--path" => a.path = value()?,
            "--delay-ms" => a.delay_ms = Some(num(value()?)? as u64),
            "-h" | "--help" => {
                return Err("usage: http-load [--url U] [--records N] [--batch N] [--connections N] \
                            [--keys N] [--max-seconds S] [--path /v1/records] [--delay-ms D] | --generate N"
                    .into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn record(i: usize, keys: usize, delay: Option<u64>) -> String {
    let key = (i.wrapping_mul(2_654_435_761)) % keys + 1;
    match delay {
        Some(d) => format!(
            "{{\"id\":\"r{i}\",\"user_id\":\"u{key}\",\"amount\":{},\"_sim\":{{\"delay_ms\":{d}}}}}\n",
            i % 997
        ),
        None => format!(
            "{{\"id\":\"r{i}\",\"user_id\":\"u{key}\",\"amount\":{}}}\n",
            i % 997
        ),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http-load: {e}");
            std::process::exit(2);
        }
    };
    if let Some(n) = args.generate {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        for i in 0..n {
            if out
                .write_all(record(i, args.keys, args.delay_ms).as_bytes())
                .is_err()
            {
                std::process::exit(1);
            }
        }
        let _ = out.flush();
        return;
    }

    let batches = args.records.div_ceil(args.batch);
    // Bodies are built up front so the generator's own cost stays out of the measurement.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..batches)
            .map(|b| {
                let lo = b * args.batch;
                let hi = (lo + args.batch).min(args.records);
                (lo..hi)
                    .map(|i| record(i, args.keys, args.delay_ms))
                    .collect::<String>()
                    .into_bytes()
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let url = format!("{}{}", args.url, args.path);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (bodies, next, refused, failed, url) = (
                bodies.clone(),
                next.clone(),
                refused.clone(),
                failed.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut latencies = Vec::new();
                let mut sent = 0usize;
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= bodies.len() || Instant::now() > deadline {
                        break;
                    }
                    loop {
                        let t0 = Instant::now();
                        let resp = agent
                            .post(&url)
                            .header("content-type", "application/x-ndjson")
                            .send(&bodies[b][..]);
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        match resp {
                            Ok(mut r)
                                if r.status().as_u16() == 202 || r.status().as_u16() == 200 =>
                            {
                                let _ = r.body_mut().with_config().limit(64 << 20).read_to_vec();
                                latencies.push(ms);
                                sent += bodies[b].iter().filter(|c| **c == b'\n').count();
                                break;
                            }
                            Ok(mut r) if r.status().as_u16() == 429 => {
                                let _ = r.body_mut().read_to_vec();
                                refused.fetch_add(1, Ordering::Relaxed);
                                if Instant::now() > deadline {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Ok(mut r) => {
                                let body = r.body_mut().read_to_string().unwrap_or_default();
                                eprintln!("http-load: HTTP {}: {body}", r.status());
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                eprintln!("http-load: request failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                (latencies, sent)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut sent = 0usize;
    for w in workers {
        if let Ok((l, s)) = w.join() {
            latencies.extend(l);
            sent += s;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "http-load: {sent} records in {secs:.2} s = {:.0} records/s; {} requests of {} records; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} x 429; {} failed",
        sent as f64 / secs,
        latencies.len(),
        args.batch,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    if failed.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
