//! The port from the HTTP server's stop to the process's exit (README "Operating": a
//! leaving node keeps listening until it exits). The server closes its copy of the
//! listening socket when it stops and then waits for its open connections; the binary
//! keeps another copy, so connections arriving meanwhile wait in the listen queue instead
//! of being refused, and [`answer_until_exit`] answers each with `503` + `Retry-After`.
//! The socket closes with the process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use actix_web::ResponseError;
use actix_web::body::MessageBody;

use super::problem::ApiError;

/// A request gets this long to arrive (its head; a body is not wanted) and, once
/// answered, to be closed by its client.
const PATIENCE: Duration = Duration::from_millis(200);
/// What is read of a request at most.
const MAX_READ: usize = 64 << 10;

/// Answer every connection on `listener` with 503, one after the other on a thread of
/// its own, until the process exits.
pub fn answer_until_exit(listener: TcpListener) {
    let answer = stopped_answer();
    // The HTTP server made the socket non-blocking (a flag of the socket, shared by every
    // handle on it); this thread waits in accept instead.
    if let Err(e) = listener.set_nonblocking(false) {
        tracing::warn!(error = %e, "listener: cannot make it blocking");
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-stopped".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => answer_one(c, &answer),
                    // A connection reset before it was taken, or no descriptor free now.
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot answer on the port after the HTTP stop");
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
