//! Fault injection at request time (`routes[].fault`, configured in `config/fault.rs`): which
//! of a route's requests are delayed, aborted or reset, from the route's own draws or from the
//! `x-hitless-fault` request header. The effects are applied by `Proxy::answer`; the direct
//! HTTP/1.1 path hands requests of a route with faults to it, so there is one place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::config::fault::{FaultConfig, Share};
use crate::error::ProxyError;

/// Forces a fault on one request, on routes with `fault:` (unless `header: false`):
/// `abort=503`, `delay=200ms`, `reset`, or several joined by commas (`delay=1s, abort=502`).
/// When present it decides alone: no random draw is made for that request.
pub static FAULT_HEADER: HeaderName = HeaderName::from_static("x-hitless-fault");

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub delay: Option<Duration>,
    pub end: Option<End>,
}

/// How a faulted request ends (after its delay, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Answered by hitless with this status, `Proxy-Status` naming the fault.
    Abort(StatusCode),
    /// No answer: the connection is closed (HTTP/2: the stream is reset).
    Reset,
}

/// Marks a response that must not be sent: the engine drops the connection or stream.
#[derive(Debug, Clone, Copy)]
pub struct Reset;

/// A route's faults and the state of its draws.
#[derive(Debug)]
pub struct Faults {
    pub config: FaultConfig,
    /// splitmix64's counter: one draw is one atomic add, and a seeded route repeats exactly.
    state: AtomicU64,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        let seed = config.seed.unwrap_or_else(|| {
            // Unseeded: different in each process, without a dependency.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        Faults {
            config,
            state: AtomicU64::new(seed),
        }
    }

    /// The fate of one request with these headers.
    pub fn decide(&self, headers: &HeaderMap) -> Result<Decision, ProxyError> {
        if self.config.header {
            if let Some(value) = headers.get(&FAULT_HEADER) {
                return forced(&self.config, value.as_bytes());
            }
        }
        let mut decision = Decision::default();
        if let Some((duration, share)) = self.config.delay {
            if self.hit(share) {
                decision.delay = Some(duration);
            }
        }
        // Reset before abort: both drawn, the connection drop is the rarer and harsher one.
        if let Some(share) = self.config.reset {
            if self.hit(share) {
                decision.end = Some(End::Reset);
            }
        }
        if let (None, Some((status, share))) = (decision.end, self.config.abort) {
            if self.hit(share) {
                decision.end = Some(End::Abort(status));
            }
        }
        Ok(decision)
    }

    fn hit(&self, share: Share) -> bool {
        match share.0 {
            0 => false,
            Share::WHOLE.. => true,
            n => self.draw() < n,
        }
    }

    /// A uniform number below one million.
    fn draw(&self) -> u32 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 32 bits scaled to 0..1_000_000 (a multiply and shift, no modulo bias worth
        // the name at this scale).
        (((z >> 32) * u64::from(Share::WHOLE)) >> 32) as u32
    }
}

const BAD_HEADER: ProxyError = ProxyError::BadRequest {
    reason: "invalid x-hitless-fault header (expected abort=STATUS, delay=DURATION, reset)",
};

/// The decision `x-hitless-fault` asks for. `abort` and `delay` without a value take the
/// route's configured status or duration.
fn forced(config: &FaultConfig, value: &[u8]) -> Result<Decision, ProxyError> {
    let value = std::str::from_utf8(value).map_err(|_| BAD_HEADER)?;
    // An empty value would skip the draws: a way out of the rehearsal, not a fault.
    if value.split(',').all(|i| i.trim().is_empty()) {
        return Err(BAD_HEADER);
    }
    let mut decision = Decision::default();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, arg) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (item, None),
        };
        match (name, arg) {
            ("abort", Some(status)) => {
                let status = status
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or(BAD_HEADER)?;
                decision.end = Some(End::Abort(status));
            }
            ("abort", None) => {
                let status = config
                    .abort
                    .map(|(s, _)| s)
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                decision.end = Some(End::Abort(status));
            }
            ("delay", Some(d)) => {
                let d = humantime::parse_duration(d)
                    .ok()
                    .filter(|d| *d <= Duration::from_secs(300))
                    .ok_or(BAD_HEADER)?;
                decision.delay = Some(d);
            }
            ("delay", None) => {
                decision.delay = Some(config.delay.ok_or(BAD_HEADER)?.0);
            }
            ("reset", None) => decision.end = Some(End::Reset),
            _ => return Err(BAD_HEADER),
        }
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(abort: u32, delay: u32, reset: u32, seed: u64) -> FaultConfig {
        FaultConfig {
            abort: Some((StatusCode::BAD_GATEWAY, Share(abort))),
            delay: Some((Duration::from_millis(200), Share(delay))),
            reset: Some(Share(reset)),
            header: true,
            seed: Some(seed),
        }
    }

    #[test]
    fn shares_hold_over_a_seeded_run_and_repeat_exactly() {
        const N: u32 = 100_000;
        let run = || {
            let faults = Faults::new(config(50_000, 100_000, 10_000, 7));
            let (mut aborts, mut delays, mut resets) = (0u32, 0u32, 0u32);
            for _ in 0..N {
                let d = faults.decide(&HeaderMap::new()).unwrap_or_default();
                delays += u32::from(d.delay.is_some());
                match d.end {
                    Some(End::Abort(_)) => aborts += 1,
                    Some(End::Reset) => resets += 1,
                    None => {}
                }
            }
            (aborts, delays, resets)
        };
        let (aborts, delays, resets) = run();
        // Binomial: 5 standard deviations either side (p=0.05: sd 69; 0.1: 95; 0.01: 31).
        // Aborts are drawn only when no reset was: 5% of 99%.
        assert!((4_950 - 345..=4_950 + 345).contains(&aborts), "{aborts}");
        assert!((10_000 - 475..=10_000 + 475).contains(&delays), "{delays}");
        assert!((1_000 - 160..=1_000 + 160).contains(&resets), "{resets}");
        assert_eq!(
            run(),
            (aborts, delays, resets),
            "a seeded route repeats exactly"
        );
    }

    #[test]
    fn zero_and_whole_shares_are_exact() {
        let faults = Faults::new(config(Share::WHOLE, 0, 0, 1));
        for _ in 0..1000 {
            let d = faults.decide(&HeaderMap::new()).unwrap_or_default();
            assert_eq!(d.end, Some(End::Abort(StatusCode::BAD_GATEWAY)));
            assert_eq!(d.delay, None);
        }
    }

    #[test]
    fn the_header_decides_alone() {
        let faults = Faults::new(config(0, 0, 0, 1));
        let decide = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(&FAULT_HEADER, http::HeaderValue::from_static(v));
            faults.decide(&h)
        };
        assert_eq!(
            decide("abort=503").ok(),
            Some(Decision {
                delay: None,
                end: Some(End::Abort(StatusCode::SERVICE_UNAVAILABLE))
            })
        );
        assert_eq!(
            decide("delay=50ms, reset").ok(),
            Some(Decision {
                delay: Some(Duration::from_millis(50)),
                end: Some(End::Reset)
            })
        );
        assert_eq!(
            decide("abort").ok().and_then(|d| d.end),
            Some(End::Abort(StatusCode::BAD_GATEWAY))
        );
        for bad in [
            "abort=99",
            "abort=600",
            "delay=forever",
            "explode",
            "reset=1",
        ] {
            assert!(decide(bad).is_err(), "{bad}");
        }
        let off = Faults::new(FaultConfig {
            header: false,
            ..config(0, 0, 0, 1)
        });
        let mut h = HeaderMap::new();
        h.insert(&FAULT_HEADER, http::HeaderValue::from_static("abort=503"));
        assert_eq!(off.decide(&h).ok(), Some(Decision::default()));
    }
}
