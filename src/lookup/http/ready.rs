//! Whether an `http` step's service is reachable (feeds `/readyz`): down after a connection
//! error, up again after any answer — or, while down, after a TCP connect probe (once a
//! second) succeeds, so readiness recovers without lookups to try.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often, and for how long at most, a down service is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The reachability flag of one step's service.
pub struct Readiness {
    step: String,
    up: AtomicBool,
}

impl Readiness {
    /// Up until a connection fails.
    pub fn new(step: &str) -> Readiness {
        Readiness {
            step: step.to_string(),
            up: AtomicBool::new(true),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The service answered (or accepted a connection).
    pub fn up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(step = %self.step, "http lookup service reachable again");
        }
    }

    /// A connection to the service failed.
    pub fn down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(step = %self.step, error = %why, "http lookup service unreachable");
        }
    }
}

/// Probe `host:port` once a second while `readiness` is down (for as long as the runtime
/// the task is spawned on runs).
pub async fn probe(readiness: Arc<Readiness>, host: String, port: u16) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if readiness.is_up() {
            continue;
        }
        let (h, r) = (host.clone(), readiness.clone());
        // Name resolution and connect are blocking calls: off the runtime's workers.
        let connected = tokio::task::spawn_blocking(move || connects(&h, port))
            .await
            .unwrap_or(false);
        if connected {
            r.up();
        }
    }
}

fn connects(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, PROBE_EVERY).is_ok())
}
