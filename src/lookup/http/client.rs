//! The HTTP exchange of an `http` step: one pooled keep-alive client (rustls, the step's extra
//! roots), the step's headers on every request, at most `concurrency` requests in flight, and
//! transport failures turned into lookup errors (a failed connection also marks the service
//! unreachable).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ready::Readiness;
use crate::lookup::LookupError;

/// The most of an answer's body read (larger answers fail the lookup).
const MAX_BODY: usize = 16 << 20;

/// An answer as received.
#[derive(Debug)]
pub struct Received {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// See module docs.
pub struct Transport {
    client: reqwest::Client,
    headers: HeaderMap,
    permits: Arc<Semaphore>,
    pub readiness: Arc<Readiness>,
}

impl Transport {
    /// A client trusting `roots` besides the built-in ones, sending `headers`.
    pub fn new(
        roots: Vec<reqwest::Certificate>,
        mut headers: HeaderMap,
        concurrency: usize,
        connect_timeout: Duration,
        readiness: Arc<Readiness>,
    ) -> Result<Transport, reqwest::Error> {
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        let mut client = reqwest::Client::builder();
        for root in roots {
            client = client.add_root_certificate(root);
        }
        let client = client
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // A redirect is an answer like any other status: the step's URL is wrong.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Transport {
            client,
            headers,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            readiness,
        })
    }

    /// A request to `url` with the step's headers.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .headers(self.headers.clone())
    }

    /// One of the `concurrency` request slots; held until the answer's body is read.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit, LookupError> {
        // Nothing closes the semaphore; the error arm is for completeness.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LookupError::Retryable("the http client is shutting down".to_string()))
    }

    /// Send `req` holding `permit`, and read the whole answer.
    pub async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        permit: OwnedSemaphorePermit,
    ) -> Result<Received, LookupError> {
        let resp = req.send().await.map_err(|e| self.failed(&e))?;
        self.readiness.up();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failed(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(LookupError::Fatal(format!(
                    "HTTP {status}: the answer is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        drop(permit);
        Ok(Received {
            status,
            retry_after,
            body,
        })
    }

    /// A transport failure as a lookup error.
    fn failed(&self, e: &reqwest::Error) -> LookupError {
        let message = chain(e);
        if e.is_connect() {
            self.readiness.down(&message);
        }
        if e.is_timeout() {
            LookupError::Timeout(message)
        } else {
            LookupError::Retryable(message)
        }
    }
}

/// An error with its causes, `a: b: c` (reqwest's own text hides the interesting part).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
