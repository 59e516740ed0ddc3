//! The port once the HTTP server stops taking connections (README "Operating": a stopping
//! node keeps listening until it exits). The server pauses its accept loop, finishes the
//! connections it has (up to `STOP_TIMEOUT_SECS`) and closes its handle on the listening
//! socket; from the pause on, an [`Answerer`] on another handle of the same socket answers
//! every new connection with the API's `503` + `Retry-After` problem — in `node::run`
//! until it returns, then in `sluice serve` until the process exits, when the socket
//! closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::ResponseError;
use actix_web::body::MessageBody;
use parking_lot::Mutex;

use super::problem::ApiError;

/// A request gets this long to arrive (its head; a body is not wanted) and, once
/// answered, to be closed by its client.
const PATIENCE: Duration = Duration::from_millis(200);
/// What is read of a request at most.
const MAX_READ: usize = 64 << 10;
/// How often the accept loop looks for a connection or its stop.
const POLL: Duration = Duration::from_millis(1);

/// Answers every connection on a listener with 503, each on a thread of its own (a client
/// slow to close holds up no other), until [`Answerer::stop`] or the process's exit.
pub struct Answerer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Answerer {
    /// Start answering on `listener` (`None`, logged, when no thread can be started).
    pub fn start(listener: TcpListener) -> Option<Answerer> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_accepting(listener, Some(stop.clone()))?;
        Some(Answerer { stop, thread })
    }

    /// Stop taking connections (those taken are still answered) and close this handle.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Answer on `listener` until the process exits.
pub fn answer_until_exit(listener: TcpListener) {
    // Never stopped: the thread ends with the process.
    let _ = spawn_accepting(listener, None);
}

/// The accept loop, on a thread of its own: waiting in `accept` when it is never stopped,
/// else polling for connections and for `stop`.
fn spawn_accepting(listener: TcpListener, stop: Option<Arc<AtomicBool>>) -> Option<JoinHandle<()>> {
    let answer: Arc<[u8]> = stopped_answer().into();
    // Non-blocking when the loop must see its stop. (The flag belongs to the socket, not
    // to a handle: the HTTP server's had set it.)
    if let Err(e) = listener.set_nonblocking(stop.is_some()) {
        tracing::warn!(error = %e, "listener: cannot set its blocking mode");
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-stopped".into())
        .spawn(move || {
            while !stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                match listener.accept() {
                    Ok((c, _)) => answer_on_a_thread(c, &answer),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // Nothing waiting (non-blocking); or a connection reset before it was
                    // taken, or no descriptor free now.
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
    spawned
        .map_err(|e| tracing::warn!(error = %e, "cannot answer on the port after the HTTP stop"))
        .ok()
}

/// [`answer_one`] on a thread of its own, or here when no thread can be started.
fn answer_on_a_thread(c: TcpStream, answer: &Arc<[u8]>) {
    let slot = Arc::new(Mutex::new(Some(c)));
    let (theirs, their_answer) = (slot.clone(), answer.clone());
    let spawned = std::thread::Builder::new()
        .name("sluice-stopped-conn".into())
        .spawn(move || {
            if let Some(c) = theirs.lock().take() {
                answer_one(c, &their_answer);
            }
        });
    if spawned.is_err()
        && let Some(c) = slot.lock().take()
    {
        answer_one(c, answer);
    }
}

/// The whole HTTP/1.1 answer: the API's own 503 problem, and the connection closed.
fn stopped_answer() -> Vec<u8> {
    let resp = ApiError::Unavailable(
        "the node is stopping and takes no more requests; retry (another node)".into(),
    )
    .error_response();
    let status = resp.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = resp.into_body().try_into_bytes().unwrap_or_default();
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// Read the request head (briefly), answer, and close once the client has read it:
/// closing with unread request bytes would reset the connection and could lose the answer.
fn answer_one(mut c: TcpStream, answer: &[u8]) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(PATIENCE));
    let _ = c.set_write_timeout(Some(PATIENCE));
    let until = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < MAX_READ {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if Instant::now() >= until {
            break;
        }
    }
    if c.write_all(answer).is_err() {
        return;
    }
    let _ = c.shutdown(Shutdown::Write);
    // Whatever the client still sends (a body) until it closes its side.
    let mut read = got.len();
    while Instant::now() < until + PATIENCE && read < 16 * MAX_READ {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        String::from_utf8(raw).unwrap()
    }

    #[test]
    fn a_client_slow_to_close_holds_up_no_other_and_stop_closes_the_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answerer = Answerer::start(listener).expect("started");
        // Answered, but kept open (as a client sleeping on Retry-After does).
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        slow.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 503");
        let started = Instant::now();
        let text = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(
            started.elapsed() < PATIENCE,
            "answered after {:?}",
            started.elapsed()
        );
        answerer.stop();
        let refused = TcpStream::connect(addr).expect_err("the port is closed");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    }

    #[test]
    fn every_connection_gets_a_503_problem_with_retry_after_then_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        answer_until_exit(listener);
        let body = vec![b'x'; 200_000];
        let post = [
            b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n".as_slice(),
            &body,
        ]
        .concat();
        for request in [
            b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n".as_slice(),
            &post,
            b"".as_slice(),
        ] {
            let text = exchange(addr, request);
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("\r\nretry-after: 1"), "{head}");
            assert!(lower.contains("\r\nconnection: close"), "{head}");
            assert!(
                lower.contains("\r\ncontent-type: application/problem+json"),
                "{head}"
            );
            let len: usize = lower
                .split("content-length: ")
                .nth(1)
                .and_then(|v| v.split("\r\n").next())
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            assert_eq!(body.len(), len);
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["status"], 503);
            assert_eq!(problem["type"], "urn:sluice:problem:not-ready");
        }
    }
}
