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
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;
use super::early::{EarlyAnswer, Seen};
use super::h1::{Counted, RawConn, READ_BUF};
use super::idle::{IdleQueue, Pooled};
use super::keepalive::KeepAlive;
use super::reach::ConnectTime;
use super::sniff::{FirstBytes, Sniffed, UpstreamIo};
use crate::error::ProxyError;
use crate::runtime::clock::now_ms;
use crate::runtime::metrics::{BackendMetrics, CloseReason};

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
    /// `https` and `grpcs` backends.
    pub tls: Option<crate::config::tls::BackendTls>,
    /// How long connects to this backend take (a request's patience with one).
    pub connect_time: Arc<ConnectTime>,
}

/// `Conn::idle_mark` while the connection is in use.
const BUSY: u64 = 0;
/// `Conn::idle_mark` once hitless itself decided to close it (and counted why).
const CLOSED_BY_US: u64 = u64::MAX;

/// One upstream connection: the handle requests go through, plus what the pool needs to know
/// about the socket under it.
pub struct Conn {
    pub sender: http1::SendRequest<RequestBody>,
    /// `now_ms() + 1` since it went idle in the pool, `BUSY`, or `CLOSED_BY_US`. Shared with
    /// the connection task, which tells from it whether the upstream closed an idle
    /// connection (and after how long: keep-alive learning) or the close was ours.
    idle_mark: Arc<AtomicU64>,
    /// A duplicate of the socket (its own fd), to peek for a close the connection task has
    /// not processed yet before a request that must not be sent twice goes out on it.
    peek: Option<socket2::Socket>,
    /// What the endpoint sent first (`sniff.rs`: protocol mismatch diagnosis).
    pub first: FirstBytes,
    /// What its reads and writes tell (`early.rs`): a write met a reset (the connection is
    /// done, whatever hyper thinks), bytes read.
    seen: Arc<Seen>,
}

impl Conn {
    /// Bytes read from the upstream on this connection so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen.bytes_read()
    }

    /// Whether the upstream already closed (or reset) the connection, or sent bytes nobody
    /// asked for. One non-blocking `recv(MSG_PEEK)`.
    fn peer_closed(&self) -> bool {
        self.peek
            .as_ref()
            .is_some_and(|socket| peer_closed(socket2::SockRef::from(socket)))
    }

    /// The connection was handed to an upgrade (101): it never returns to the pool.
    pub fn upgraded(self, metrics: &BackendMetrics) {
        self.close(CloseReason::Exchange, metrics);
    }

    /// Close it ourselves, saying why.
    fn close(self, reason: CloseReason, metrics: &BackendMetrics) {
        self.idle_mark.store(CLOSED_BY_US, Ordering::Relaxed);
        metrics.conn_closed(reason);
    }
}

/// Whether the peer closed (or reset) the socket, or sent bytes nobody asked for: one
/// non-blocking `recv(MSG_PEEK)`, which consumes nothing.
pub(super) fn peer_closed(socket: socket2::SockRef<'_>) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    !matches!(
        socket.peek(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// What ALPN chose on an `https` endpoint (`Pool::alpn`).
const ALPN_UNKNOWN: u8 = 0;
const ALPN_H1: u8 = 1;
const ALPN_H2: u8 = 2;

/// The outcome of `Pool::negotiate`.
pub enum Negotiated {
    /// HTTP/2: use `Pool::h2` (the slot was just filled).
    H2,
    /// HTTP/1.1: this new connection.
    H1(Connection),
}

pub struct Pool {
    idle: IdleQueue<Conn>,
    /// Idle raw connections of the direct path (`h1.rs`).
    raw: IdleQueue<RawConn>,
    /// The endpoint left the set: connections handed back are closed, not pooled.
    retired: Arc<AtomicBool>,
    alpn: std::sync::atomic::AtomicU8,
    /// HTTP/2 backends: one multiplexed connection per endpoint and worker. An async mutex,
    /// held while a connection is being opened, so that a burst of first requests opens one
    /// connection instead of one each; otherwise it guards a clone of a handle, never I/O.
    h2: tokio::sync::Mutex<Option<(http2::SendRequest<RequestBody>, FirstBytes)>>,
    /// The endpoint's learned keep-alive (shared by the pools of every worker).
    pub(super) keepalive: Arc<KeepAlive>,
    settings: Arc<PoolSettings>,
    pub(super) metrics: BackendMetrics,
    /// The endpoint's address (for keep-alive learning from raw connections' closes).
    addr: Option<SocketAddr>,
}

/// A connection checked out for one request.
pub struct Connection {
    pub conn: Conn,
    /// Whether it carried an earlier request (see the file comment for why this matters).
    pub reused: bool,
}

impl Pool {
    pub fn new(
        settings: Arc<PoolSettings>,
        metrics: BackendMetrics,
        keepalive: Arc<KeepAlive>,
        retired: Arc<AtomicBool>,
    ) -> Pool {
        Pool {
            idle: IdleQueue::new(settings.max_idle),
            raw: IdleQueue::new(settings.max_idle),
            retired,
            h2: tokio::sync::Mutex::new(None),
            alpn: std::sync::atomic::AtomicU8::new(ALPN_UNKNOWN),
            keepalive,
            settings,
            metrics,
            addr: None,
        }
    }

    /// Settings shared by the backend's pools.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// The configured idle timeout, lowered by what was learned about the upstream.
    pub fn idle_timeout(&self) -> Duration {
        match self.keepalive.learned() {
            Some(learned) => learned.min(self.settings.idle_timeout),
            None => self.settings.idle_timeout,
        }
    }

    /// A ready connection: an idle one that is still fresh and open, or a new one. With
    /// `careful` (a request that must not be sent twice), a pooled connection is also checked
    /// for a close that arrived but was not processed yet (`Conn::peer_closed`).
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        options: super::SendOptions,
    ) -> Result<Connection, ProxyError> {
        let idle_timeout = self.idle_timeout();
        let careful = options.careful;
        let learn = |_: Duration| {}; // hyper's connections learn in their connection task
        while let Some(mut conn) = (!options.fresh)
            .then(|| self.idle.pop(idle_timeout, careful, &self.metrics, &learn))
            .flatten()
        {
            // Usually ready at once; after a response that just ended, the connection task may
            // still be finishing it. An error here means the upstream closed it while idle:
            // found before anything was written, so the next one is tried.
            if conn.sender.ready().await.is_ok() {
                conn.idle_mark.store(BUSY, Ordering::Relaxed);
                return Ok(Connection { conn, reused: true });
            }
        }
        if !options.fresh && self.settings.tls.is_none() {
            if let Some(stream) = self.adopt_raw(careful) {
                let conn = Box::pin(self.connect_with(addr, UpstreamIo::Plain(stream), true));
                return match conn.await {
                    Ok(conn) => Ok(Connection { conn, reused: true }),
                    Err(error) => {
                        // It was counted open as a raw connection; it is closed now.
                        self.metrics.conns_open.dec();
                        self.metrics.conn_closed(CloseReason::Exchange);
                        Err(error)
                    }
                };
            }
        }
        // Boxed: the connect path is cold, and inlined it would make every request's future
        // (which embeds this one) several times larger, to be moved on every request.
        Box::pin(self.connect(addr, options.patient))
            .await
            .map(|conn| Connection {
                conn,
                reused: false,
            })
    }

    /// The endpoint's HTTP/2 connection, ready for a new stream (opened when there is none or
    /// it closed). `true` when it already carried streams.
    pub async fn h2(
        &self,
        addr: SocketAddr,
        patient: bool,
    ) -> Result<(http2::SendRequest<RequestBody>, FirstBytes, bool), ProxyError> {
        let mut slot = self.h2.lock().await;
        if let Some((sender, first)) = slot.as_ref().filter(|(s, _)| !s.is_closed()) {
            return Ok((sender.clone(), Arc::clone(first), true));
        }
        let (sender, first) = Box::pin(self.connect_h2(addr, patient)).await?;
        *slot = Some((sender.clone(), Arc::clone(&first)));
        Ok((sender, first, false))
    }

    async fn connect_h2(
        &self,
        addr: SocketAddr,
        patient: bool,
    ) -> Result<(http2::SendRequest<RequestBody>, FirstBytes), ProxyError> {
        let io = self.open(addr, patient).await?;
        self.connect_h2_with(addr, io).await
    }

    async fn connect_h2_with(
        &self,
        addr: SocketAddr,
        io: UpstreamIo,
    ) -> Result<(http2::SendRequest<RequestBody>, FirstBytes), ProxyError> {
        let (stream, first) = Sniffed::new(io);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .max_header_list_size(self.settings.max_response_header_bytes as u32)
            .handshake::<_, RequestBody>(TokioIo::new(EarlyAnswer::new(stream)))
            .await
            .map_err(|e| handshake_failed(addr, e))?;
        self.metrics.conns_open.inc();
        self.metrics.conns_opened.inc();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            metrics.conns_open.dec();
            metrics.conn_closed(CloseReason::Exchange);
        });
        Ok((sender, first))
    }

    /// Give a connection back after its response ended.
    pub fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() || conn.seen.met_reset() {
            return;
        }
        if self.retired.load(Ordering::Relaxed) {
            conn.close(CloseReason::Discarded, &self.metrics);
            return;
        }
        conn.idle_mark.store(now_ms() + 1, Ordering::Relaxed);
        self.idle.push(conn, &self.metrics);
    }

    /// Close idle connections past the idle timeout, and forget those the upstream closed.
    pub fn reap(&self) {
        let idle_timeout = self.idle_timeout();
        let learn = |_: Duration| {};
        self.idle.reap(idle_timeout, &self.metrics, &learn);
        self.raw
            .reap(idle_timeout, &self.metrics, &|age| self.learn_close(age));
    }

    /// Close every idle connection (the endpoint left the set).
    pub fn close_idle(&self) {
        self.idle.close_all(&self.metrics);
        self.raw.close_all(&self.metrics);
    }

    /// An idle raw connection the upstream closed after `age`: what its keep-alive is.
    fn learn_close(&self, age: Duration) {
        if let Some(addr) = self.addr {
            self.keepalive.observed_close(age, addr, &self.metrics);
        }
    }

    /// A connection to `addr` for a request: TCP (given up after the backend's connect
    /// patience, `reach.rs`, unless `patient`), then TLS for `https`/`grpcs` backends, both
    /// within the connect timeout.
    pub async fn open(&self, addr: SocketAddr, patient: bool) -> Result<UpstreamIo, ProxyError> {
        self.open_within(addr, self.tcp_limit(patient)).await
    }

    /// As `open`, with the whole connect timeout (an active health check: out of band).
    pub async fn open_for_check(&self, addr: SocketAddr) -> Result<UpstreamIo, ProxyError> {
        self.open_within(addr, self.settings.connect_timeout).await
    }

    async fn open_within(
        &self,
        addr: SocketAddr,
        tcp_limit: Duration,
    ) -> Result<UpstreamIo, ProxyError> {
        let Some(tls) = &self.settings.tls else {
            return Ok(UpstreamIo::Plain(self.tcp_within(addr, tcp_limit).await?));
        };
        let started = Instant::now();
        let tcp = self.tcp_within(addr, tcp_limit).await?;
        let name = match &tls.server_name {
            Some(name) => rustls_pki_types::ServerName::try_from(name.clone()),
            None => Ok(rustls_pki_types::ServerName::IpAddress(addr.ip().into())),
        }
        .map_err(|e| ProxyError::TlsError {
            endpoint: addr,
            reason: e.to_string(),
        })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client));
        let left = self
            .settings
            .connect_timeout
            .saturating_sub(started.elapsed());
        match tokio::time::timeout(left, connector.connect(name, tcp)).await {
            Err(_) => Err(ProxyError::ConnectTimeout { endpoint: addr }),
            Ok(Err(e)) => {
                // Not TLS records at all: most likely a plaintext HTTP server.
                let plaintext = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidMessage(_)));
                Err(if plaintext {
                    ProxyError::ProtocolMismatch {
                        endpoint: addr,
                        speaks: "plaintext, not TLS",
                        fix: "protocol: http (or h2c)",
                    }
                } else {
                    ProxyError::TlsError {
                        endpoint: addr,
                        reason: e.to_string(),
                    }
                })
            }
            Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream))),
        }
    }

    /// How long a request waits for a TCP connect: the connect patience when another
    /// endpoint could take it, else the whole connect timeout.
    fn tcp_limit(&self, patient: bool) -> Duration {
        if patient {
            return self.settings.connect_timeout;
        }
        self.settings
            .connect_time
            .patience(self.settings.connect_timeout)
    }

    /// A TCP connection to `addr` for a request (see `tcp_limit`).
    pub(super) async fn tcp(
        &self,
        addr: SocketAddr,
        patient: bool,
    ) -> Result<TcpStream, ProxyError> {
        self.tcp_within(addr, self.tcp_limit(patient)).await
    }

    /// A TCP connection to `addr` within `limit`, the failure named; its time is learnt.
    async fn tcp_within(&self, addr: SocketAddr, limit: Duration) -> Result<TcpStream, ProxyError> {
        let started = Instant::now();
        let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
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
        self.settings.connect_time.observe(started.elapsed());
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, addr: SocketAddr, patient: bool) -> Result<Conn, ProxyError> {
        let stream = self.open(addr, patient).await?;
        self.connect_with(addr, stream, false).await
    }

    /// `https` backends whose protocol is not known yet: open a connection, and let ALPN
    /// decide. HTTP/2 (the endpoint's connection slot is filled) or an HTTP/1.1 connection
    /// for this request.
    pub async fn negotiate(
        &self,
        addr: SocketAddr,
        patient: bool,
    ) -> Result<Negotiated, ProxyError> {
        let io = self.open(addr, patient).await?;
        let h2 =
            matches!(&io, UpstreamIo::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2"));
        self.alpn
            .store(if h2 { ALPN_H2 } else { ALPN_H1 }, Ordering::Relaxed);
        if h2 {
            let mut slot = self.h2.lock().await;
            let (sender, first) = self.connect_h2_with(addr, io).await?;
            *slot = Some((sender.clone(), Arc::clone(&first)));
            Ok(Negotiated::H2)
        } else {
            Ok(Negotiated::H1(Connection {
                conn: self.connect_with(addr, io, false).await?,
                reused: false,
            }))
        }
    }

    /// What ALPN chose for this endpoint: `None` until a connection was made.
    pub fn speaks_h2(&self) -> Option<bool> {
        match self.alpn.load(Ordering::Relaxed) {
            ALPN_H2 => Some(true),
            ALPN_H1 => Some(false),
            _ => None,
        }
    }

    /// `adopted`: a raw connection already counted open (`h1.rs`).
    async fn connect_with(
        &self,
        addr: SocketAddr,
        stream: UpstreamIo,
        adopted: bool,
    ) -> Result<Conn, ProxyError> {
        // Over TLS the socket carries records (session tickets, alerts), not HTTP: no peeking.
        let peek = match &stream {
            UpstreamIo::Plain(tcp) => socket2::SockRef::from(tcp).try_clone().ok(),
            UpstreamIo::Tls(_) => None,
        };
        let (stream, first) = Sniffed::new(stream);
        let stream = EarlyAnswer::new(stream);
        let seen = stream.seen();
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.settings.max_response_header_bytes.max(8192) + 8192)
            .max_header_size(self.settings.max_response_header_bytes)
            .handshake::<_, RequestBody>(TokioIo::new(stream))
            .await
            .map_err(|e| handshake_failed(addr, e))?;
        if !adopted {
            self.metrics.conns_open.inc();
            self.metrics.conns_opened.inc();
        }
        let idle_mark = Arc::new(AtomicU64::new(BUSY));
        let (mark, metrics, keepalive) = (
            Arc::clone(&idle_mark),
            self.metrics.clone(),
            Arc::clone(&self.keepalive),
        );
        tokio::spawn(async move {
            // Errors here are seen (and reported) by the request that was using the connection.
            let _ = conn.with_upgrades().await;
            metrics.conns_open.dec();
            match mark.load(Ordering::Relaxed) {
                CLOSED_BY_US => {}
                BUSY => metrics.conn_closed(CloseReason::Exchange),
                idle_since => {
                    metrics.conn_closed(CloseReason::UpstreamClose);
                    let age = Duration::from_millis(now_ms().saturating_sub(idle_since - 1));
                    keepalive.observed_close(age, addr, &metrics);
                }
            }
        });
        Ok(Conn {
            sender,
            idle_mark,
            peek,
            first,
            seen,
        })
    }
}

/// Raw connections of the direct path (`h1.rs`): pooled beside hyper's.
impl Pool {
    /// A raw connection to `addr`: a pooled one that is fresh and still open, or a new one.
    /// `careful`: the request must not reach the application twice, so a pooled connection is
    /// also checked with a system call for a close the runtime has not seen yet.
    /// Returns whether it is reused.
    pub async fn checkout_raw(
        &self,
        addr: SocketAddr,
        options: super::SendOptions,
    ) -> Result<(RawConn, bool), ProxyError> {
        if !options.fresh {
            if let Some(conn) = self.pop_raw(options.careful) {
                return Ok((conn, true));
            }
        }
        let stream = Box::pin(self.tcp(addr, options.patient)).await?;
        self.metrics.conns_open.inc();
        self.metrics.conns_opened.inc();
        let conn = RawConn {
            stream,
            buf: BytesMut::with_capacity(READ_BUF),
            counted: Counted {
                reason: CloseReason::Exchange,
                metrics: Some(self.metrics.clone()),
            },
            reset: false,
        };
        Ok((conn, false))
    }

    /// A pooled raw connection still fresh and open, if any.
    fn pop_raw(&self, careful: bool) -> Option<RawConn> {
        let mut conn = self
            .raw
            .pop(self.idle_timeout(), careful, &self.metrics, &|age| {
                self.learn_close(age)
            })?;
        conn.counted.reason = CloseReason::Exchange;
        Some(conn)
    }

    /// An idle raw connection for hyper's path (`Pool::checkout`), which counts it from
    /// then on: a mix of plain requests and others shares one set of connections.
    pub(super) fn adopt_raw(&self, careful: bool) -> Option<TcpStream> {
        let mut conn = self.pop_raw(careful)?;
        conn.counted.metrics = None;
        Some(conn.stream)
    }

    /// Give a raw connection back after an exchange that read its response to the end.
    pub fn checkin_raw(&self, mut conn: RawConn) {
        if !conn.buf.is_empty() {
            // Bytes nobody asked for: the connection is out of step (dropped: `Exchange`).
            return;
        }
        if self.retired.load(Ordering::Relaxed) {
            conn.counted.reason = CloseReason::Discarded;
            return;
        }
        self.raw.push(conn, &self.metrics);
    }
}

impl Pooled for RawConn {
    fn closed(&self, careful: bool) -> bool {
        closed_while_idle(&self.stream, careful)
    }

    fn close(mut self, reason: CloseReason, _metrics: &BackendMetrics) {
        self.counted.reason = reason; // counted when dropped
    }

    fn closed_by_upstream(mut self, idle: Duration, learn: &dyn Fn(Duration)) {
        self.counted.reason = CloseReason::UpstreamClose;
        learn(idle);
    }
}

impl Pooled for Conn {
    fn closed(&self, careful: bool) -> bool {
        self.sender.is_closed() || self.seen.met_reset() || (careful && self.peer_closed())
    }

    fn close(self, reason: CloseReason, metrics: &BackendMetrics) {
        Conn::close(self, reason, metrics);
    }

    fn closed_by_upstream(self, _idle: Duration, _learn: &dyn Fn(Duration)) {
        // Its connection task counts the close, and learns from its age.
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Idle connections of an endpoint that is gone: counted out of the gauges.
        self.close_idle();
    }
}

/// Whether the upstream closed (or wrote on) an idle connection. Without `careful`, only what
/// the runtime already saw (no system call when nothing happened); with it, a `MSG_PEEK`.
fn closed_while_idle(stream: &TcpStream, careful: bool) -> bool {
    if careful {
        return super::pool::peer_closed(socket2::SockRef::from(stream));
    }
    let mut byte = [0u8; 1];
    !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The HTTP handshake (HTTP/1.1 or HTTP/2) on a new connection failed.
fn handshake_failed(endpoint: SocketAddr, e: hyper::Error) -> ProxyError {
    ProxyError::ConnectFailed {
        endpoint,
        reason: e.to_string(),
    }
}

/// One endpoint's pools, one per worker thread.
pub struct Pools {
    per_worker: Box<[Pool]>,
    pub keepalive: Arc<KeepAlive>,
    retired: Arc<AtomicBool>,
}

impl Pools {
    pub fn new(settings: Arc<PoolSettings>, metrics: BackendMetrics, addr: SocketAddr) -> Pools {
        let n = settings.workers.max(1);
        let keepalive = Arc::new(KeepAlive::default());
        let retired = Arc::new(AtomicBool::new(false));
        Pools {
            per_worker: (0..n)
                .map(|_| {
                    let mut pool = Pool::new(
                        Arc::clone(&settings),
                        metrics.clone(),
                        Arc::clone(&keepalive),
                        Arc::clone(&retired),
                    );
                    pool.addr = Some(addr);
                    pool
                })
                .collect(),
            keepalive,
            retired,
        }
    }

    /// The endpoint left the set: idle connections close now, and those its in-flight
    /// requests hand back close then (they are not pooled, and the gauges go back down).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.close_idle();
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
