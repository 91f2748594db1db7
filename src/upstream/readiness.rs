//! The readiness of one endpoint as active health checks see it (`checks.rs` writes it,
//! the balancer reads it), and slow start: an endpoint that just became ready gets a share of
//! the requests that ramps from 10% to 100% over `slow_start` (JIT warm-up, cold caches,
//! connection pools).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::HealthCheckConfig;
use crate::runtime::clock::now_ms;
use crate::runtime::random::random_below;

/// The active-check and slow-start state of one endpoint.
pub struct Readiness {
    ready: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
    /// `now_ms()` at which slow start ends; 0 when not ramping.
    ramp_until_ms: AtomicU64,
}

impl Readiness {
    /// Ready at once without checks; with them, after the first passes.
    pub fn new(checked: bool, slow_start: Duration) -> Readiness {
        let r = Readiness {
            ready: AtomicBool::new(!checked),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ramp_until_ms: AtomicU64::new(0),
        };
        if !checked {
            r.start_ramp(slow_start);
        }
        r
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn start_ramp(&self, slow_start: Duration) {
        if !slow_start.is_zero() {
            self.ramp_until_ms
                .store(now_ms() + slow_start.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// During slow start, whether to give this request to the endpoint: with a probability
    /// rising from 10% to 100% over the window. No clock read once the window is over.
    pub fn admits(&self, slow_start: Duration) -> bool {
        let until = self.ramp_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        if now >= until {
            self.ramp_until_ms.store(0, Ordering::Relaxed);
            return true;
        }
        let window = slow_start.as_millis().max(1) as u64;
        let elapsed = window.saturating_sub(until - now);
        let per_mille = (100 + 900 * elapsed / window) as usize;
        random_below(1000) < per_mille
    }

    /// Record a check; returns `Some(now_ready)` when the endpoint changed state.
    pub(super) fn record(
        &self,
        passed: bool,
        config: &HealthCheckConfig,
        slow_start: Duration,
    ) -> Option<bool> {
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.is_ready() && passes >= config.healthy_threshold {
                self.ready.store(true, Ordering::Relaxed);
                self.start_ramp(slow_start);
                return Some(true);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if self.is_ready() && failures >= config.unhealthy_threshold {
                self.ready.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_admits_a_tenth_at_first_then_everything() {
        let r = Readiness::new(false, Duration::from_secs(60));
        let admitted = (0..10_000)
            .filter(|_| r.admits(Duration::from_secs(60)))
            .count();
        assert!((500..2000).contains(&admitted), "{admitted}");
        let done = Readiness::new(false, Duration::ZERO);
        assert!((0..1000).all(|_| done.admits(Duration::ZERO)));
    }

    #[test]
    fn thresholds_decide_transitions() {
        let config = HealthCheckConfig {
            path: "/healthz".into(),
            grpc_service: String::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let r = Readiness::new(true, Duration::ZERO);
        assert!(!r.is_ready(), "checked endpoints start unready");
        assert_eq!(r.record(true, &config, Duration::ZERO), None);
        assert_eq!(r.record(true, &config, Duration::ZERO), Some(true));
        assert_eq!(r.record(false, &config, Duration::ZERO), None);
        assert_eq!(
            r.record(true, &config, Duration::ZERO),
            None,
            "a pass resets"
        );
        assert_eq!(r.record(false, &config, Duration::ZERO), None);
        assert_eq!(r.record(false, &config, Duration::ZERO), Some(false));
        assert!(!r.is_ready());
    }
}
