//! Batched lookups (`batch_max_keys > 0`): one task gathers keys into
//! `POST {"keys": [[b0, b1..], ...]}` requests of at most `max_keys`, sending a batch when it
//! is full or its first key has waited `max_wait`; the answer's `{"results": [...]}` is
//! handed back in order. While every request slot is busy keys keep gathering, so a slow
//! service gets fewer, fuller batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::answer::{self, Answer};
use super::client::Transport;
use crate::lookup::{LookupError, LookupResult};
use crate::pointer::Pointer;

/// One key waiting for its batch.
struct Item {
    /// The key's bind values as a JSON array.
    key: String,
    reply: oneshot::Sender<LookupResult>,
}

/// How a batch is sent and read.
pub struct Spec {
    pub url: reqwest::Url,
    pub max_keys: usize,
    pub max_wait: Duration,
    /// Bounds each POST, so a hung service frees its request slot.
    pub attempt_timeout: Duration,
    pub result: Pointer,
}

/// The handle lookups submit their keys to; the gathering task ends when it is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Item>,
}

impl Batcher {
    /// Start the gathering task on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        transport: Arc<Transport>,
        spec: Spec,
    ) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(gather(rx, transport, Arc::new(spec)));
        Batcher { tx }
    }

    /// Look `key` (bind values as a JSON array) up in the next batch.
    pub async fn lookup(&self, key: String) -> LookupResult {
        let (reply, answer) = oneshot::channel();
        let stopped = || LookupError::Retryable("the http batcher has stopped".to_string());
        self.tx.send(Item { key, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn gather(mut rx: mpsc::UnboundedReceiver<Item>, transport: Arc<Transport>, spec: Arc<Spec>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + spec.max_wait;
        while batch.len() < spec.max_keys {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let permit = match transport.permit().await {
            Ok(p) => p,
            Err(e) => {
                for item in batch {
                    let _ = item.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        // Keys that arrived while every slot was busy ride along.
        while batch.len() < spec.max_keys {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // A key whose lookup gave up (its attempt timed out) is not sent.
        batch.retain(|i| !i.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (transport, spec) = (transport.clone(), spec.clone());
        tokio::spawn(async move {
            let results = post(&batch, &transport, &spec, permit).await;
            for (item, result) in batch.into_iter().zip(results) {
                let _ = item.reply.send(result);
            }
        });
    }
}

/// The request body for `batch`.
fn body(batch: &[Item]) -> String {
    let mut out = String::from("{\"keys\":[");
    for (i, item) in batch.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.key);
    }
    out.push_str("]}");
    out
}

async fn post(
    batch: &[Item],
    transport: &Transport,
    spec: &Spec,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Vec<LookupResult> {
    let req = transport
        .request(reqwest::Method::POST, spec.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body(batch));
    let sent = tokio::time::timeout(spec.attempt_timeout, transport.exchange(req, permit)).await;
    let received = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return vec![Err(e); batch.len()],
        Err(_) => {
            let e = LookupError::Timeout(format!(
                "no answer to a batch within {} ms",
                spec.attempt_timeout.as_millis()
            ));
            return vec![Err(e); batch.len()];
        }
    };
    answer::batch(
        &Answer {
            status: received.status,
            retry_after: received.retry_after.as_deref(),
            body: &received.body,
        },
        batch.len(),
        &spec.result,
        SystemTime::now(),
    )
}
