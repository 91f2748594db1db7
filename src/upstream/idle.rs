//! The idle queue of a pool, one rule for both kinds of connection (hyper's and the raw ones of
//! the direct path): a bounded lock-free FIFO (`max_idle_per_endpoint` bounds memory; no lock
//! on the request path), a connection idle for the pool idle timeout is closed and never used,
//! one the upstream closed while idle is forgotten (and learnt from: keep-alive), and every
//! connection in it is counted in `hitless_upstream_connections_idle` from the moment it enters
//! to the moment it leaves, whichever way it leaves (`Pool`'s drop included).

use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::time::Instant;

use crate::runtime::metrics::{BackendMetrics, CloseReason};

/// A connection that can wait in an idle queue.
pub trait Pooled: Sized {
    /// Whether the upstream closed it (or wrote on it unasked) while it was idle; `careful`:
    /// ask the kernel too (`MSG_PEEK`), for a close no task has seen yet.
    fn closed(&self, careful: bool) -> bool;
    /// Close it ourselves for `reason` (counted).
    fn close(self, reason: CloseReason, metrics: &BackendMetrics);
    /// Forget it: the upstream closed it after `idle` of idleness (counted; `learn` sees the
    /// age, for keep-alive learning).
    fn closed_by_upstream(self, idle: Duration, learn: &dyn Fn(Duration));
}

pub struct IdleQueue<C> {
    queue: ArrayQueue<(C, Instant)>,
}

impl<C: Pooled> IdleQueue<C> {
    pub fn new(capacity: usize) -> IdleQueue<C> {
        IdleQueue {
            queue: ArrayQueue::new(capacity.max(1)),
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest connection idle less than `idle_timeout` and still open, if any.
    pub fn pop(
        &self,
        idle_timeout: Duration,
        careful: bool,
        metrics: &BackendMetrics,
        learn: &dyn Fn(Duration),
    ) -> Option<C> {
        while let Some((conn, since)) = self.queue.pop() {
            metrics.conns_idle.dec();
            let idle = since.elapsed();
            if idle >= idle_timeout {
                conn.close(CloseReason::IdleTimeout, metrics);
                continue;
            }
            if conn.closed(careful) {
                conn.closed_by_upstream(idle, learn);
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Keep `conn` idle; when the queue is full it is closed instead (`discarded`).
    pub fn push(&self, conn: C, metrics: &BackendMetrics) {
        match self.queue.push((conn, Instant::now())) {
            Ok(()) => {
                metrics.conns_idle.inc();
            }
            Err((conn, _)) => conn.close(CloseReason::Discarded, metrics),
        }
    }

    /// The reaper's pass: close connections idle too long, forget those the upstream closed.
    pub fn reap(&self, idle_timeout: Duration, metrics: &BackendMetrics, learn: &dyn Fn(Duration)) {
        for _ in 0..self.queue.len() {
            let Some((conn, since)) = self.queue.pop() else {
                break;
            };
            let idle = since.elapsed();
            if idle >= idle_timeout {
                metrics.conns_idle.dec();
                conn.close(CloseReason::IdleTimeout, metrics);
                continue;
            }
            if conn.closed(true) {
                metrics.conns_idle.dec();
                conn.closed_by_upstream(idle, learn);
                continue;
            }
            if let Err((conn, _)) = self.queue.push((conn, since)) {
                metrics.conns_idle.dec();
                conn.close(CloseReason::Discarded, metrics);
            }
        }
    }

    /// Close every idle connection (the endpoint left the set, or the pool is dropped).
    pub fn close_all(&self, metrics: &BackendMetrics) {
        while let Some((conn, _)) = self.queue.pop() {
            metrics.conns_idle.dec();
            conn.close(CloseReason::Discarded, metrics);
        }
    }
}
