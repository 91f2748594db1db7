//! Connections to one endpoint: open them (with a connect timeout), keep idle ones, hand them out.
//!
//! Why our own pool over `hyper::client::conn` rather than hyper-util's legacy `Client`: the
//! promises need what that client hides. (1) Whether a failed request went out on a *reused*
//! connection (a reset there with nothing received is the upstream's idle close, safe to
//! re-send; on a fresh one it is not) -- `Lease::reused`. (2) A per-endpoint idle timeout that
//! can be lowered from what the upstream announces -- checked at checkout, so a connection idle
//! longer than that is never used, and reaped in the background. (3) Closing one endpoint's
//! connections when it leaves the set -- drop its `Pool`. It also returns connections without a
//! spawned task per request (the legacy client spawns one to wait for readiness): the response
//! body hands its connection back when it ends, and checkout waits for readiness instead.
//!
//! The idle queue is a bounded lock-free `ArrayQueue` (FIFO): `max_idle_per_endpoint` bounds
//! memory, and no lock is taken on the request path. Only the request path and the reaper
//! touch it.
//!
//! hitless runs one single-threaded runtime per worker thread (like nginx's workers), so each
//! endpoint keeps one pool per worker (`Pools`): a connection is only used by the worker whose
//! runtime drives it, and a request never wakes another thread.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;
use super::endpoints::Endpoint;
use crate::proxy::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Called once at the start of each worker thread: which per-worker pool it uses.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// Settings shared by every endpoint of a backend.
#[derive(Debug)]
pub struct PoolSettings {
    /// Number of worker threads (one pool each); 0 or 1 means one shared pool.
    pub workers: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub max_response_header_bytes: usize,
}

struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    idle_since: Instant,
}

pub struct Pool {
    idle: ArrayQueue<IdleConn>,
    /// Nanoseconds; an `AtomicU64` so that a learned upstream keep-alive can lower it.
    idle_timeout_ns: AtomicU64,
    settings: Arc<PoolSettings>,
    metrics: BackendMetrics,
}

/// A connection checked out for one request.
pub struct Connection {
    pub sender: http1::SendRequest<RequestBody>,
    /// Whether it carried an earlier request (see the file comment for why this matters).
    pub reused: bool,
}

impl Pool {
    pub fn new(settings: Arc<PoolSettings>, metrics: BackendMetrics) -> Pool {
        Pool {
            idle: ArrayQueue::new(settings.max_idle.max(1)),
            idle_timeout_ns: AtomicU64::new(settings.idle_timeout.as_nanos() as u64),
            settings,
            metrics,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout_ns.load(Ordering::Relaxed))
    }

    /// A ready connection: an idle one that is still fresh and open, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Connection, ProxyError> {
        let idle_timeout = self.idle_timeout();
        while let Some(conn) = self.idle.pop() {
            self.metrics.conns_idle.dec();
            if conn.idle_since.elapsed() >= idle_timeout || conn.sender.is_closed() {
                continue; // dropping the sender closes the connection
            }
            let mut sender = conn.sender;
            // Usually ready at once; after a response that just ended, the connection task may
            // still be finishing it. An error here means the upstream closed it while idle:
            // found before anything was written, so the next one is tried.
            if sender.ready().await.is_ok() {
                return Ok(Connection {
                    sender,
                    reused: true,
                });
            }
        }
        // Boxed: the connect path is cold, and inlined it would make every request's future
        // (which embeds this one) several times larger, to be moved on every request.
        Box::pin(self.connect(addr)).await.map(|sender| Connection {
            sender,
            reused: false,
        })
    }

    /// Give a connection back after its response ended.
    pub fn checkin(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let conn = IdleConn {
            sender,
            idle_since: Instant::now(),
        };
        if self.idle.push(conn).is_ok() {
            self.metrics.conns_idle.inc();
        }
    }

    /// Close idle connections past the idle timeout or closed by the upstream.
    pub fn reap(&self) {
        let idle_timeout = self.idle_timeout();
        for _ in 0..self.idle.len() {
            let Some(conn) = self.idle.pop() else { break };
            if conn.idle_since.elapsed() >= idle_timeout || conn.sender.is_closed() {
                self.metrics.conns_idle.dec();
                continue;
            }
            if self.idle.push(conn).is_err() {
                self.metrics.conns_idle.dec();
            }
        }
    }

    /// Close every idle connection (the endpoint left the set).
    pub fn close_idle(&self) {
        while self.idle.pop().is_some() {
            self.metrics.conns_idle.dec();
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Err(_) => return Err(ProxyError::ConnectTimeout { endpoint: addr }),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(ProxyError::ConnectRefused { endpoint: addr })
                }
                Ok(Err(e)) => {
                    return Err(ProxyError::ConnectFailed {
                        endpoint: addr,
                        reason: e.to_string(),
                    })
                }
                Ok(Ok(stream)) => stream,
            };
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.settings.max_response_header_bytes.max(8192) + 8192)
            .max_header_size(self.settings.max_response_header_bytes)
            .handshake::<_, RequestBody>(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::ConnectFailed {
                endpoint: addr,
                reason: e.to_string(),
            })?;
        self.metrics.conns_open.inc();
        self.metrics.conns_opened.inc();
        let open = self.metrics.conns_open.clone();
        tokio::spawn(async move {
            // Errors here are seen (and reported) by the request that was using the connection.
            let _ = conn.with_upgrades().await;
            open.dec();
        });
        Ok(sender)
    }
}

/// One endpoint's pools, one per worker thread.
pub struct Pools {
    per_worker: Box<[Pool]>,
}

impl Pools {
    pub fn new(settings: Arc<PoolSettings>, metrics: BackendMetrics) -> Pools {
        let n = settings.workers.max(1);
        Pools {
            per_worker: (0..n)
                .map(|_| Pool::new(Arc::clone(&settings), metrics.clone()))
                .collect(),
        }
    }

    /// The pool of the worker this thread belongs to.
    pub fn local(&self) -> &Pool {
        let i = WORKER.with(|w| w.get());
        &self.per_worker[i % self.per_worker.len()]
    }

    pub fn reap(&self) {
        self.per_worker.iter().for_each(Pool::reap);
    }

    pub fn close_idle(&self) {
        self.per_worker.iter().for_each(Pool::close_idle);
    }
}

/// The right to one outstanding request on an endpoint, and the connection carrying it.
/// Dropping it releases the outstanding count; `release(true)` also pools the connection.
pub struct Lease {
    endpoint: Arc<Endpoint>,
    sender: Option<http1::SendRequest<RequestBody>>,
}

impl Lease {
    pub fn new(endpoint: Arc<Endpoint>) -> Lease {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            endpoint,
            sender: None,
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub fn attach(&mut self, sender: http1::SendRequest<RequestBody>) {
        self.sender = Some(sender);
    }

    /// End of the exchange: pool the connection when its response was read to the end.
    pub fn release(mut self, reusable: bool) {
        if let Some(sender) = self.sender.take() {
            if reusable {
                self.endpoint.pool.local().checkin(sender);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
