//! Reachability: whether an endpoint accepts connections, known for certain rather than
//! guessed. A refused connect (nothing listens: a pod stopping or restarting) and an unanswered
//! one (a black hole: a deleted pod's address) take the endpoint out of rotation *at once*,
//! whatever `outlier.max_ejected_percent` says: the cap exists for guesses from answers, and a
//! refused SYN is not a guess. The out-of-band probe that brings it back is `probe.rs`'s.
//!
//! Live traffic never pays a full connect timeout either: a request's connect is abandoned
//! after `ConnectTime::patience` (a multiple of the connects seen on this backend, 50 ms to
//! `connect_timeout`; 100 ms before any was seen) when another endpoint could take the
//! request; the endpoint then goes to the probe, and the request elsewhere, as for a refused
//! one. `connect_timeout` stays the bound of every connect, the probe's included.
//!
//! Readers (the balancer) load one atomic.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;

/// Whether an endpoint accepts connections.
#[derive(Default)]
pub struct Reach {
    down: AtomicBool,
    /// Why it went down (a `Cause`), for the answer to requests that found no endpoint.
    cause: AtomicU8,
}

/// Why an endpoint is out of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cause {
    Refused = 1,
    Timeout = 2,
    Other = 3,
}

impl Cause {
    pub fn of(error: &ProxyError) -> Cause {
        match error {
            ProxyError::ConnectRefused { .. } => Cause::Refused,
            ProxyError::ConnectTimeout { .. } => Cause::Timeout,
            _ => Cause::Other,
        }
    }
}

impl Reach {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Out of rotation for `cause`; `true` when it was in rotation until now (the caller
    /// starts the probe).
    pub fn set_down(&self, cause: Cause) -> bool {
        self.cause.store(cause as u8, Ordering::Relaxed);
        !self.down.swap(true, Ordering::Relaxed)
    }

    /// Back in rotation; `true` when it was out until now.
    pub fn set_up(&self) -> bool {
        self.down.swap(false, Ordering::Relaxed)
    }

    /// The failure that took the endpoint at `addr` out of rotation, while it is out.
    pub fn why_down(&self, addr: std::net::SocketAddr) -> Option<ProxyError> {
        if !self.is_down() {
            return None;
        }
        let cause = self.cause.load(Ordering::Relaxed);
        Some(if cause == Cause::Refused as u8 {
            ProxyError::ConnectRefused { endpoint: addr }
        } else if cause == Cause::Timeout as u8 {
            ProxyError::ConnectTimeout { endpoint: addr }
        } else {
            ProxyError::ConnectFailed {
                endpoint: addr,
                reason: "connect failed".into(),
            }
        })
    }

    /// The endpoint left the set: stop counting it (its probe, if any, ends).
    pub fn forget(&self, metrics: &BackendMetrics) {
        if self.down.swap(false, Ordering::Relaxed) {
            metrics.unreachable.dec();
        }
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
