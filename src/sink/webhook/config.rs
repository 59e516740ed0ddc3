//! `[output.webhook]` / `[dead_letter.webhook]`: envelopes POSTed as NDJSON batches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// See module docs and README "Webhook sink".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` or `https://` (TLS by rustls with the Mozilla root certificates).
    pub url: String,
    /// Envelopes per POST at most.
    pub batch_max_records: u64,
    /// Longest an envelope waits for its batch to fill.
    pub batch_max_ms: u64,
    /// Per POST; a POST that takes longer is retried.
    pub timeout_ms: u64,
    /// POSTs in flight at once.
    pub concurrency: u64,
    /// First retry delay; doubles per retry of the same batch up to `max_backoff_ms`
    /// (a `Retry-After` answer overrides it).
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Sent with every POST (e.g. `Authorization = "Bearer …"`).
    pub headers: BTreeMap<String, String>,
    /// PEM file of extra root certificates to trust for `https://` (a private CA);
    /// empty: the Mozilla roots only.
    pub ca_file: String,
}

impl WebhookSettings {
    /// The extra root certificates of `ca_file` (none when it is empty).
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, String> {
        if self.ca_file.is_empty() {
            return Ok(Vec::new());
        }
        let pem = std::fs::read(&self.ca_file)
            .map_err(|e| format!("cannot read `{}`: {e}", self.ca_file))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`{}` is not a PEM certificate bundle: {e}", self.ca_file))?;
        if certs.is_empty() {
            return Err(format!("`{}` holds no certificate", self.ca_file));
        }
        Ok(certs)
    }
}

impl WebhookSettings {
    /// Problems with the section named `section`, one line each.
    pub fn problems(&self, section: &str) -> Vec<String> {
        let mut p = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => p.push(format!(
                "{section}.url: `{}` must be an http:// or https:// URL with a host (got scheme `{}`)",
                self.url,
                u.scheme()
            )),
            Err(e) => p.push(format!("{section}.url: `{}` is not a URL: {e}", self.url)),
        }
        for (key, min) in [
            ("batch_max_records", self.batch_max_records),
            ("batch_max_ms", self.batch_max_ms),
            ("timeout_ms", self.timeout_ms),
            ("concurrency", self.concurrency),
            ("initial_backoff_ms", self.initial_backoff_ms),
        ] {
            if min < 1 {
                p.push(format!("{section}.{key}: must be at least 1"));
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            p.push(format!(
                "{section}.max_backoff_ms: must be at least initial_backoff_ms ({})",
                self.initial_backoff_ms
            ));
        }
        if let Err(e) = self.extra_roots() {
            p.push(format!("{section}.ca_file: {e}"));
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!(
                    "{section}.headers: `{name}` is not a valid header name"
                ));
            } else if reqwest::header::HeaderValue::from_str(value).is_err() {
                p.push(format!(
                    "{section}.headers.{name}: the value is not a valid header value"
                ));
            }
        }
        p
    }
}
