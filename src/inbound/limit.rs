//! The cap on client connections open at once (`limits.max_connections`), shared by every
//! listener and worker. At the cap the accept loops wait: new connections queue in the kernel
//! (up to the listen backlog) until one closes, so a flood of idle or slow clients cannot grow
//! memory without bound, and the connections already open keep being served.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::runtime::metrics::Metrics;

pub struct ConnectionLimit {
    open: AtomicUsize,
    /// 0: no limit.
    max: usize,
    closed: Notify,
    /// The limit is being hit (one log line per episode, not one per connection).
    at_limit: AtomicBool,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
            closed: Notify::new(),
            at_limit: AtomicBool::new(false),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// How many connections may be accepted now, at most `batch`; waits while none may.
    /// Several workers accept on the same socket, so this is a hint: each accepted
    /// connection still takes its place with [`Open::take`].
    pub async fn room(&self, metrics: &Metrics, batch: usize) -> usize {
        let max = self.cap();
        loop {
            // Registered before the check, so a close between the two is not missed.
            let closed = self.closed.notified();
            let open = self.open.load(Ordering::Acquire);
            if open < max {
                // One episode ends well below the cap, not at the first close: at saturation
                // every close would otherwise log twice.
                let calm = max - max / 10;
                if open < calm.max(1) && self.at_limit.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        max = self.max,
                        "client connections below limits.max_connections again: accepting"
                    );
                }
                return (max - open).min(batch);
            }
            if !self.at_limit.swap(true, Ordering::Relaxed) {
                // A new episode: counted and logged once, until the count is well below.
                metrics.connection_limit_reached.inc();
                tracing::warn!(
                    max = self.max,
                    "limits.max_connections reached: new connections wait in the listen queue until one closes"
                );
            }
            closed.await;
        }
    }

    fn cap(&self) -> usize {
        if self.max == 0 {
            usize::MAX
        } else {
            self.max
        }
    }
}

/// An open client connection, counted in `hitless_downstream_connections_open` and against
/// the limit (a place reserved before accept) until dropped, however its task ends: a panic,
/// or never polled.
pub struct Open {
    gauge: Gauge,
    limit: Arc<ConnectionLimit>,
}

impl Open {
    /// A place for one accepted connection, if the limit has one now (an accepted connection
    /// without a place waits, unserved, until [`ConnectionLimit::room`] says there is).
    pub fn take(gauge: &Gauge, limit: &Arc<ConnectionLimit>) -> Option<Open> {
        let max = limit.cap();
        let mut open = limit.open.load(Ordering::Acquire);
        loop {
            if open >= max {
                return None;
            }
            match limit.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        gauge.inc();
        Some(Open {
            gauge: gauge.clone(),
            limit: Arc::clone(limit),
        })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
        let before = self.limit.open.fetch_sub(1, Ordering::AcqRel);
        // Accept loops wait only when the count is at the cap: wake them only then (the
        // notification takes a lock; most closes need none).
        if self.limit.max != 0 && before >= self.limit.max {
            self.limit.closed.notify_waiters();
        }
    }
}
