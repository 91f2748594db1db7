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
//! Ejection is a *guess* from answers (a 503 may be one bad request), so it is capped
//! (`max_ejected_percent`) and ignored in panic mode. A refused or unanswered connect is a
//! certainty and is handled elsewhere (`reach.rs`: out of rotation until a probe connects).
//!
//! Every failure also adds a *penalty* that the balancer weighs (`balance.rs`), decaying by
//! half every `PENALTY_HALF_LIFE` (PeakEWMA's idea: a failure counts as a large cost, not as a
//! fast answer). Without it, P2C on requests in flight prefers an endpoint that fails at once,
//! because it never has anything in flight.
//!
//! Everything is an atomic on the endpoint; the request path reads two `AtomicU64`s (and the
//! clock only while an ejection or a penalty is pending) and writes nothing while the endpoint
//! is healthy.

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
    /// `penalty << 48 | now_ms()` of the last failure (0: none). One word, so that a reader
    /// never pairs one failure's penalty with another's time.
    penalty: AtomicU64,
}

/// A failure weighs as this many requests in flight, at first...
pub const PENALTY: u64 = 1024;
/// ...halving every this many milliseconds (so it is gone after about two seconds).
pub const PENALTY_HALF_LIFE_MS: u64 = 200;
const PENALTY_SHIFT: u32 = 48;
const PENALTY_TIME_MASK: u64 = (1 << PENALTY_SHIFT) - 1;

/// The penalty recorded in `word` (see `Health::penalty`), as of `now` (ms).
fn decayed(word: u64, now: u64) -> u64 {
    let halvings = now.saturating_sub(word & PENALTY_TIME_MASK) / PENALTY_HALF_LIFE_MS;
    if word == 0 || halvings >= 16 {
        return 0;
    }
    (word >> PENALTY_SHIFT) >> halvings
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

    /// The balancer's extra cost for recent failures: `PENALTY` just after one, halving every
    /// `PENALTY_HALF_LIFE_MS`; 0 (and no clock read) when there was none.
    pub fn penalty(&self) -> u64 {
        let word = self.penalty.load(Ordering::Relaxed);
        if word == 0 {
            return 0;
        }
        let penalty = decayed(word, now_ms());
        if penalty == 0 {
            // Long gone: clear it so that later picks read no clock.
            let _ = self
                .penalty
                .compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        penalty
    }

    /// Weigh a failure now (any kind: an answer, a reset, a timeout, a refused connect).
    pub fn penalize(&self) {
        let now = now_ms() & PENALTY_TIME_MASK;
        self.penalty
            .store((PENALTY << PENALTY_SHIFT) | now.max(1), Ordering::Relaxed);
    }

    /// The endpoint is a new process (it refused connects, and accepts again): forget its
    /// record, ejection included, so that it returns at once rather than after a doubled
    /// ejection that outlasts its restart.
    pub fn recovered(&self, metrics: &BackendMetrics) {
        self.forget(metrics);
        self.failures.store(0, Ordering::Relaxed);
        self.streak.store(0, Ordering::Relaxed);
        self.penalty.store(0, Ordering::Relaxed);
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

    #[test]
    fn penalty_decays_and_recovery_forgets_everything() {
        let (o, m) = (outlier(), BackendMetrics::default());
        let h = Health::default();
        assert_eq!(h.penalty(), 0);
        h.penalize();
        assert_eq!(h.penalty(), PENALTY);
        let word = (PENALTY << PENALTY_SHIFT) | 1_000;
        assert_eq!(decayed(word, 1_000), PENALTY);
        assert_eq!(decayed(word, 1_000 + PENALTY_HALF_LIFE_MS - 1), PENALTY);
        assert_eq!(
            decayed(word, 1_000 + 3 * PENALTY_HALF_LIFE_MS),
            PENALTY >> 3
        );
        assert_eq!(decayed(word, 1_000 + 16 * PENALTY_HALF_LIFE_MS), 0);
        assert_eq!(decayed(0, 5), 0);
        assert!(h.failure(&o, 3));
        assert!(h.eject(&o, &m).is_some());
        assert_eq!(m.ejected.get(), 1);
        h.recovered(&m);
        assert_eq!(m.ejected.get(), 0);
        assert!(!h.is_ejected(&o, &m));
        assert_eq!(h.penalty(), 0);
        // The next ejection is a first one again (not doubled).
        assert!(h.failure(&o, 3));
        assert_eq!(h.eject(&o, &m), Some(Duration::from_secs(1)));
    }
}
