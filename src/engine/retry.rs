//! The retry schedule: jittered exponential backoff bounded by the record's deadline.
//!
//! Pure functions of (attempt result, attempts so far, now, deadline, a random sample), so
//! the schedule is unit-tested without timers.

use std::time::{Duration, Instant};

use crate::settings::{self, RetryOn};

/// How one lookup attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// A row was found: never retried.
    Found,
    /// No row.
    Miss,
    /// A backend error; `retryable` comes from the backend's classification.
    Error { retryable: bool },
    /// The attempt ran past `lookup.attempt_timeout_ms`.
    AttemptTimeout,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start another attempt after this backoff.
    Retry(Duration),
    /// The attempt's result is final.
    Finish,
}

/// The `[retry]` section in ready-to-use form.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    on_error: bool,
    on_timeout: bool,
    on_miss: bool,
}

impl RetryPolicy {
    /// Build from validated settings.
    pub fn from_settings(r: &settings::Retry) -> Self {
        RetryPolicy {
            max_attempts: r.max_attempts.clamp(1, u64::from(u32::MAX)) as u32,
            initial: Duration::from_millis(r.initial_backoff_ms),
            max: Duration::from_millis(r.max_backoff_ms),
            multiplier: r.multiplier,
            jitter: r.jitter,
            on_error: r.on.contains(&RetryOn::Error),
            on_timeout: r.on.contains(&RetryOn::Timeout),
            on_miss: r.on.contains(&RetryOn::Miss),
        }
    }

    /// Attempts allowed per record.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff after attempt number `attempts` (1-based) failed.
    ///
    /// `initial * multiplier^(attempts-1)`, capped at `max`, then scaled by
    /// `1 + jitter * unit` where `unit` is a uniform sample in [-1, 1]; the jittered value
    /// is capped at `max` again, so `max_backoff_ms` is a hard ceiling.
    pub fn backoff(&self, attempts: u32, unit: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(1024) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter * unit.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max.as_secs_f64()))
    }

    /// Decide what follows an attempt. `attempts` counts the attempt just finished.
    /// A retry whose backoff would end at or after the deadline is not started: the
    /// result stands (the deadline would turn it into a timeout anyway).
    pub fn next(
        &self,
        kind: AttemptKind,
        attempts: u32,
        now: Instant,
        deadline: Instant,
        unit: f64,
    ) -> Next {
        let wanted = match kind {
            AttemptKind::Found => false,
            AttemptKind::Miss => self.on_miss,
            AttemptKind::Error { retryable } => retryable && self.on_error,
            AttemptKind::AttemptTimeout => self.on_timeout,
        };
        if !wanted || attempts >= self.max_attempts {
            return Next::Finish;
        }
        let wait = self.backoff(attempts, unit);
        if now + wait >= deadline {
            return Next::Finish;
        }
        Next::Retry(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(on: Vec<RetryOn>, jitter: f64) -> RetryPolicy {
        RetryPolicy::from_settings(&settings::Retry {
            max_attempts: 4,
            initial_backoff_ms: 20,
            max_backoff_ms: 100,
            multiplier: 2.0,
            jitter,
            on,
        })
    }

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let p = policy(vec![RetryOn::Error], 0.0);
        let ms: Vec<u128> = (1..=5).map(|a| p.backoff(a, 0.0).as_millis()).collect();
        assert_eq!(ms, vec![20, 40, 80, 100, 100]);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(attempt in 1u32..30, unit in -1.0f64..=1.0, jitter in 0.0f64..0.99) {
            let p = policy(vec![RetryOn::Error], jitter);
            let plain = p.backoff(attempt, 0.0).as_secs_f64();
            let got = p.backoff(attempt, unit).as_secs_f64();
            prop_assert!(got >= plain * (1.0 - jitter) - 1e-9);
            prop_assert!(got <= (plain * (1.0 + jitter)).min(0.1) + 1e-9);
        }
    }

    #[test]
    fn only_configured_kinds_are_retried() {
        let now = Instant::now();
        let far = now + Duration::from_secs(10);
        let p = policy(vec![RetryOn::Error], 0.0);
        assert_eq!(p.next(AttemptKind::Found, 1, now, far, 0.0), Next::Finish);
        assert_eq!(p.next(AttemptKind::Miss, 1, now, far, 0.0), Next::Finish);
        assert_eq!(
            p.next(AttemptKind::AttemptTimeout, 1, now, far, 0.0),
            Next::Finish
        );
        assert_eq!(
            p.next(AttemptKind::Error { retryable: false }, 1, now, far, 0.0),
            Next::Finish
        );
        assert_eq!(
            p.next(AttemptKind::Error { retryable: true }, 1, now, far, 0.0),
            Next::Retry(Duration::from_millis(20))
        );
        let p = policy(vec![RetryOn::Miss, RetryOn::Timeout], 0.0);
        assert!(matches!(
            p.next(AttemptKind::Miss, 2, now, far, 0.0),
            Next::Retry(_)
        ));
        assert!(matches!(
            p.next(AttemptKind::AttemptTimeout, 3, now, far, 0.0),
            Next::Retry(_)
        ));
        assert_eq!(
            p.next(AttemptKind::Error { retryable: true }, 1, now, far, 0.0),
            Next::Finish
        );
    }

    #[test]
    fn attempts_and_deadline_bound_retries() {
        let now = Instant::now();
        let p = policy(vec![RetryOn::Error], 0.0);
        let err = AttemptKind::Error { retryable: true };
        assert_eq!(
            p.next(err, 4, now, now + Duration::from_secs(10), 0.0),
            Next::Finish
        );
        assert_eq!(
            p.next(err, 1, now, now + Duration::from_millis(20), 0.0),
            Next::Finish
        );
        assert!(matches!(
            p.next(err, 1, now, now + Duration::from_millis(21), 0.0),
            Next::Retry(_)
        ));
    }
}
