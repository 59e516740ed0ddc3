//! HTTP load generator for sluice, and an input generator for `sluice enrich` benchmarks.
//!
//! ```text
//! cargo run --release --example http-load -- --url http://127.0.0.1:8080 \
//!     --records 1000000 --batch 1000 --connections 4
//! cargo run --release --example http-load -- --generate 1000000 > input.jsonl
//! # a cluster: each request goes to a random node; 503s and broken connections are retried
//! cargo run --release --example http-load -- --url http://127.0.0.1:8081,http://127.0.0.1:8082 \
//!     --tolerate-503 --records 5000000 --lazy --stop-file /tmp/stop --accepted-log ids.txt
//! # probes: one single-record POST per key every --interval-ms; prints the longest 503 run
//! cargo run --release --example http-load -- --url http://127.0.0.1:8081 --probe u1,u2,u3
//! ```
//!
//! Every request is a batch of `--batch` records (NDJSON), sent to one of the `--url`s
//! (comma-separated; a random one per attempt). A 429 is retried after a short pause (and
//! counted); with `--tolerate-503` a 503 is retried too (after its `Retry-After`, at most
//! 100 ms) and so is a failed connection (after 50 ms; a failure after the request may have
//! reached the server puts the batch "in doubt": the retry may duplicate it). Any other
//! non-202 counts as failed and the batch is skipped. It prints records/s, request latency
//! percentiles and the 429 count, then a line with the count of every HTTP status seen and
//! of connection errors and the longest run of 503s one batch got, and exits non-zero if a
//! request failed. `--timeout-ms` bounds each request (default 60 s; a request that times
//! out counts as a broken connection). Request loops are bounded by `--records`, by
//! `--max-seconds` and by `--stop-file` (stop once that file exists).
//!
//! `--accepted-log FILE` writes the id of every record acknowledged with 202, one per line,
//! and the ids of batches that were ever in doubt to `FILE.doubt`. `--id-prefix P` makes
//! the ids `P0`, `P1`, … (default `r`). `--lazy` builds each body when it is sent instead
//! of all up front (for runs with more records than fit in memory comfortably).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Args {
    urls: Vec<String>,
    records: usize,
    batch: usize,
    connections: usize,
    keys: usize,
    max_seconds: u64,
    generate: Option<usize>,
    path: String,
    delay_ms: Option<u64>,
    tolerate_503: bool,
    id_prefix: String,
    accepted_log: Option<String>,
    stop_file: Option<String>,
    lazy: bool,
    probe: Option<Vec<String>>,
    interval_ms: u64,
    timeout_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        urls: vec!["http://127.0.0.1:8080".into()],
        records: 200_000,
        batch: 1000,
        connections: 4,
        keys: 1000,
        max_seconds: 300,
        generate: None,
        path: "/v1/records".into(),
        delay_ms: None,
        tolerate_503: false,
        id_prefix: "r".into(),
        accepted_log: None,
        stop_file: None,
        lazy: false,
        probe: None,
        interval_ms: 10,
        timeout_ms: 60_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => {
                a.urls = value()?
                    .split(',')
                    .map(|u| u.trim().trim_end_matches('/').to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if a.urls.is_empty() {
                    return Err("--url: no URL given".into());
                }
            }
            "--records" => a.records = num(value()?)?,
            "--batch" => a.batch = num(value()?)?.max(1),
            "--connections" => a.connections = num(value()?)?.max(1),
            "--keys" => a.keys = num(value()?)?.max(1),
            "--max-seconds" => a.max_seconds = num(value()?)? as u64,
            "--generate" => a.generate = Some(num(value()?)?),
            "--path" => a.path = value()?,
            "--delay-ms" => a.delay_ms = Some(num(value()?)? as u64),
            "--tolerate-503" => a.tolerate_503 = true,
            "--id-prefix" => a.id_prefix = value()?,
            "--accepted-log" => a.accepted_log = Some(value()?),
            "--stop-file" => a.stop_file = Some(value()?),
            "--lazy" => a.lazy = true,
            "--probe" => {
                a.probe = Some(
                    value()?
                        .split(',')
                        .map(|k| k.trim().to_string())
                        .filter(|k| !k.is_empty())
                        .collect(),
                )
            }
            "--interval-ms" => a.interval_ms = num(value()?)?.max(1) as u64,
            "--timeout-ms" => a.timeout_ms = num(value()?)?.max(1) as u64,
            "-h" | "--help" => {
                return Err("usage: http-load [--url U[,U...]] [--records N] [--batch N] [--connections N] \
                            [--keys N] [--max-seconds S] [--path /v1/records] [--delay-ms D] \
                            [--tolerate-503] [--id-prefix P] [--accepted-log FILE] [--stop-file FILE] \
                            [--lazy] [--timeout-ms 60000] [--probe KEY[,KEY...] [--interval-ms 10]] | --generate N"
                    .into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn record(prefix: &str, i: usize, keys: usize, delay: Option<u64>) -> String {
    let key = (i.wrapping_mul(2_654_435_761)) % keys + 1;
    match delay {
        Some(d) => format!(
            "{{\"id\":\"{prefix}{i}\",\"user_id\":\"u{key}\",\"amount\":{},\"_sim\":{{\"delay_ms\":{d}}}}}\n",
            i % 997
        ),
        None => format!(
            "{{\"id\":\"{prefix}{i}\",\"user_id\":\"u{key}\",\"amount\":{}}}\n",
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

/// A small xorshift generator: picks the URL of each attempt.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((t ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// What one attempt ended in: an HTTP status, or a connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Status(u16),
    /// The connection could not be made: the request surely did not reach the server.
    Refused,
    /// Anything else (reset, closed, timeout): the request may have reached the server.
    Broken,
}

fn classify(e: &ureq::Error) -> Seen {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Seen::Refused,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Seen::Refused,
        _ => Seen::Broken,
    }
}

fn summary(seen: &BTreeMap<Seen, u64>) -> String {
    let statuses: Vec<String> = seen
        .iter()
        .filter_map(|(k, n)| match k {
            Seen::Status(s) => Some(format!("{s} x {n}")),
            _ => None,
        })
        .collect();
    format!(
        "statuses {}; connection errors: refused {}, broken {}",
        if statuses.is_empty() {
            "none".to_string()
        } else {
            statuses.join(", ")
        },
        seen.get(&Seen::Refused).copied().unwrap_or(0),
        seen.get(&Seen::Broken).copied().unwrap_or(0),
    )
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Retry-After in seconds, as a pause of at most `cap`.
fn retry_after(r: &ureq::http::Response<ureq::Body>, cap: Duration) -> Duration {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(cap))
        .unwrap_or(cap)
}

struct Stop {
    deadline: Instant,
    file: Option<String>,
}

impl Stop {
    fn now(&self) -> bool {
        Instant::now() > self.deadline
            || self
                .file
                .as_deref()
                .is_some_and(|f| std::path::Path::new(f).exists())
    }
}

fn write_ids(path: &str, ids: impl Iterator<Item = String>) {
    let file = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("http-load: cannot write {path}: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for id in ids {
        if writeln!(out, "{id}").is_err() {
            eprintln!("http-load: cannot write {path}");
            std::process::exit(1);
        }
    }
    if out.flush().is_err() {
        eprintln!("http-load: cannot write {path}");
        std::process::exit(1);
    }
}

/// One single-record POST per key every `interval_ms`, until `--max-seconds` or the stop
/// file; prints per key the statuses and the longest run of consecutive 503s (from the
/// first 503's send to the send of the next request that got anything else).
fn probe(args: &Args, keys: &[String]) {
    let stop = Arc::new(Stop {
        deadline: Instant::now() + Duration::from_secs(args.max_seconds),
        file: args.stop_file.clone(),
    });
    let urls = Arc::new(
        args.urls
            .iter()
            .map(|u| format!("{u}{}", args.path))
            .collect::<Vec<_>>(),
    );
    let started = Instant::now();
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_millis(args.timeout_ms);
    let threads: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(k, key)| {
            let (stop, urls, key, prefix) = (
                stop.clone(),
                urls.clone(),
                key.clone(),
                args.id_prefix.clone(),
            );
            std::thread::spawn(move || {
                let agent = agent(timeout);
                let mut rng = Rng::seeded(k as u64 + 1);
                // (send time in ms since start, what came back, id, answer time in ms)
                let mut events: Vec<(f64, Seen, String, f64)> = Vec::new();
                let mut n = 0u64;
                while !stop.now() {
                    let t0 = Instant::now();
                    let id = format!("{prefix}{key}-{n}");
                    n += 1;
                    let body = format!("{{\"id\":\"{id}\",\"user_id\":\"{key}\"}}\n");
                    let url = &urls[rng.below(urls.len())];
                    let seen = match agent
                        .post(url)
                        .header("content-type", "application/x-ndjson")
                        .send(body.as_bytes())
                    {
                        Ok(mut r) => {
                            let _ = r.body_mut().read_to_vec();
                            Seen::Status(r.status().as_u16())
                        }
                        Err(e) => classify(&e),
                    };
                    let sent_ms = (t0 - started).as_secs_f64() * 1000.0;
                    let done_ms = started.elapsed().as_secs_f64() * 1000.0;
                    events.push((sent_ms, seen, id, done_ms));
                    let next = t0 + interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                }
                (key, events)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut doubt = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    let mut worst_gap: Option<(f64, String)> = None;
    let mut all = BTreeMap::new();
    for t in threads {
        let Ok((key, events)) = t.join() else {
            continue;
        };
        let mut seen: BTreeMap<Seen, u64> = BTreeMap::new();
        // Longest run of 503s, and longest run without a 202.
        let (mut run503, mut longest503, mut at503) = (None::<f64>, 0.0f64, 0.0f64);
        let (mut run_bad, mut longest_bad) = (None::<f64>, 0.0f64);
        // Longest time between two consecutive 202 answers (hung requests count too).
        let (mut last_ok, mut longest_gap) = (None::<f64>, 0.0f64);
        let mut slowest = 0.0f64;
        let end = events.last().map(|e| e.0).unwrap_or(0.0);
        for (t, s, id, done) in &events {
            slowest = slowest.max(done - t);
            // The first gap runs from the first request's send.
            last_ok.get_or_insert(*t);
            if *s == Seen::Status(202) {
                if let Some(prev) = last_ok {
                    longest_gap = longest_gap.max(done - prev);
                }
                last_ok = Some(*done);
            }
            *seen.entry(*s).or_default() += 1;
            *all.entry(*s).or_default() += 1;
            match s {
                Seen::Status(202) => accepted.push(id.clone()),
                Seen::Broken => doubt.push(id.clone()),
                _ => {}
            }
            if *s == Seen::Status(503) {
                run503.get_or_insert(*t);
            } else if let Some(start) = run503.take()
                && t - start > longest503
            {
                longest503 = t - start;
                at503 = start;
            }
            if *s != Seen::Status(202) {
                run_bad.get_or_insert(*t);
            } else if let Some(start) = run_bad.take() {
                longest_bad = longest_bad.max(t - start);
            }
        }
        let mut open = "";
        if let Some(start) = run503
            && end - start > longest503
        {
            longest503 = end - start;
            at503 = start;
            open = " (still 503 at the end)";
        }
        if let Some(start) = run_bad {
            longest_bad = longest_bad.max(end - start);
        }
        println!(
            "http-load probe: key {key}: {} requests, {}; longest 503 run {longest503:.1} ms \
             (from {:.3} s){open}, longest run without 202 {longest_bad:.1} ms, longest gap \
             between 202 answers {longest_gap:.1} ms, slowest request {slowest:.1} ms",
            events.len(),
            summary(&seen),
            at503 / 1000.0
        );
        if worst_gap.as_ref().is_none_or(|w| longest_gap > w.0) {
            worst_gap = Some((longest_gap, key.clone()));
        }
        if worst.as_ref().is_none_or(|w| longest503 > w.0) {
            worst = Some((longest503, key));
        }
    }
    let (ms, key) = worst.unwrap_or((0.0, "-".into()));
    let (gap, gap_key) = worst_gap.unwrap_or((0.0, "-".into()));
    println!(
        "http-load probe: {} keys for {:.2} s; {}; longest 503 run over all keys {ms:.1} ms (key {key}); \
         longest gap between 202 answers {gap:.1} ms (key {gap_key})",
        keys.len(),
        started.elapsed().as_secs_f64(),
        summary(&all)
    );
    if let Some(path) = &args.accepted_log {
        write_ids(path, accepted.into_iter());
        write_ids(&format!("{path}.doubt"), doubt.into_iter());
    }
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
                .write_all(record(&args.id_prefix, i, args.keys, args.delay_ms).as_bytes())
                .is_err()
            {
                std::process::exit(1);
            }
        }
        let _ = out.flush();
        return;
    }
    if let Some(keys) = &args.probe {
        probe(&args, keys);
        return;
    }

    let batches = args.records.div_ceil(args.batch);
    let body_of = {
        let (batch, records, keys, delay, prefix) = (
            args.batch,
            args.records,
            args.keys,
            args.delay_ms,
            args.id_prefix.clone(),
        );
        Arc::new(move |b: usize| -> Vec<u8> {
            let lo = b * batch;
            let hi = (lo + batch).min(records);
            (lo..hi)
                .map(|i| record(&prefix, i, keys, delay))
                .collect::<String>()
                .into_bytes()
        })
    };
    // Bodies are built up front so the generator's own cost stays out of the measurement
    // (unless --lazy).
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(if args.lazy {
        Vec::new()
    } else {
        (0..batches).map(|b| body_of(b)).collect()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(Stop {
        deadline: Instant::now() + Duration::from_secs(args.max_seconds),
        file: args.stop_file.clone(),
    });
    let urls: Arc<Vec<String>> = Arc::new(
        args.urls
            .iter()
            .map(|u| format!("{u}{}", args.path))
            .collect(),
    );
    let tolerate = args.tolerate_503;
    let timeout = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (bodies, body_of, next, refused, failed, urls, stop) = (
                bodies.clone(),
                body_of.clone(),
                next.clone(),
                refused.clone(),
                failed.clone(),
                urls.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let agent = agent(timeout);
                let mut rng = Rng::seeded(w as u64 + 1);
                let mut latencies = Vec::new();
                let mut sent = 0usize;
                let mut seen: BTreeMap<Seen, u64> = BTreeMap::new();
                let mut accepted = Vec::new();
                let mut doubt = Vec::new();
                // Longest run of 503s one batch got, from the first 503's send to the
                // send of the next attempt that got anything else (or to giving up).
                let mut longest503 = Duration::ZERO;
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches || stop.now() {
                        break;
                    }
                    let built;
                    let body: &[u8] = if bodies.is_empty() {
                        built = body_of(b);
                        &built
                    } else {
                        &bodies[b]
                    };
                    let mut in_doubt = false;
                    let mut run503: Option<Instant> = None;
                    loop {
                        let url = &urls[rng.below(urls.len())];
                        let t0 = Instant::now();
                        let resp = agent
                            .post(url)
                            .header("content-type", "application/x-ndjson")
                            .send(body);
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        let got503 = matches!(&resp, Ok(r) if r.status().as_u16() == 503);
                        if got503 {
                            run503.get_or_insert(t0);
                        } else if let Some(start) = run503.take() {
                            longest503 = longest503.max(t0 - start);
                        }
                        match resp {
                            Ok(mut r) => {
                                let status = r.status().as_u16();
                                *seen.entry(Seen::Status(status)).or_default() += 1;
                                match status {
                                    202 | 200 => {
                                        let _ = r
                                            .body_mut()
                                            .with_config()
                                            .limit(64 << 20)
                                            .read_to_vec();
                                        latencies.push(ms);
                                        sent += body.iter().filter(|c| **c == b'\n').count();
                                        accepted.push(b);
                                        break;
                                    }
                                    429 => {
                                        let _ = r.body_mut().read_to_vec();
                                        refused.fetch_add(1, Ordering::Relaxed);
                                        if stop.now() {
                                            break;
                                        }
                                        std::thread::sleep(Duration::from_millis(2));
                                    }
                                    503 if tolerate => {
                                        let pause = retry_after(&r, Duration::from_millis(100));
                                        let _ = r.body_mut().read_to_vec();
                                        if stop.now() {
                                            break;
                                        }
                                        std::thread::sleep(pause);
                                    }
                                    _ => {
                                        let body =
                                            r.body_mut().read_to_string().unwrap_or_default();
                                        eprintln!("http-load: HTTP {}: {body}", r.status());
                                        failed.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                }
                            }
                            Err(e) if tolerate => {
                                let kind = classify(&e);
                                *seen.entry(kind).or_default() += 1;
                                if kind == Seen::Broken {
                                    in_doubt = true;
                                }
                                if stop.now() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Err(e) => {
                                *seen.entry(classify(&e)).or_default() += 1;
                                eprintln!("http-load: request failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    if let Some(start) = run503 {
                        longest503 = longest503.max(start.elapsed());
                    }
                    if in_doubt {
                        doubt.push(b);
                    }
                }
                (latencies, sent, seen, accepted, doubt, longest503)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut sent = 0usize;
    let mut seen: BTreeMap<Seen, u64> = BTreeMap::new();
    let mut accepted = Vec::new();
    let mut doubt = Vec::new();
    let mut longest503 = Duration::ZERO;
    for w in workers {
        if let Ok((l, s, st, a, d, r)) = w.join() {
            longest503 = longest503.max(r);
            latencies.extend(l);
            sent += s;
            for (k, n) in st {
                *seen.entry(k).or_default() += n;
            }
            accepted.extend(a);
            doubt.extend(d);
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
    println!(
        "http-load: {}; {} batches in doubt (retried after a broken connection); \
         longest 503 run of a batch {:.0} ms",
        summary(&seen),
        doubt.len(),
        longest503.as_secs_f64() * 1000.0
    );
    if let Some(path) = &args.accepted_log {
        let ids = |batches: Vec<usize>| {
            let (batch, records, prefix) = (args.batch, args.records, args.id_prefix.clone());
            batches.into_iter().flat_map(move |b| {
                let lo = b * batch;
                let hi = (lo + batch).min(records);
                let prefix = prefix.clone();
                (lo..hi).map(move |i| format!("{prefix}{i}"))
            })
        };
        write_ids(path, ids(accepted));
        write_ids(&format!("{path}.doubt"), ids(doubt));
    }
    if failed.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
