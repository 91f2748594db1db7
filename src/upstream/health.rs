//! Passive health of one endpoint (outlier ejection, as Envoy's outlier detection): consecutive
//! failures eject it for a while, so later requests do not pay for a dead pod again.
//!
//! Failures are what says the endpoint itself is unwell: connect failures, resets before a
//! response, 502/503/504 answers and per-try timeouts. An unanswered connect counts as the
//! whole threshold at once: a deleted pod's address black-holes SYNs, and every request sent
//! there would pay the full connect timeout. Ejection lasts `base_ejection` doubled for each
//! ejection in a row (capped at `max_ejection`); when it expires the endpoint is on probation:
//! one more failure ejects it again, one success clears its record.
//!
//! Everything is an atomic on the endpoint; the request path reads one `AtomicU64` (and the
//! clock only while an ejection is pending) and writes nothing while the endpoint is healthy.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::OutlierConfig;
use crate::runtime::clock::now_ms;
use crate::runtime::metrics::BackendMetrics;

#[derive(Default)]
pub struct Health {
    failures: AtomicU32,
    /// `now_ms()` until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Ejections since the last success: the exponent of the next ejection's length.
    streak: AtomicU32,
}

impl Health {
    /// Whether the endpoint is ejected now. Expires a finished ejection (probation).
    pub fn is_ejected(&self, outlier: &OutlierConfig, metrics: &BackendMetrics) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now_ms() < until {
            return true;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.failures.store(
                outlier.consecutive_failures.saturating_sub(1),
                Ordering::Relaxed,
            );
            metrics.ejected.dec();
        }
        false
    }

    /// Whether an ejection is recorded (expired or not); for bookkeeping, not for picking.
    pub fn has_ejection(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    pub fn success(&self) {
        // Loads first: a healthy endpoint's cache line is not written by every request.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.streak.load(Ordering::Relaxed) != 0 && !self.has_ejection() {
            self.streak.store(0, Ordering::Relaxed);
        }
    }

    /// Count a failure (`weight` 1, or the whole threshold for an unanswered connect).
    /// Returns `true` when the threshold is reached and the caller should try to eject.
    pub fn failure(&self, outlier: &OutlierConfig, weight: u32) -> bool {
        if outlier.consecutive_failures == 0 || self.has_ejection() {
            return false;
        }
        let before = self.failures.fetch_add(weight, Ordering::Relaxed);
        before.saturating_add(weight) >= outlier.consecutive_failures
    }

    /// Eject now; returns how long, or `None` when another thread ejected it first.
    pub fn eject(
        &self,
        outlier: &OutlierConfig,
        metrics: &BackendMetrics,
    ) -> Option<std::time::Duration> {
        let streak = self.streak.fetch_add(1, Ordering::Relaxed).min(16);
        let length = outlier
            .base_ejection
            .saturating_mul(1 << streak)
            .min(outlier.max_ejection);
        let until = now_ms() + length.as_millis() as u64;
        if self
            .ejected_until
            .compare_exchange(0, until.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.streak.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        metrics.ejected.inc();
        metrics.ejections.inc();
        Some(length)
    }

    /// The endpoint left the set: take it out of the ejected gauge.
    pub fn forget(&self, metrics: &BackendMetrics) {
        if self.ejected_until.swap(0, Ordering::Relaxed) != 0 {
            metrics.ejected.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(3),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn threshold_success_and_backoff() {
        let (o, m) = (outlier(), BackendMetrics::default());
        let h = Health::default();
        // Expiry below is simulated by an ejection that ended at 1 ms.
        while now_ms() < 2 {
            std::thread::yield_now();
        }
        assert!(!h.failure(&o, 1));
        h.success();
        assert!(!h.failure(&o, 1));
        assert!(!h.failure(&o, 1));
        assert!(h.failure(&o, 1), "third consecutive failure");
        assert_eq!(h.eject(&o, &m), Some(Duration::from_secs(1)));
        assert!(h.is_ejected(&o, &m));
        assert!(!h.failure(&o, 1), "no double ejection");
        assert_eq!(m.ejected.get(), 1);
        // A second ejection in a row lasts twice as long, capped.
        h.ejected_until.store(1, Ordering::Relaxed); // expired
        assert!(!h.is_ejected(&o, &m));
        assert_eq!(m.ejected.get(), 0);
        assert!(h.failure(&o, 1), "probation: one failure is enough");
        assert_eq!(h.eject(&o, &m), Some(Duration::from_secs(2)));
        h.ejected_until.store(1, Ordering::Relaxed);
        assert!(!h.is_ejected(&o, &m));
        assert!(h.failure(&o, 1));
        assert_eq!(h.eject(&o, &m), Some(Duration::from_secs(3)), "capped");
        h.forget(&m);
        assert_eq!(m.ejected.get(), 0);
        // A success after probation resets the streak.
        h.success();
        assert!(!h.failure(&o, 1));
        assert!(
            h.failure(&o, 3),
            "an unanswered connect weighs the whole threshold"
        );
        assert_eq!(h.eject(&o, &m), Some(Duration::from_secs(1)));
    }
}
