//! Prometheus metrics (`sluice_*`, units in the names). One registry per engine, so tests
//! can run several engines in one process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the service exports. Cloning shares the same registry and series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records accepted by `/v1/records`, `/v1/enrich` and `sluice enrich`.
    pub records_accepted: IntCounter,
    /// Records refused with 429 because a partition's backlog was full.
    pub records_refused: IntCounter,
    /// Terminal records written, by outcome.
    pub records_emitted: IntCounterVec,
    /// Terminal records written to the dead-letter sink.
    pub dead_letters: IntCounter,
    /// Lookup requests (attempts), by step and result (found, miss, error, timeout).
    pub lookup_attempts: IntCounterVec,
    /// Retries scheduled, by step.
    pub lookup_retries: IntCounterVec,
    /// Records whose deadline passed.
    pub record_timeouts: IntCounter,
    /// Duration of one lookup attempt, by step.
    pub lookup_duration: HistogramVec,
    /// Time from acceptance to terminal outcome.
    pub record_latency: Histogram,
    /// Records in each partition's in-flight queue.
    pub partition_in_flight: IntGaugeVec,
    /// Records in each partition's backlog.
    pub partition_backlog: IntGaugeVec,
    /// Accepted but not yet terminal, all partitions.
    pub pending: IntGauge,
    /// HTTP requests by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request duration by route.
    pub http_duration: HistogramVec,
    /// Request body sizes.
    pub http_body_bytes: Histogram,
    /// Sink write or flush failures (the batch is kept and retried).
    pub sink_errors: IntCounter,
    /// Log lines that could not be written (`crate::logging::write_errors`, set when scraped).
    pub log_write_errors: IntCounter,
    /// Journal fsyncs (one per group commit).
    pub journal_fsyncs: IntCounter,
    /// Bytes appended to the journal.
    pub journal_bytes: IntCounter,
    /// Duration of snapshot checkpoints.
    pub checkpoint_duration: Histogram,
    /// Size of the newest snapshot.
    pub checkpoint_bytes: IntGauge,
    /// Pending records in the newest snapshot.
    pub checkpoint_records: IntGauge,
    /// Seconds since the newest snapshot (set when scraped).
    pub checkpoint_age: prometheus::Gauge,
    /// Pending records re-issued by the last restore.
    pub restored_records: IntGauge,
    /// Lookups that shared another record's in-flight request, by step (updated when
    /// scraped).
    pub lookup_coalesced: IntCounterVec,
    /// Result-cache hits and misses, by step (updated when scraped).
    pub lookup_cache: IntCounterVec,
    /// Cluster: members in the cluster as this node sees it.
    pub cluster_members: IntGauge,
    /// Cluster: partitions this node owns and serves.
    pub cluster_owned_partitions: IntGauge,
    /// Cluster: partitions handed to another node (graceful) or taken over.
    pub cluster_handovers: IntCounterVec,
    /// Cluster: records forwarded to their partition's owner.
    pub cluster_forwarded_records: IntCounter,
    /// Cluster: duration of one forwarded batch (request to the owner's durable answer).
    pub cluster_forward_duration: Histogram,
    /// Cluster: records refused because they were written or sent under a stale epoch.
    pub fencing_refusals: IntCounter,
    /// Cluster: etcd lease renewals that failed.
    pub lease_renew_failures: IntCounter,
    /// Cluster: records held here for owners elsewhere.
    pub cluster_staged_records: IntGauge,
    /// Cluster: 1 while this node has not reached that peer over HTTP for
    /// `cluster.peer_timeout_ms` (and says so in etcd), by peer.
    pub cluster_peer_unreachable: IntGaugeVec,
    /// Held while a scrape brings counters kept elsewhere (the lookup's) up to date, so
    /// concurrent scrapes never add the same difference twice.
    pub scrape_sync: std::sync::Arc<parking_lot::Mutex<()>>,
    /// Envelopes a sink's destination refused for good (sent to the dead letter), by sink.
    pub sink_rejected: IntCounterVec,
    /// 1 while a sink is healthy, 0 while its writes fail and are retried, by sink.
    pub sink_up: IntGaugeVec,
    /// Webhook POSTs by sink and answer class (2xx, 4xx, 5xx, error for no answer).
    pub webhook_batches: IntCounterVec,
    /// Envelopes a webhook receiver accepted, by sink.
    pub webhook_envelopes: IntCounterVec,
    /// Webhook POSTs sent again (same Idempotency-Key), by sink.
    pub webhook_retries: IntCounterVec,
    /// Duration of one webhook POST, by sink.
    pub webhook_duration: HistogramVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let pending = IntGauge::new(
            "sluice_pending_records",
            "Records accepted but not yet terminal",
        )?;
        registry.register(Box::new(pending.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_http_request_duration_seconds",
                "HTTP request duration by route",
            )
            .buckets(latency_buckets()),
            &["route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let webhook_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_webhook_request_duration_seconds",
                "Duration of one webhook POST, by sink",
            )
            .buckets(latency_buckets()),
            &["sink"],
        )?;
        registry.register(Box::new(webhook_duration.clone()))?;
        let lookup_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_lookup_duration_seconds",
                "Duration of one lookup attempt, by step",
            )
            .buckets(latency_buckets()),
            &["step"],
        )?;
        registry.register(Box::new(lookup_duration.clone()))?;
        Ok(Metrics {
            records_accepted: counter("sluice_records_accepted_total", "Records accepted")?,
            records_refused: counter(
                "sluice_records_refused_total",
                "Records refused with 429 (backlog full)",
            )?,
            records_emitted: counter_vec(
                "sluice_records_emitted_total",
                "Terminal records written, by outcome",
                &["outcome"],
            )?,
            dead_letters: counter(
                "sluice_dead_letters_total",
                "Terminal records written to the dead-letter sink",
            )?,
            lookup_attempts: counter_vec(
                "sluice_lookup_requests_total",
                "Lookup requests (attempts) by step and result",
                &["step", "result"],
            )?,
            lookup_retries: counter_vec(
                "sluice_lookup_retries_total",
                "Lookup retries scheduled, by step",
                &["step"],
            )?,
            record_timeouts: counter(
                "sluice_record_timeouts_total",
                "Records whose deadline (pipeline.timeout_ms) passed",
            )?,
            lookup_duration,
            record_latency: histogram(
                "sluice_record_latency_seconds",
                "Time from acceptance to terminal outcome",
                latency_buckets(),
            )?,
            partition_in_flight: gauge_vec(
                "sluice_partition_in_flight_records",
                "Records in the partition's in-flight queue",
                &["partition"],
            )?,
            partition_backlog: gauge_vec(
                "sluice_partition_backlog_records",
                "Records waiting in the partition's backlog",
                &["partition"],
            )?,
            pending,
            http_requests: counter_vec(
                "sluice_http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            )?,
            http_duration,
            http_body_bytes: histogram(
                "sluice_http_request_body_bytes",
                "Size of request bodies",
                prometheus::exponential_buckets(256.0, 4.0, 10)?,
            )?,
            sink_rejected: counter_vec(
                "sluice_sink_rejected_envelopes_total",
                "Envelopes a sink's destination refused for good (sent to the dead letter)",
                &["sink"],
            )?,
            sink_up: gauge_vec(
                "sluice_sink_up",
                "1 while the sink is healthy, 0 while its writes fail and are retried",
                &["sink"],
            )?,
            webhook_batches: counter_vec(
                "sluice_webhook_batches_total",
                "Webhook POSTs by answer class (2xx, 3xx, 4xx, 5xx, error)",
                &["sink", "class"],
            )?,
            webhook_envelopes: counter_vec(
                "sluice_webhook_envelopes_total",
                "Envelopes a webhook receiver accepted",
                &["sink"],
            )?,
            webhook_retries: counter_vec(
                "sluice_webhook_retries_total",
                "Webhook POSTs sent again with the same Idempotency-Key",
                &["sink"],
            )?,
            webhook_duration,
            scrape_sync: Default::default(),
            sink_errors: counter(
                "sluice_sink_errors_total",
                "Sink write/flush failures (batches are kept and retried)",
            )?,
            log_write_errors: counter(
                "sluice_log_write_errors_total",
                "Log lines dropped because stderr could not take them (write failed or too far behind)",
            )?,
            journal_fsyncs: counter(
                "sluice_journal_fsyncs_total",
                "Journal fsyncs (group commits)",
            )?,
            journal_bytes: counter(
                "sluice_journal_bytes_total",
                "Bytes appended to the journal",
            )?,
            checkpoint_duration: histogram(
                "sluice_checkpoint_duration_seconds",
                "Duration of snapshot checkpoints",
                latency_buckets(),
            )?,
            checkpoint_bytes: gauge("sluice_checkpoint_bytes", "Size of the newest snapshot")?,
            checkpoint_records: gauge(
                "sluice_checkpoint_records",
                "Pending records in the newest snapshot",
            )?,
            checkpoint_age: {
                let g = prometheus::Gauge::new(
                    "sluice_checkpoint_age_seconds",
                    "Seconds since the newest snapshot",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            restored_records: gauge(
                "sluice_restored_records",
                "Pending records re-issued by the last restore",
            )?,
            lookup_coalesced: counter_vec(
                "sluice_lookup_coalesced_total",
                "Lookups that shared another record's in-flight request, by step",
                &["step"],
            )?,
            lookup_cache: counter_vec(
                "sluice_lookup_cache_total",
                "Lookup result cache hits and misses, by step",
                &["step", "result"],
            )?,
            cluster_members: gauge("sluice_cluster_members", "Members of the cluster")?,
            cluster_owned_partitions: gauge(
                "sluice_cluster_owned_partitions",
                "Partitions this node owns and serves",
            )?,
            cluster_handovers: counter_vec(
                "sluice_cluster_handovers_total",
                "Partitions that moved: released (handed over) or acquired",
                &["direction"],
            )?,
            cluster_forwarded_records: counter(
                "sluice_cluster_forwarded_records_total",
                "Records forwarded to their partition's owner",
            )?,
            cluster_forward_duration: histogram(
                "sluice_cluster_forward_duration_seconds",
                "Duration of one forwarded batch until the owner made it durable",
                latency_buckets(),
            )?,
            fencing_refusals: counter(
                "sluice_cluster_fencing_refusals_total",
                "Records refused because this node is fenced (no live etcd lease, or it left \
                 the cluster: requests answered 503, forwarded batches 409) or under a stale \
                 ownership epoch (batches not written here, forwarded batches refused with 409)",
            )?,
            lease_renew_failures: counter(
                "sluice_cluster_lease_renew_failures_total",
                "etcd lease renewals that failed",
            )?,
            cluster_staged_records: gauge(
                "sluice_cluster_staged_records",
                "Records held here for their partition's owner elsewhere",
            )?,
            cluster_peer_unreachable: gauge_vec(
                "sluice_cluster_peer_unreachable",
                "1 while this node has not reached the peer over HTTP for cluster.peer_timeout_ms",
                &["peer"],
            )?,
            registry,
        })
    }

    /// The text exposition format for `GET /metrics`.
    /// Bring `counter` up to `total`, a count kept elsewhere (the lookup's): one scrape at a
    /// time, so concurrent scrapes never add the same difference twice.
    pub fn catch_up(&self, counter: &IntCounter, total: u64) {
        let _one_at_a_time = self.scrape_sync.lock();
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    pub fn render(&self) -> String {
        self.catch_up(&self.log_write_errors, crate::logging::write_errors());
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            return format!("# error encoding metrics: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_catch_ups_never_count_twice() {
        let m = Metrics::new().unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (m, start) = (m.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for total in 1..=200_000u64 {
                        m.catch_up(&m.lookup_coalesced.with_label_values(&["lookup"]), total);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            m.lookup_coalesced.with_label_values(&["lookup"]).get(),
            200_000
        );
    }
}
