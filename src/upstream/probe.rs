//! Active health checks (optional per backend): an HTTP GET of a path on every endpoint, every
//! `interval`, each on a new connection (as a kubelet probe does, so a check never borrows or
//! poisons a pooled connection). With checks on, an endpoint takes traffic only once it has
//! passed `healthy_threshold` checks -- a new pod that listens before it is ready (the guide's
//! "502 on first request, app slow to start") gets nothing until it answers its health path --
//! and stops after `unhealthy_threshold` failures in a row. Passing is a 2xx or 3xx, as for
//! Kubernetes probes.
//!
//! Optional slow start: an endpoint that just became ready gets a share of the requests that
//! ramps from 10% to 100% over `slow_start` (JIT warm-up, cold caches, connection pools).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::balance::random_below;
use super::endpoints::Endpoint;
use super::Backend;
use crate::config::HealthCheckConfig;
use crate::runtime::clock::now_ms;

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
    fn record(
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

/// Check every endpoint of `backend` every interval, until the backend is dropped or
/// `stop` fires.
pub async fn run(
    backend: Weak<Backend>,
    config: HealthCheckConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(b) = backend.upgrade() else { return };
        let set = b.endpoints.snapshot();
        let mut checks = tokio::task::JoinSet::new();
        for e in &set.endpoints {
            let (e, path, timeout) = (Arc::clone(e), config.path.clone(), config.timeout);
            checks.spawn(async move {
                let passed = check(e.addr, &path, timeout).await;
                (e, passed)
            });
        }
        drop(b);
        while let Some(done) = checks.join_next().await {
            let Ok((endpoint, result)) = done else {
                continue;
            };
            let Some(b) = backend.upgrade() else { return };
            record(&b, &endpoint, result, &config);
        }
    }
}

fn record(b: &Backend, e: &Endpoint, result: Result<(), String>, config: &HealthCheckConfig) {
    let changed = e.readiness.record(result.is_ok(), config, b.slow_start);
    match (changed, result) {
        (Some(true), _) => {
            tracing::info!(backend = %b.name, endpoint = %e.addr, "endpoint passed its health check: taking traffic");
            b.metrics.unready.dec();
            b.hold.release();
        }
        (Some(false), Err(why)) => {
            tracing::warn!(backend = %b.name, endpoint = %e.addr, reason = %why, "endpoint failed its health checks: no new requests");
            b.metrics.unready.inc();
        }
        _ => {}
    }
}

/// One check: `Ok` for a 2xx/3xx answer within `timeout`, else why not.
async fn check(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "hitless-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("status {}", status.as_u16()))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
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
