//! What clients see of a node between its SIGTERM and its exit: a connection loop that
//! counts refused connections while the process still lives, and a poster that sends each
//! request on a connection of its own and sorts the answers (README "Operating": a
//! leaving node keeps listening until it exits).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether process `pid` still lives: it exists and is not a zombie (a zombie has exited
/// and closed its files; only its parent has not reaped it yet).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name, which is in parentheses.
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A failure seen at `at` happened while the process lived for sure: it still lives a
/// moment later (a process in the last microseconds of its exit, its files closed but not
/// yet a zombie, is not mistaken for a live one).
fn lived_through(pid: u32) -> bool {
    alive(pid) && {
        std::thread::sleep(Duration::from_millis(5));
        alive(pid)
    }
}

/// The base URL's socket address (`http://127.0.0.1:port`).
pub fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

/// What [`Connector`] saw.
#[derive(Debug, Default)]
pub struct Connects {
    /// Connections the port accepted.
    pub accepted: u64,
    /// Connections refused while the process lived.
    pub refused_alive: u64,
    /// Other connect errors while the process lived (e.g. a timeout).
    pub failed_alive: Vec<String>,
}

/// Connects to a port in a loop, about every millisecond (each connection closed at once),
/// until the process `pid` has exited.
pub struct Connector {
    thread: JoinHandle<Connects>,
}

impl Connector {
    pub fn start(addr: SocketAddr, pid: u32) -> Connector {
        let thread = std::thread::spawn(move || {
            let mut seen = Connects::default();
            loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(s) => {
                        seen.accepted += 1;
                        drop(s);
                        // About a thousand a second: more would fill the listen queue
                        // faster than the server empties it (it has requests to serve too).
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) if !lived_through(pid) => return seen,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        seen.refused_alive += 1
                    }
                    Err(e) => seen.failed_alive.push(e.to_string()),
                }
                if !alive(pid) {
                    return seen;
                }
            }
        });
        Connector { thread }
    }

    /// Wait until the process has exited and the loop ended.
    pub fn finish(self) -> Connects {
        self.thread.join().expect("connector thread")
    }
}

/// What [`Poster`] saw.
#[derive(Debug, Default)]
pub struct Posts {
    /// Ids acknowledged with 202, in sending order.
    pub acked: Vec<String>,
    /// Ids acknowledged with 202 by a request sent after [`Poster::mark`].
    pub acked_after_mark: Vec<String>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// What broke the rules while the process lived: a status other than 202 and 503, a
    /// 503 without `Retry-After`, a connection that failed or ended without an answer.
    pub violations: Vec<String>,
}

/// Posts batches of records to one node, each on a connection of its own
/// (`Connection: close`), until the process `pid` has exited. Every batch has new ids, and
/// goes to other partitions than the one before it: one answered 503 (nothing of it was
/// accepted) is not sent again.
pub struct Poster {
    marked: Arc<AtomicBool>,
    thread: JoinHandle<Posts>,
}

impl Poster {
    /// `batch(n)` builds the n-th batch (JSON records with their `id`s).
    pub fn start(
        addr: SocketAddr,
        pid: u32,
        batch: impl Fn(u64) -> Vec<Value> + Send + 'static,
    ) -> Poster {
        let marked = Arc::new(AtomicBool::new(false));
        let mark = marked.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Posts::default();
            for n in 0.. {
                let records = batch(n);
                let after_mark = mark.load(Ordering::Acquire);
                let body = serde_json::to_vec(&records).expect("json");
                match post(addr, &body) {
                    Ok((status, retry_after, text)) => {
                        *seen.statuses.entry(status).or_default() += 1;
                        match status {
                            202 => {
                                let v: Value = serde_json::from_str(&text)
                                    .unwrap_or_else(|e| panic!("202 body ({e}): {text}"));
                                let ids: Vec<String> = v["ids"]
                                    .as_array()
                                    .expect("ids")
                                    .iter()
                                    .map(|i| i.as_str().unwrap_or("").to_string())
                                    .collect();
                                assert_eq!(ids.len(), records.len(), "{text}");
                                if after_mark {
                                    seen.acked_after_mark.extend(ids.iter().cloned());
                                }
                                seen.acked.extend(ids);
                            }
                            503 if retry_after => std::thread::sleep(Duration::from_millis(5)),
                            s => seen.violations.push(format!("{s}: {text}")),
                        }
                    }
                    Err(_) if !lived_through(pid) => return seen,
                    Err(e) => {
                        seen.violations
                            .push(format!("while the process lived: {e}"));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                if !alive(pid) {
                    return seen;
                }
            }
            seen
        });
        Poster { marked, thread }
    }

    /// From now on, 202s are also counted in [`Posts::acked_after_mark`].
    pub fn mark(&self) {
        self.marked.store(true, Ordering::Release);
    }

    /// Wait until the process has exited and the loop ended.
    pub fn finish(self) -> Posts {
        self.thread.join().expect("poster thread")
    }
}

/// One `POST /v1/records` on a fresh connection: status, whether `Retry-After` came, body.
fn post(addr: SocketAddr, body: &[u8]) -> std::io::Result<(u16, bool, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!(
            "the connection ended without a whole answer: {text:?}"
        )));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head:?}")))?;
    let retry_after = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    Ok((status, retry_after, body.to_string()))
}

/// An HTTP/1.1 connection left open and idle after one request, as a client's connection
/// pool keeps it: the server must not wait for it to close the port.
pub fn idle_keep_alive(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"}") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// Poll `GET /readyz` (fresh connections) until it answers 503 or `limit` passes; how long
/// it took, or `None`.
pub fn readyz_503_within(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if get_status(addr, "/readyz") == Some(503) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The status of `GET path` on a fresh connection (`None`: no answer).
pub fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}
