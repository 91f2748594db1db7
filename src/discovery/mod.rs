//! Endpoint discovery: a task per discovered backend that turns DNS answers or EndpointSlice
//! events into endpoint sets and publishes them through `Endpoints::publish`, the same path a
//! config reload takes. So a change never fails a request: a new set is one atomic swap,
//! endpoints that stay keep their pools and health, endpoints that leave get no new requests
//! while their in-flight ones finish.
//!
//! The task holds the backend weakly and ends when a reload drops it (or at shutdown).
//! A failed resolution or a broken watch keeps the last good set (logged and counted).

pub mod dns;
pub mod kubernetes;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::discovery::Discovery;
use crate::upstream::Backend;

/// Start the discovery task of `backend`, if its endpoints are discovered.
pub fn start(backend: &Arc<Backend>, shutdown: CancellationToken) {
    let Some(discovery) = backend.config.discovery.clone() else {
        return;
    };
    let publisher = Publisher {
        backend: Arc::downgrade(backend),
        name: backend.name.clone(),
        last: None,
    };
    tracing::info!(backend = %backend.name, source = %discovery.describe(), "endpoint discovery started");
    // Ends at shutdown, or when the backend is dropped by a reload.
    let dropped = backend.tasks.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = dropped.cancelled() => stop.cancel(),
            _ = stop.cancelled() => {}
        }
    });
    match discovery {
        Discovery::Dns(config) => {
            tokio::spawn(dns::run(publisher, config, shutdown));
        }
        Discovery::Kubernetes(config) => {
            tokio::spawn(kubernetes::run(publisher, config, shutdown));
        }
    }
}

/// Publishes endpoint sets into one backend; the only writer of that backend's set.
pub struct Publisher {
    backend: Weak<Backend>,
    name: String,
    last: Option<BTreeSet<SocketAddr>>,
}

/// The backend is gone (a reload replaced it): the discovery task should end.
#[derive(Debug)]
pub struct Gone;

impl Publisher {
    /// Make `addrs` the backend's endpoint set (a no-op when unchanged) and mark it synced.
    pub fn publish(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<(), Gone> {
        let backend = self.backend.upgrade().ok_or(Gone)?;
        let set: BTreeSet<SocketAddr> = addrs.into_iter().collect();
        if self.last.as_ref() != Some(&set) {
            let (added, removed) = match &self.last {
                Some(last) => (set.difference(last).count(), last.difference(&set).count()),
                None => (set.len(), 0),
            };
            let list: Vec<SocketAddr> = set.iter().copied().collect();
            backend.endpoints.publish(&list);
            backend.metrics.discovery_updates.inc();
            tracing::info!(
                backend = %self.name,
                endpoints = list.len(),
                added,
                removed,
                "discovered endpoints changed"
            );
            self.last = Some(set);
        }
        if !backend.synced.swap(true, Ordering::Relaxed) {
            tracing::info!(backend = %self.name, "first endpoint discovery complete");
        }
        Ok(())
    }

    /// Count and log a failure; the last published set stays.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) -> Result<(), Gone> {
        let backend = self.backend.upgrade().ok_or(Gone)?;
        backend.metrics.discovery_errors.inc();
        tracing::warn!(
            backend = %self.name,
            error = %error,
            kept = self.last.as_ref().map_or(0, BTreeSet::len),
            "{what}: keeping the last discovered endpoints"
        );
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Sleep `wait`, or return false at shutdown.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
