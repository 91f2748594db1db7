//! Reachability: whether an endpoint accepts connections, known for certain rather than
//! guessed. A refused connect (nothing listens: a pod stopping or restarting) and an unanswered
//! one (a black hole: a deleted pod's address) take the endpoint out of rotation *at once*,
//! whatever `outlier.max_ejected_percent` says: the cap exists for guesses from answers, and a
//! refused SYN is not a guess. An out-of-band probe -- one TCP connect every `PROBE_INTERVAL`,
//! never a client's request -- brings it back the moment it accepts again, with its passive
//! record forgotten (a restarted process does not inherit its predecessor's ejections).
//!
//! Live traffic never pays a full connect timeout either: a request's connect is abandoned
//! after `ConnectTime::patience` (a multiple of the connects seen on this backend, 50 ms to
//! `connect_timeout`; 100 ms before any was seen), the endpoint goes to the probe, and the
//! request to another endpoint, like a refused one. `connect_timeout` stays the bound of
//! every connect, the probe's included.
//!
//! Who writes: `Backend::report` marks an endpoint down (once: the first failure starts the
//! one probe task); the probe marks it up; `Endpoints::publish` forgets an endpoint that left
//! the set (its probe then ends). Readers (the balancer) load one atomic.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::endpoints::Endpoint;
use super::hold::Hold;
use crate::proxy::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;

/// How often a down endpoint is probed: a restarted pod is back in rotation within this.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Whether an endpoint accepts connections.
#[derive(Default)]
pub struct Reach {
    down: AtomicBool,
    /// Why it went down (`CAUSE_*`), for the answer to requests that found no endpoint.
    cause: AtomicU8,
}

const CAUSE_REFUSED: u8 = 1;
const CAUSE_TIMEOUT: u8 = 2;
const CAUSE_OTHER: u8 = 3;

impl Reach {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The failure that took the endpoint at `addr` out of rotation, while it is out.
    pub fn why_down(&self, addr: std::net::SocketAddr) -> Option<ProxyError> {
        if !self.is_down() {
            return None;
        }
        Some(match self.cause.load(Ordering::Relaxed) {
            CAUSE_REFUSED => ProxyError::ConnectRefused { endpoint: addr },
            CAUSE_TIMEOUT => ProxyError::ConnectTimeout { endpoint: addr },
            _ => ProxyError::ConnectFailed {
                endpoint: addr,
                reason: "connect failed".into(),
            },
        })
    }

    /// The endpoint left the set: stop counting it (its probe, if any, ends).
    pub fn forget(&self, metrics: &BackendMetrics) {
        if self.down.swap(false, Ordering::Relaxed) {
            metrics.unreachable.dec();
        }
    }
}

/// What a probe needs from its backend.
pub struct ProbeContext {
    pub connect_timeout: Duration,
    pub connect_time: Arc<ConnectTime>,
    pub hold: Arc<Hold>,
    pub metrics: BackendMetrics,
    pub backend: Arc<str>,
}

/// A connect to `endpoint` was refused or went unanswered: out of rotation now, and probed
/// until it accepts. Only the first caller starts the probe.
pub fn mark_down(endpoint: &Arc<Endpoint>, why: &ProxyError, context: ProbeContext) {
    let cause = match why {
        ProxyError::ConnectRefused { .. } => CAUSE_REFUSED,
        ProxyError::ConnectTimeout { .. } => CAUSE_TIMEOUT,
        _ => CAUSE_OTHER,
    };
    endpoint.reach.cause.store(cause, Ordering::Relaxed);
    if endpoint.reach.down.swap(true, Ordering::Relaxed) {
        return;
    }
    context.metrics.unreachable.inc();
    tracing::warn!(backend = %context.backend, endpoint = %endpoint.addr, cause = why.cause(), "endpoint does not accept connections: out of rotation until a probe connects");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime (not on a request path): nothing could probe; leave it in rotation.
        endpoint.reach.forget(&context.metrics);
        return;
    };
    runtime.spawn(probe(Arc::downgrade(endpoint), context));
}

/// Connect every `PROBE_INTERVAL` until one succeeds (the endpoint is back) or the endpoint
/// left the set.
async fn probe(endpoint: Weak<Endpoint>, context: ProbeContext) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(e) = endpoint.upgrade() else { return };
        if !e.reach.is_down() {
            return; // forgotten: it left the set
        }
        let addr = e.addr;
        let started = Instant::now();
        let connected = tokio::time::timeout(context.connect_timeout, TcpStream::connect(addr));
        let ok = matches!(connected.await, Ok(Ok(_)));
        context.metrics.probe(ok);
        if !ok {
            continue;
        }
        context.connect_time.observe(started.elapsed());
        e.health.recovered(&context.metrics);
        if e.reach.down.swap(false, Ordering::Relaxed) {
            context.metrics.unreachable.dec();
        }
        tracing::info!(backend = %context.backend, endpoint = %addr, "endpoint accepts connections again: back in rotation");
        context.hold.release();
        return;
    }
}

/// How long connects to a backend take, so that a request gives up on one that takes far
/// longer (a black hole) without waiting for `connect_timeout`.
pub struct ConnectTime {
    /// Exponentially weighted mean of successful connects, in microseconds (0: none yet).
    mean_us: AtomicU64,
}

/// Before any connect was seen.
const FIRST_PATIENCE: Duration = Duration::from_millis(100);
/// Never less: a busy node can take a few milliseconds to answer a SYN.
const MIN_PATIENCE: Duration = Duration::from_millis(50);
/// Patience in multiples of the mean connect.
const PATIENCE_FACTOR: u64 = 8;

impl ConnectTime {
    pub fn new() -> ConnectTime {
        ConnectTime {
            mean_us: AtomicU64::new(0),
        }
    }

    /// A connect succeeded after `took`.
    pub fn observe(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let mean = self.mean_us.load(Ordering::Relaxed);
        // Weight 1/8; races between threads lose a sample, which is harmless.
        let next = if mean == 0 {
            sample
        } else {
            mean - mean / 8 + sample / 8
        };
        self.mean_us.store(next.max(1), Ordering::Relaxed);
    }

    /// How long a request waits for a connect before trying another endpoint.
    pub fn patience(&self, connect_timeout: Duration) -> Duration {
        let mean = self.mean_us.load(Ordering::Relaxed);
        let patience = if mean == 0 {
            FIRST_PATIENCE
        } else {
            Duration::from_micros(mean.saturating_mul(PATIENCE_FACTOR)).max(MIN_PATIENCE)
        };
        patience.min(connect_timeout)
    }
}

impl Default for ConnectTime {
    fn default() -> Self {
        ConnectTime::new()
    }
}

impl std::fmt::Debug for ConnectTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectTime({}us)", self.mean_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_follows_the_connects_seen_within_bounds() {
        let t = ConnectTime::new();
        let timeout = Duration::from_secs(1);
        assert_eq!(t.patience(timeout), FIRST_PATIENCE);
        assert_eq!(
            t.patience(Duration::from_millis(30)),
            Duration::from_millis(30)
        );
        t.observe(Duration::from_micros(200));
        assert_eq!(t.patience(timeout), MIN_PATIENCE, "in-cluster connects");
        for _ in 0..100 {
            t.observe(Duration::from_millis(40));
        }
        let p = t.patience(timeout);
        assert!(
            p > Duration::from_millis(250) && p <= Duration::from_millis(330),
            "{p:?}"
        );
        for _ in 0..100 {
            t.observe(Duration::from_millis(400));
        }
        assert_eq!(t.patience(timeout), timeout, "never beyond connect_timeout");
    }
}
