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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;

use super::balance::random_below;
use super::endpoints::Endpoint;
use super::sniff::UpstreamIo;
use super::Backend;
use crate::config::{HealthCheckConfig, Protocol};
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
            let (e, config, protocol) = (Arc::clone(e), config.clone(), b.config.protocol);
            checks.spawn(async move {
                let passed = check(&e, protocol, &config).await;
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
    let changed = e
        .readiness
        .record(result.is_ok(), config, b.config.slow_start);
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

/// One check over a new connection made the way requests make them (TCP, or TLS for
/// `https`/`grpcs`): an HTTP GET of `path` (2xx/3xx passes; over HTTP/2 for `h2c`), or for
/// `grpc`/`grpcs` backends the gRPC health protocol (`grpc.health.v1.Health/Check` of
/// `grpc_service`: SERVING passes).
async fn check(e: &Endpoint, protocol: Protocol, config: &HealthCheckConfig) -> Result<(), String> {
    let addr = e.addr;
    let exchange = async {
        let io = e
            .pool
            .local()
            .open_for_check(addr)
            .await
            .map_err(|e| e.to_string())?;
        // An `https` backend may have chosen HTTP/2 by ALPN.
        let h2 = protocol.is_h2()
            || matches!(&io, UpstreamIo::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2"));
        let io = TokioIo::new(io);
        let grpc = matches!(protocol, Protocol::Grpc | Protocol::Grpcs);
        let scheme = if protocol.is_tls() { "https" } else { "http" };
        let request = if grpc {
            let service = config.grpc_service.as_bytes();
            let mut body = vec![0u8; 5];
            if !service.is_empty() {
                body.push(0x0a);
                body.push(service.len() as u8);
                body.extend_from_slice(service);
            }
            let len = (body.len() - 5) as u32;
            body[1..5].copy_from_slice(&len.to_be_bytes());
            Request::post(format!("{scheme}://{addr}/grpc.health.v1.Health/Check"))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .body(Full::new(Bytes::from(body)))
        } else {
            let uri = if h2 {
                format!("{scheme}://{addr}{}", config.path)
            } else {
                config.path.clone()
            };
            Request::get(uri)
                .header(http::header::HOST, addr.to_string())
                .body(Full::new(Bytes::new()))
        }
        .map_err(|e| e.to_string())?;
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        if !grpc {
            return if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("status {}", status.as_u16()))
            };
        }
        let head_status = response.headers().get("grpc-status").cloned();
        let collected = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| e.to_string())?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(head_status);
        if grpc_status.as_ref().is_none_or(|v| v != "0") {
            return Err(format!("grpc-status {grpc_status:?}"));
        }
        // HealthCheckResponse { status: SERVING (1) } is `08 01` after the 5-byte prefix.
        let message = collected.to_bytes();
        if message.get(5..) == Some(&[0x08, 0x01][..]) {
            Ok(())
        } else {
            Err("not SERVING".into())
        }
    };
    tokio::time::timeout(config.timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(config.timeout)
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
