//! Active health checks (optional per backend): an HTTP GET of a path on every endpoint, every
//! `interval`, each on a new connection (as a kubelet probe does, so a check never borrows or
//! poisons a pooled connection; `probe::check` makes one). With checks on, an endpoint takes
//! traffic only once it has passed `healthy_threshold` checks -- a new pod that listens before
//! it is ready (the guide's "502 on first request, app slow to start") gets nothing until it
//! answers its health path -- and stops after `unhealthy_threshold` failures in a row. Passing
//! is a 2xx or 3xx, as for Kubernetes probes. The one task per backend ends when a reload
//! drops the backend.

use std::sync::{Arc, Weak};

use super::endpoints::Endpoint;
use super::probe;
use super::Backend;
use crate::config::HealthCheckConfig;

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
                let passed = probe::check(&e, protocol, &config).await;
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
