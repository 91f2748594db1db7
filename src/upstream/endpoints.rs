//! Endpoint membership of a backend: one immutable snapshot (`EndpointSet`) behind an
//! `ArcSwap`, written by one task (config load now; discovery later), read lock-free by requests.
//!
//! Per-endpoint state that must survive a new snapshot (outstanding requests, the pool) lives in
//! an `Arc<Endpoint>` that `publish` carries over by address, so a set change never resets
//! counters or closes healthy pooled connections. An endpoint that leaves the set gets no new
//! requests; its in-flight ones hold their `Arc` and finish; its idle connections are closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::health::Health;
use super::hold::Hold;
use super::pool::{PoolSettings, Pools};
use super::reach::Reach;
use super::readiness::Readiness;
use crate::runtime::metrics::BackendMetrics;

pub struct Endpoint {
    pub addr: SocketAddr,
    /// Outstanding requests (from pick until the response body ends): the P2C load signal.
    pub in_flight: AtomicUsize,
    pub pool: Pools,
    pub health: Health,
    /// Active checks and slow start.
    pub readiness: Readiness,
    /// Whether it accepts connections (refused or unanswered connects take it out).
    pub reach: Reach,
}

impl Endpoint {
    /// This endpoint, as long as it is in the set (its address may come back later as a new
    /// `Endpoint`, with a new identity): what a request remembers of the endpoints it tried.
    pub fn id(&self) -> usize {
        self as *const Endpoint as usize
    }
}

#[derive(Default)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
}

pub struct Endpoints {
    current: ArcSwap<EndpointSet>,
    settings: Arc<PoolSettings>,
    metrics: BackendMetrics,
    /// Whether new endpoints must pass a health check before taking traffic.
    checked: bool,
    slow_start: std::time::Duration,
    /// Released when a set is published: requests waiting for an endpoint look again.
    hold: Arc<Hold>,
}

impl Endpoints {
    pub fn new(
        settings: Arc<PoolSettings>,
        metrics: BackendMetrics,
        checked: bool,
        slow_start: std::time::Duration,
        hold: Arc<Hold>,
    ) -> Endpoints {
        Endpoints {
            current: ArcSwap::from_pointee(EndpointSet::default()),
            settings,
            metrics,
            checked,
            slow_start,
            hold,
        }
    }

    /// The current snapshot (an atomic load; no lock).
    pub fn load(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.current.load()
    }

    pub fn snapshot(&self) -> Arc<EndpointSet> {
        self.current.load_full()
    }

    /// Replace the set. Only one task may call this for a backend (config load or its
    /// discovery task): concurrent writers could drop each other's carried-over state.
    pub fn publish(&self, addrs: &[SocketAddr]) {
        let old = self.current.load_full();
        let by_addr: HashMap<SocketAddr, &Arc<Endpoint>> =
            old.endpoints.iter().map(|e| (e.addr, e)).collect();
        let endpoints: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| match by_addr.get(addr) {
                Some(e) => Arc::clone(e),
                None => {
                    if self.checked {
                        self.metrics.unready.inc();
                    }
                    Arc::new(Endpoint {
                        addr: *addr,
                        in_flight: AtomicUsize::new(0),
                        pool: Pools::new(Arc::clone(&self.settings), self.metrics.clone(), *addr),
                        health: Health::default(),
                        readiness: Readiness::new(self.checked, self.slow_start),
                        reach: Reach::default(),
                    })
                }
            })
            .collect();
        self.metrics.endpoints.set(endpoints.len() as i64);
        self.current.store(Arc::new(EndpointSet { endpoints }));
        for gone in old.endpoints.iter().filter(|e| !addrs.contains(&e.addr)) {
            gone.pool.retire();
            gone.health.forget(&self.metrics);
            gone.reach.forget(&self.metrics);
            if !gone.readiness.is_ready() {
                self.metrics.unready.dec();
            }
        }
        self.hold.release();
    }
}
