//! The upstream's keep-alive timeout, learned per endpoint, so that pooled connections are
//! closed by hitless before the application closes them (the keep-alive race of the guide).
//!
//! Two sources, and the pool idle timeout only ever goes *down* from the configured one:
//! - `Keep-Alive: timeout=N` on a response (Apache, some Node setups announce it): hitless
//!   keeps connections idle at most 75% of N.
//! - Closes it observes: a pooled connection that the upstream closed while idle, after
//!   `age` of idleness. One close proves little (an app that stops closes every idle
//!   connection at once, whatever its age), so a value is learned only after three closes at
//!   consistent ages (within 1/8 of each other) of at least `MIN_OBSERVED`; then connections
//!   are kept idle at most 75% of the shortest of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::runtime::metrics::BackendMetrics;

/// Shorter idle closes are not taken as a keep-alive timeout (a stopping app, or load
/// so light that it says nothing).
const MIN_OBSERVED: Duration = Duration::from_millis(100);
/// Learned timeouts never go below this: below it pooling stops paying for itself.
const FLOOR: Duration = Duration::from_millis(50);
const CONSISTENT_CLOSES: u32 = 3;

#[derive(Default)]
pub struct KeepAlive {
    /// Learned pool idle timeout in ms; 0 when nothing was learned.
    learned_ms: AtomicU64,
    candidate_ms: AtomicU64,
    hits: AtomicU32,
}

impl KeepAlive {
    pub fn learned(&self) -> Option<Duration> {
        match self.learned_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// A response carried `Keep-Alive: ...`; learn its `timeout=N` (seconds) if present.
    pub fn announced(&self, header: &[u8], endpoint: SocketAddr, metrics: &BackendMetrics) {
        let Some(secs) = parse_timeout(header) else {
            return;
        };
        self.lower_to(
            // Capped (a day): a hostile `timeout=18446744073709551615` must not overflow.
            Duration::from_secs(secs.min(86_400)) * 3 / 4,
            endpoint,
            metrics,
            "Keep-Alive header",
        );
    }

    /// The upstream closed a pooled connection that had been idle for `age`.
    pub fn observed_close(&self, age: Duration, endpoint: SocketAddr, metrics: &BackendMetrics) {
        if age < MIN_OBSERVED {
            return;
        }
        let age_ms = age.as_millis() as u64;
        let candidate = self.candidate_ms.load(Ordering::Relaxed);
        let close_enough = candidate != 0 && age_ms.abs_diff(candidate) <= candidate / 8;
        if !close_enough {
            self.candidate_ms.store(age_ms, Ordering::Relaxed);
            self.hits.store(1, Ordering::Relaxed);
            return;
        }
        let shortest = candidate.min(age_ms);
        self.candidate_ms.store(shortest, Ordering::Relaxed);
        if self.hits.fetch_add(1, Ordering::Relaxed) + 1 >= CONSISTENT_CLOSES {
            self.lower_to(
                Duration::from_millis(shortest.min(86_400_000)) * 3 / 4,
                endpoint,
                metrics,
                "idle closes observed",
            );
        }
    }

    fn lower_to(
        &self,
        value: Duration,
        endpoint: SocketAddr,
        metrics: &BackendMetrics,
        source: &str,
    ) {
        let ms = value.max(FLOOR).as_millis() as u64;
        let current = self.learned_ms.load(Ordering::Relaxed);
        if current != 0 && current <= ms {
            return;
        }
        self.learned_ms.store(ms, Ordering::Relaxed);
        metrics.keepalive_learned(endpoint, Some(Duration::from_millis(ms)));
        tracing::info!(
            %endpoint,
            pool_idle_timeout_ms = ms,
            source,
            "upstream keep-alive learned: pooled connections now close sooner"
        );
    }
}

/// `timeout=N` from a `Keep-Alive` header value such as `timeout=5, max=100`.
fn parse_timeout(header: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(header).ok()?;
    text.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("timeout") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn absurd_timeouts_do_not_overflow() {
        let k = KeepAlive::default();
        let m = BackendMetrics::default();
        k.announced(b"timeout=18446744073709551615", ep(), &m);
        k.announced(b"timeout=99999999999999999999999", ep(), &m);
        assert!(k.learned().is_none_or(|d| d <= Duration::from_secs(86_400)));
    }

    #[test]
    fn header_lowers_to_three_quarters() {
        let k = KeepAlive::default();
        let m = BackendMetrics::default();
        k.announced(b"timeout=5, max=1000", ep(), &m);
        assert_eq!(k.learned(), Some(Duration::from_millis(3750)));
        k.announced(b"max=5", ep(), &m);
        k.announced(b"timeout=10", ep(), &m);
        assert_eq!(
            k.learned(),
            Some(Duration::from_millis(3750)),
            "never raised"
        );
        assert_eq!(parse_timeout(b" Timeout = 2 "), Some(2));
    }

    #[test]
    fn closes_must_be_consistent() {
        let k = KeepAlive::default();
        let m = BackendMetrics::default();
        let ms = Duration::from_millis;
        // A stopping app: ages all over the place, or too short to mean anything.
        for age in [ms(30), ms(900), ms(250), ms(4000), ms(60)] {
            k.observed_close(age, ep(), &m);
        }
        assert_eq!(k.learned(), None);
        // An app closing at 200 ms of idleness.
        for age in [ms(205), ms(201), ms(210)] {
            k.observed_close(age, ep(), &m);
        }
        assert_eq!(k.learned(), Some(ms(150)));
    }
}
