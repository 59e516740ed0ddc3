//! The webhook sink. On a runtime of its own, a batcher task cuts the envelopes it is given
//! into POST batches — at most `batch_max_records` each, sent when full or when the oldest
//! envelope waited `batch_max_ms` — and runs at most `concurrency` POSTs at once. A batch
//! is retried with the same `Idempotency-Key` until the receiver takes it or refuses it for
//! good (see [`super::policy::judge`]); the sink is unhealthy while a batch is being
//! retried. What the sink holds is bounded: beyond a few batches per POST slot it answers
//! `Busy` and the records wait with the emitter, counted against their partitions, so a
//! slow receiver turns into 429s at ingress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Semaphore, mpsc};

use super::config::WebhookSettings;
use super::policy::{self, Verdict};
use crate::metrics::Metrics;
use crate::sink::board::Board;
use crate::sink::{Attach, Completion, Envelopes, Guarantee, Refusal, Role, Sink, SinkError};

/// What the sink's tasks share with the emitter's thread, and who the sink is.
struct Hub {
    board: Board,
    describe: String,
    role: &'static str,
}

impl Hub {
    fn finish(&self, c: Completion) {
        let n = c.len();
        self.board.report(vec![c], n);
    }

    fn metrics(&self) -> Option<Metrics> {
        self.board.metrics()
    }
}

/// How POSTs are made; shared by every POST task.
struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    initial_backoff: Duration,
    max_backoff: Duration,
}

/// See module docs.
pub struct WebhookSink {
    runtime: Option<tokio::runtime::Runtime>,
    batches: mpsc::UnboundedSender<Envelopes>,
    hub: Arc<Hub>,
    max_in_flight: usize,
}

impl WebhookSink {
    /// Build the client and start the batcher; nothing is sent until envelopes arrive.
    pub fn open(s: &WebhookSettings, role: Role) -> Result<WebhookSink, SinkError> {
        let describe = format!("webhook sink `{}`", s.url);
        let fail = |m: String| SinkError::setup(&describe, m);
        let url = reqwest::Url::parse(&s.url).map_err(|e| fail(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        for (name, value) in &s.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| fail(format!("header `{name}`: {e}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| fail(format!("header `{name}`: {e}")))?;
            headers.insert(name, value);
        }
        let mut client = reqwest::Client::builder();
        for root in s.extra_roots().map_err(fail)? {
            client = client.add_root_certificate(root);
        }
        let client = client
            .timeout(Duration::from_millis(s.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(s.timeout_ms.clamp(1, 10_000)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-webhook")
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let hub = Arc::new(Hub {
            board: Board::default(),
            describe,
            role: role.as_str(),
        });
        let poster = Arc::new(Poster {
            client,
            url,
            headers,
            initial_backoff: Duration::from_millis(s.initial_backoff_ms.max(1)),
            max_backoff: Duration::from_millis(s.max_backoff_ms.max(s.initial_backoff_ms)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let batch_max = s.batch_max_records.clamp(1, 1_000_000) as usize;
        let concurrency = s.concurrency.clamp(1, 1024) as usize;
        runtime.spawn(batcher(
            rx,
            batch_max,
            Duration::from_millis(s.batch_max_ms.max(1)),
            Arc::new(Semaphore::new(concurrency)),
            poster,
            hub.clone(),
        ));
        Ok(WebhookSink {
            runtime: Some(runtime),
            batches: tx,
            hub,
            // Every POST slot busy plus a full batch waiting for each: beyond that the
            // receiver is the bottleneck and records wait upstream.
            max_in_flight: batch_max * concurrency * 2,
        })
    }
}

/// Cut what arrives into POST batches and start a POST per batch, at most `permits` at once.
async fn batcher(
    mut rx: mpsc::UnboundedReceiver<Envelopes>,
    batch_max: usize,
    max_age: Duration,
    permits: Arc<Semaphore>,
    poster: Arc<Poster>,
    hub: Arc<Hub>,
) {
    let mut open = Envelopes::new();
    let mut oldest: Option<tokio::time::Instant> = None;
    loop {
        let deadline = oldest.map(|t| t + max_age);
        let next = match deadline {
            Some(d) => tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep_until(d) => {
                    send(std::mem::take(&mut open), &permits, &poster, &hub).await;
                    oldest = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(batch) = next else {
            return;
        };
        if open.is_empty() {
            oldest = Some(tokio::time::Instant::now());
        }
        open.append(batch);
        while open.len() >= batch_max {
            let full = open.take_front(batch_max);
            send(full, &permits, &poster, &hub).await;
        }
        if open.is_empty() {
            oldest = None;
        }
    }
}

/// Wait for a POST slot, then POST `batch` in a task of its own until it is settled.
async fn send(batch: Envelopes, permits: &Arc<Semaphore>, poster: &Arc<Poster>, hub: &Arc<Hub>) {
    if batch.is_empty() {
        return;
    }
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let (poster, hub) = (poster.clone(), hub.clone());
    tokio::spawn(async move {
        let c = deliver(batch, &poster, &hub).await;
        hub.finish(c);
        drop(permit);
    });
}

/// POST one batch until the receiver takes it or refuses it for good.
async fn deliver(batch: Envelopes, poster: &Poster, hub: &Hub) -> Completion {
    let key = policy::idempotency_key(hub.role, &batch);
    let body = Bytes::copy_from_slice(batch.bytes());
    let metrics = hub.metrics();
    let label = [hub.role];
    let mut retry = 0u32;
    loop {
        let started = Instant::now();
        let answer = poster
            .client
            .post(poster.url.clone())
            .headers(poster.headers.clone())
            .header("Idempotency-Key", key.as_str())
            .body(body.clone())
            .send()
            .await;
        let (class, verdict, trouble) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = r.bytes().await.unwrap_or_default();
                let verdict = policy::judge(status, retry_after.as_deref(), &body);
                (
                    format!("{}xx", status / 100),
                    verdict,
                    format!("answered {status}"),
                )
            }
            Err(e) => (
                "error".to_string(),
                Verdict::Retry(None),
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    format!("failed: {e}")
                },
            ),
        };
        if let Some(m) = &metrics {
            m.webhook_duration
                .with_label_values(&label)
                .observe(started.elapsed().as_secs_f64());
            m.webhook_batches
                .with_label_values(&[hub.role, class.as_str()])
                .inc();
        }
        match verdict {
            Verdict::Delivered => {
                if let Some(m) = &metrics {
                    m.webhook_envelopes
                        .with_label_values(&label)
                        .inc_by(batch.len() as u64);
                }
                if hub.board.works() {
                    tracing::info!(sink = %hub.describe, "the receiver takes batches again");
                }
                return Completion::Delivered(batch);
            }
            Verdict::Reject(reason) => {
                tracing::warn!(sink = %hub.describe, envelopes = batch.len(), %reason,
                    "the receiver refused a batch; it goes to the dead letter");
                return Completion::Rejected(batch, reason);
            }
            Verdict::Retry(asked) => {
                retry += 1;
                let wait = policy::delay(retry, asked, poster.initial_backoff, poster.max_backoff);
                let problem = format!("{}: POST {trouble}; retrying", hub.describe);
                if hub.board.failing(problem) {
                    // Once per failing spell; each retry is a debug line.
                    tracing::warn!(sink = %hub.describe, envelopes = batch.len(),
                        wait_ms = wait.as_millis() as u64, "POST {trouble}; retrying until the receiver takes it");
                } else {
                    tracing::debug!(sink = %hub.describe, envelopes = batch.len(), retry,
                        wait_ms = wait.as_millis() as u64, "POST {trouble}; retrying");
                }
                if let Some(m) = &metrics {
                    m.webhook_retries.with_label_values(&label).inc();
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Sink for WebhookSink {
    fn describe(&self) -> String {
        self.hub.describe.clone()
    }

    fn guarantee(&self) -> Guarantee {
        Guarantee::AtLeastOnce
    }

    fn submit(&mut self, batch: Envelopes) -> Result<(), Refusal> {
        let in_flight = self.hub.board.in_flight();
        if in_flight > 0 && in_flight + batch.len() > self.max_in_flight {
            return Err(Refusal::Busy(batch));
        }
        let n = batch.len();
        self.hub.board.took(n);
        if let Err(mpsc::error::SendError(batch)) = self.batches.send(batch) {
            self.hub.board.gave_back(n);
            let e = SinkError::setup(&self.hub.describe, "the sink stopped");
            return Err(Refusal::Failed(batch, e));
        }
        Ok(())
    }

    fn completed(&mut self, out: &mut Vec<Completion>) {
        self.hub.board.collect(out);
    }

    fn flush(&mut self, _durable: bool) -> Result<(), SinkError> {
        // Batches leave on their own when full or `batch_max_ms` old; a delivered batch is
        // the receiver's to keep.
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.hub.board.in_flight()
    }

    fn health(&self) -> Option<String> {
        self.hub.board.health()
    }

    fn attach(&mut self, attach: Attach) {
        self.hub.board.attach(attach);
    }
}

impl Drop for WebhookSink {
    /// Envelopes not yet delivered stay pending in the journal and are sent after the next
    /// start; stop the runtime without waiting for them (the emitter's thread may be inside
    /// a runtime, where a blocking shutdown panics).
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
