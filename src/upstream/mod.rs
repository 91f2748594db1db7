//! Backends: a named set of endpoints, how to pick one, and how to exchange one request with it.
//!
//! Vocabulary: a *Backend* has *Endpoints* (`endpoints.rs`, one snapshot), each with a pool of
//! *Connections* (`pool.rs`). `balance.rs` picks; `send` performs one exchange and classifies its
//! failure into a `ProxyError` that says what the failure proves (see `RetryClass`).

pub mod balance;
pub mod body;
pub mod budget;
pub mod checks;
pub mod early;
pub mod endpoints;
pub mod h1;
pub mod health;
pub mod hold;
pub mod idle;
pub mod keepalive;
pub mod lease;
pub mod pool;
pub mod probe;
pub mod raw_body;
pub mod reach;
pub mod readiness;
pub mod sniff;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::config::{BackendConfig, Protocol};
use crate::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;
use body::RequestBody;
use endpoints::{Endpoint, Endpoints};
use lease::{Lease, UpstreamBody};
use pool::PoolSettings;

pub struct Backend {
    pub name: String,
    /// The settings it was built from (a reload with equal settings keeps this backend);
    /// the policies below read them from here.
    pub config: BackendConfig,
    pub endpoints: Endpoints,
    pub budget: budget::RetryBudget,
    rr: AtomicUsize,
    pub hold: Arc<hold::Hold>,
    pub metrics: BackendMetrics,
    /// Its endpoints are known: always for a static list; for a discovered backend, once the
    /// first full answer (DNS) or list (EndpointSlices) arrived. Never goes back to false.
    pub synced: std::sync::atomic::AtomicBool,
    /// Cancelled when the backend is dropped (a reload replaced it): its discovery task, which
    /// may be parked on a watch for minutes, ends at once instead of at its next event.
    pub tasks: tokio_util::sync::CancellationToken,
    /// Places for copies of other routes' requests in flight to this backend (mirrors;
    /// `proxy/mirror.rs` sets how many): one bound for every route that mirrors here, kept
    /// across reloads with the backend.
    pub copies: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// A request admitted under the backend's concurrency limit; dropping it frees the place.
pub struct Admission {
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// A failed exchange: the error, whether the connection was a reused one, and the request
/// itself when it was never sent.
pub struct SendError {
    pub error: ProxyError,
    pub reused: bool,
    pub request: Option<Request<RequestBody>>,
    /// The request was written, but provably not read by the application (`proven_unread`):
    /// it may be sent again whatever its method.
    pub unread: bool,
}

impl SendError {
    /// A failure of a raw exchange (`Backend::send_raw`): the bytes stay the caller's.
    pub fn raw(error: ProxyError, unread: bool, reused: bool) -> SendError {
        SendError {
            error,
            reused,
            request: None,
            unread,
        }
    }

    /// Nothing was sent: the request comes back for another try.
    pub fn unsent(error: ProxyError, request: Request<RequestBody>) -> SendError {
        SendError {
            error,
            reused: false,
            request: Some(request),
            unread: false,
        }
    }
}

/// See `proven_unread`.
pub const RACE_WINDOW: Duration = Duration::from_millis(10);

/// A request this small, written in one write on a new connection, is read whole by an
/// application's first read (gunicorn reads 8 KiB, Go 4 KiB, Node.js 64 KiB) or not at all.
pub const UNREAD_MAX_BYTES: usize = 4096;

/// How a connection failed before a whole response head came back.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    /// It carried an earlier request.
    pub reused: bool,
    /// Not a byte of response arrived.
    pub nothing_back: bool,
    /// It was reset (RST, or our write failed), not closed (FIN).
    pub reset: bool,
    /// From the request going out to the failure.
    pub since_send: Duration,
    /// The whole request went out in one write of this many bytes (`None`: not known).
    pub one_write: Option<usize>,
}

/// Whether a failure proves that the application did not read the request, so that any
/// method may be sent again (the one rule for both engines). With nothing of a response
/// back, either
/// - the connection was reset: a kernel resets a connection closed with unread data in its
///   receive buffer (an application that read the request and died closes with a FIN) -- so on
///   a *reused* connection the application (an idle close crossing our request) did not read
///   all of it, and on a *new* one whose whole request was one small write (`UNREAD_MAX_BYTES`)
///   it read none of it: a listener closed with our connection still in its accept queue (an
///   app stopping: gunicorn, Node.js), or an app that accepted and closed without reading;
/// - or a reused connection closed within `RACE_WINDOW` of the request going out: an upstream
///   that gives up a connection (idle timeout, a limit of requests per connection, a graceful
///   stop) does so regardless of what we send, its close already on the way; an application
///   that reads a request works on it before it could die of it.
///
/// The price of the rule: an application that dies within 10 ms of reading a request, or
/// aborts connections with SO_LINGER 0, may see it again (documented in the README).
pub fn proven_unread(f: Failure) -> bool {
    if !f.nothing_back {
        return false;
    }
    let small_single_write = f.one_write.is_some_and(|n| n <= UNREAD_MAX_BYTES);
    (f.reset && (f.reused || small_single_write)) || (f.reused && f.since_send <= RACE_WINDOW)
}

/// `proven_unread` for a failure hyper reported. hyper may write a request in several
/// writes, so on a new connection only the reused-connection rules apply. `nothing_back`:
/// not a byte was read on the connection since the request went out (`early::Seen`).
fn hyper_unread(e: &hyper::Error, reused: bool, nothing_back: bool, since_send: Duration) -> bool {
    let io_kind = e
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    let reset = matches!(
        io_kind,
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
    );
    let closed = reset
        || e.is_incomplete_message()
        || e.is_canceled()
        || io_kind == Some(std::io::ErrorKind::ConnectionAborted);
    closed
        && proven_unread(Failure {
            reused,
            nothing_back,
            reset,
            since_send,
            one_write: None,
        })
}

/// How to send one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendOptions {
    /// It must not reach the application twice: check pooled connections harder.
    pub careful: bool,
    /// Use a new connection, not a pooled one.
    pub fresh: bool,
    /// Wait for a connect up to `connect_timeout`: no other endpoint could take the request
    /// (no retries), so giving up after the connect patience would only fail it sooner.
    pub patient: bool,
}

/// A response head read from a raw connection (`Backend::send_raw`): the connection, whose
/// buffer holds what came after the head, and the lease on the endpoint.
pub struct RawExchange {
    pub conn: h1::RawConn,
    pub head: h1::ResponseHead,
    pub lease: Lease,
    /// The connection was pooled (it had carried an exchange before).
    pub reused: bool,
}

/// A response head from an endpoint, with what the exchange tells the caller.
pub struct Exchange {
    pub response: Response<UpstreamBody>,
    pub endpoint: SocketAddr,
    pub reused: bool,
}

impl Backend {
    pub fn new(
        config: &BackendConfig,
        max_response_header_bytes: usize,
        workers: usize,
        metrics: BackendMetrics,
    ) -> Backend {
        let settings = Arc::new(PoolSettings {
            workers,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.max_idle_per_endpoint,
            max_response_header_bytes,
            tls: config.tls.clone(),
            connect_time: Arc::new(reach::ConnectTime::new()),
        });
        let hold = Arc::new(hold::Hold::default());
        let endpoints = Endpoints::new(
            settings,
            metrics.clone(),
            config.health_check.is_some(),
            config.slow_start,
            Arc::clone(&hold),
        );
        endpoints.publish(&config.endpoints);
        metrics
            .max_concurrent
            .set(config.max_concurrent_requests as i64);
        if config.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(backend = %config.name, "tls.insecure_skip_verify: the backend's certificate is NOT verified (anyone on the path can impersonate it); for test clusters only");
        }
        Backend {
            config: config.clone(),
            name: config.name.clone(),
            endpoints,
            budget: budget::RetryBudget::new(config.retry_budget),
            rr: AtomicUsize::new(0),
            hold,
            metrics,
            synced: std::sync::atomic::AtomicBool::new(config.discovery.is_none()),
            tasks: tokio_util::sync::CancellationToken::new(),
            copies: std::sync::OnceLock::new(),
        }
    }

    /// A place under `max_concurrent_requests`, or `None`: shed the request.
    pub fn admit(&self) -> Option<Admission> {
        let before = self.metrics.in_flight.inc();
        let admission = Admission {
            in_flight: self.metrics.in_flight.clone(),
        };
        (before < self.config.max_concurrent_requests as i64).then_some(admission)
    }

    /// Pick an endpoint that can take a request and is not in `tried` (`Endpoint::id`s: a
    /// retry goes to an
    /// endpoint that has not failed this request). Taking requests: ready (active checks),
    /// reachable (`reach.rs`: not refusing or black-holing connects), not ejected. When every
    /// such endpoint is ejected, pick among them anyway (panic mode: an ejection is a guess, a
    /// 503 is certain), and count it. `None` when no untried endpoint can take it.
    pub fn pick_excluding(&self, tried: &[usize]) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let ejected = |e: &Endpoint| e.health.is_ejected(&self.config.outlier, &self.metrics);
        let usable =
            |e: &Endpoint| e.readiness.is_ready() && !e.reach.is_down() && !tried.contains(&e.id());
        let mut ramping = None;
        if tried.is_empty() {
            if let Some(first) = balance::pick(&set, self.config.balance, &self.rr, |e| {
                usable(e) && !ejected(e)
            }) {
                if first.readiness.admits(self.config.slow_start) {
                    return Some(first);
                }
                ramping = Some(first.addr);
            }
        }
        if let Some(e) = balance::pick_where(&set, self.config.balance, &self.rr, |e| {
            usable(e) && !ejected(e) && Some(e.addr) != ramping
        }) {
            return Some(e);
        }
        let e = balance::pick_where(&set, self.config.balance, &self.rr, usable)?;
        if ejected(&e) {
            self.metrics.panics.inc();
        }
        Some(e)
    }

    /// Why no endpoint can take a request: the failure that took one out of rotation.
    pub fn why_unavailable(&self) -> Option<ProxyError> {
        let set = self.endpoints.load();
        set.endpoints.iter().find_map(|e| e.reach.why_down(e.addr))
    }

    /// Whether any endpoint could take a request now, tried or not.
    pub fn any_usable(&self) -> bool {
        self.any_usable_except(&[])
    }

    /// Whether any endpoint not in `tried` could take a request now (ejected ones included:
    /// panic mode would pick them).
    pub fn any_usable_except(&self, tried: &[usize]) -> bool {
        self.endpoints
            .load()
            .endpoints
            .iter()
            .any(|e| e.readiness.is_ready() && !e.reach.is_down() && !tried.contains(&e.id()))
    }

    /// Record the outcome of an exchange for the endpoint's passive health: a response
    /// (`Ok(status)`) or a failure. A refused or unanswered connect takes the endpoint out of
    /// rotation until a probe connects (`reach.rs`); other failures count towards ejection;
    /// every failure weighs on the balancer for a while (`Health::penalty`). With
    /// `outlier.consecutive_failures: 0` passive health is off: none of this (a plain proxy).
    pub fn report(&self, endpoint: &Arc<Endpoint>, outcome: Result<u16, &ProxyError>) {
        let passive = self.config.outlier.consecutive_failures > 0;
        let weight = match outcome {
            Ok(502..=504) => 1,
            Ok(_) => {
                endpoint.health.success();
                self.hold.release();
                return;
            }
            Err(
                e @ (ProxyError::ConnectRefused { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::ConnectFailed { .. }),
            ) => {
                if !passive {
                    return;
                }
                endpoint.health.penalize();
                probe::mark_down(
                    endpoint,
                    e,
                    probe::ProbeContext {
                        connect_timeout: self.config.connect_timeout,
                        connect_time: Arc::clone(&endpoint.pool.local().settings().connect_time),
                        hold: Arc::clone(&self.hold),
                        metrics: self.metrics.clone(),
                        backend: Arc::from(self.name.as_str()),
                    },
                );
                return;
            }
            Err(
                ProxyError::UpstreamReset { .. }
                | ProxyError::RefusedStream { .. }
                | ProxyError::ProtocolMismatch { .. }
                | ProxyError::TlsError { .. }
                | ProxyError::UpstreamProtocol { .. }
                | ProxyError::BackendTimeout { .. },
            ) => 1,
            // Not the endpoint's doing (the client, the whole request's deadline...).
            Err(_) => return,
        };
        if !passive {
            return;
        }
        endpoint.health.penalize();
        if !endpoint.health.failure(&self.config.outlier, weight) {
            return;
        }
        let set = self.endpoints.load();
        let pct = self.config.outlier.max_ejected_percent as usize;
        let allowed = if pct == 0 {
            0
        } else {
            (set.endpoints.len() * pct / 100).max(1)
        };
        let ejected = set
            .endpoints
            .iter()
            .filter(|e| e.health.is_ejected(&self.config.outlier, &self.metrics))
            .count();
        if ejected >= allowed {
            return;
        }
        if let Some(length) = endpoint.health.eject(&self.config.outlier, &self.metrics) {
            let cause = match outcome {
                Ok(status) => status.to_string(),
                Err(e) => e.cause().to_string(),
            };
            tracing::warn!(
                backend = %self.name,
                endpoint = %endpoint.addr,
                last = %cause,
                ejected_for = %humantime::format_duration(length),
                "endpoint ejected after consecutive failures"
            );
        }
    }

    /// One exchange with `endpoint`, up to the response head. The connection stays with the
    /// response body and returns to the pool when the body ends. When no connection could be
    /// had, nothing was sent and the request comes back with the error, ready for another try.
    ///
    /// `options.careful`: the request must not reach the application twice (see
    /// `Pool::checkout`); `options.fresh`: on a new connection (a re-send after a stale one).
    /// A pooled connection found closed before the request was written to it is skipped
    /// for the next one, whatever the method: hyper hands the unsent request back.
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut request: Request<RequestBody>,
        options: SendOptions,
    ) -> Result<Exchange, SendError> {
        let addr = endpoint.addr;
        let pool = endpoint.pool.local();
        let mut negotiated = None;
        // The HTTP/2 and ALPN paths are boxed: an async fn's future is as large as its largest
        // branch, and every HTTP/1.1 request would otherwise copy their state around (the
        // futures of a request are moved, memcpy, as each level awaits the next).
        match (self.config.protocol, pool.speaks_h2()) {
            (p, _) if p.is_h2() => {
                return Box::pin(self.send_h2(endpoint, request, options.patient)).await
            }
            (Protocol::Https, Some(true)) => {
                return Box::pin(self.send_h2(endpoint, request, options.patient)).await
            }
            (Protocol::Https, None) => {
                match Box::pin(pool.negotiate(addr, options.patient)).await {
                    Ok(pool::Negotiated::H2) => {
                        return Box::pin(self.send_h2(endpoint, request, options.patient)).await
                    }
                    Ok(pool::Negotiated::H1(conn)) => negotiated = Some(conn),
                    Err(error) => return Err(SendError::unsent(error, request)),
                }
            }
            _ => {}
        }
        let mut lease = Lease::new(Arc::clone(endpoint));
        // A few stale pooled connections in a row are possible (an app that closed them all);
        // a fresh connection that fails before writing is not retried here.
        for _ in 0..4 {
            let checked_out = match negotiated.take() {
                Some(conn) => Ok(conn),
                None => pool.checkout(addr, options).await,
            };
            let mut conn = match checked_out {
                Ok(conn) => conn,
                Err(error) => return Err(SendError::unsent(error, request)),
            };
            let reused = conn.reused;
            let sent_at = tokio::time::Instant::now();
            let read_before = conn.conn.bytes_read();
            match conn.conn.sender.try_send_request(request).await {
                Ok(response) => {
                    if let Some(v) = response.headers().get("keep-alive") {
                        endpoint
                            .pool
                            .keepalive
                            .announced(v.as_bytes(), addr, &self.metrics);
                    }
                    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        // The socket now belongs to the tunnel (hyper hands it over).
                        conn.conn.upgraded(&self.metrics);
                    } else {
                        lease.attach(conn.conn);
                    }
                    let response = response.map(|body| UpstreamBody::new(body, lease));
                    return Ok(Exchange {
                        response,
                        endpoint: addr,
                        reused,
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => {
                        // Part of an answer came back: the request was read.
                        let nothing_back = conn.conn.bytes_read() == read_before;
                        let unread =
                            hyper_unread(e.error(), reused, nothing_back, sent_at.elapsed());
                        let error = diagnose(
                            classify(e.error(), addr),
                            self.config.protocol,
                            &conn.conn.first,
                            false,
                        );
                        return Err(SendError {
                            error,
                            reused,
                            request: unsent,
                            unread,
                        });
                    }
                },
            }
        }
        Err(SendError {
            error: ProxyError::UpstreamReset { endpoint: addr },
            reused: true,
            request: Some(request),
            unread: false,
        })
    }

    /// One exchange on a raw pooled HTTP/1.1 connection (`h1.rs`): `bytes`, a whole request,
    /// written at once, and the response head read and parsed as it comes; `on_head` sees its
    /// status, framing and fields once, while they are still in the read buffer. The head's
    /// bytes are consumed: what follows in `conn.buf` is the body. A failure says, as
    /// `send` does, whether the request was proven unread.
    pub async fn send_raw(
        &self,
        endpoint: &Arc<Endpoint>,
        bytes: &[u8],
        head_request: bool,
        options: SendOptions,
        mut on_head: impl FnMut(u16, h1::Framing, &[httparse::Header<'_>]),
    ) -> Result<RawExchange, SendError> {
        use bytes::Buf;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let addr = endpoint.addr;
        let lease = Lease::new(Arc::clone(endpoint));
        let pool = endpoint.pool.local();
        let (mut conn, reused) = match pool.checkout_raw(addr, options).await {
            Ok(found) => found,
            Err(error) => return Err(SendError::raw(error, false, false)),
        };
        let sent_at = tokio::time::Instant::now();
        let failure = |reused, nothing_back, reset| Failure {
            reused,
            nothing_back,
            reset,
            since_send: sent_at.elapsed(),
            one_write: Some(bytes.len()),
        };
        // A reset under the write: the upstream closed before the request went out, or it
        // answered early and closed with our body unread (`early.rs`); its answer, if any, is
        // there to read, and it is the answer.
        let write_reset = match conn.stream.write_all(bytes).await {
            Ok(()) => false,
            Err(e) if early::is_reset(&e) => true,
            Err(_) => {
                let unread = proven_unread(failure(reused, true, true));
                let error = ProxyError::UpstreamReset { endpoint: addr };
                return Err(SendError::raw(error, unread, reused));
            }
        };
        conn.buf.clear();
        let max_head = pool.settings().max_response_header_bytes;
        let keepalive = &endpoint.pool.keepalive;
        loop {
            let parsed = h1::parse_response(
                &mut conn.buf,
                head_request,
                max_head,
                |status, framing, fields| {
                    for f in fields {
                        if f.name.eq_ignore_ascii_case("keep-alive") {
                            keepalive.announced(f.value, addr, &self.metrics);
                        }
                    }
                    on_head(status, framing, fields);
                },
            );
            match parsed {
                Ok(Some(mut head)) => {
                    conn.buf.advance(head.len);
                    // The connection is gone, whatever the answer said.
                    head.keep_alive &= !write_reset;
                    conn.reset = write_reset;
                    return Ok(RawExchange {
                        conn,
                        head,
                        lease,
                        reused,
                    });
                }
                Ok(None) => {}
                Err(h1::HeadError::TooLarge) => {
                    let error = ProxyError::UpstreamHeaderTooLarge { endpoint: addr };
                    return Err(SendError::raw(error, false, reused));
                }
                Err(h1::HeadError::Invalid(reason)) => {
                    let error = ProxyError::UpstreamProtocol {
                        endpoint: addr,
                        reason: reason.to_string(),
                    };
                    let first = (!reused).then_some(&conn.buf[..]);
                    let error = diagnose_bytes(error, Protocol::Http, first, !reused);
                    return Err(SendError::raw(error, false, reused));
                }
            }
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(h1::READ_BUF);
            }
            let had = conn.buf.len();
            let read = conn.stream.read_buf(&mut conn.buf).await;
            let reset = match read {
                Ok(0) => false,
                Ok(_) => continue,
                Err(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
            };
            // Closed (or reset) before a whole head: was the request read?
            let unread = proven_unread(failure(reused, had == 0, reset || write_reset));
            let error = ProxyError::UpstreamReset { endpoint: addr };
            return Err(SendError::raw(error, unread, reused));
        }
    }

    /// One exchange over the endpoint's multiplexed HTTP/2 connection.
    async fn send_h2(
        &self,
        endpoint: &Arc<Endpoint>,
        mut request: Request<RequestBody>,
        patient: bool,
    ) -> Result<Exchange, SendError> {
        let addr = endpoint.addr;
        let lease = Lease::new(Arc::clone(endpoint));
        let (mut sender, first, reused) =
            match lease.endpoint().pool.local().h2(addr, patient).await {
                Ok(found) => found,
                Err(error) => return Err(SendError::unsent(error, request)),
            };
        absolute_form(&mut request, addr, self.config.protocol.is_tls());
        if sender.ready().await.is_err() {
            // The connection went away before this stream was opened: nothing was sent.
            return Err(SendError::unsent(
                ProxyError::RefusedStream { endpoint: addr },
                request,
            ));
        }
        match sender.send_request(request).await {
            Ok(response) => Ok(Exchange {
                response: response.map(|body| UpstreamBody::new(body, lease)),
                endpoint: addr,
                reused,
            }),
            Err(e) => Err(SendError {
                error: diagnose(classify_h2(&e, addr), self.config.protocol, &first, !reused),
                reused,
                request: None,
                unread: false,
            }),
        }
    }

    /// Close idle connections past their timeout and expire finished ejections (called by
    /// the reaper task, so that gauges are right even without traffic).
    pub fn reap(&self) {
        for e in &self.endpoints.load().endpoints {
            e.pool.reap();
            e.health.is_ejected(&self.config.outlier, &self.metrics);
        }
    }
}

/// A failure to understand the endpoint, renamed `protocol_mismatch` when its first bytes show
/// it speaks something else than configured.
/// `fresh`: a new connection (an HTTP/2 server always speaks first: its SETTINGS).
fn diagnose(
    error: ProxyError,
    protocol: Protocol,
    first: &sniff::FirstBytes,
    fresh: bool,
) -> ProxyError {
    diagnose_bytes(error, protocol, first.get().map(|b| b.as_slice()), fresh)
}

/// `diagnose` with the first bytes at hand (`first`: none arrived).
pub fn diagnose_bytes(
    error: ProxyError,
    protocol: Protocol,
    first: Option<&[u8]>,
    fresh: bool,
) -> ProxyError {
    let endpoint = match &error {
        ProxyError::UpstreamProtocol { endpoint, .. } | ProxyError::UpstreamReset { endpoint } => {
            *endpoint
        }
        _ => return error,
    };
    let found = match first {
        Some(bytes) => sniff::mismatch(protocol, bytes),
        None if fresh && protocol.is_h2() => Some((
            "no HTTP/2 (it closed the connection on the HTTP/2 preface without a byte)",
            "protocol: http",
        )),
        None => None,
    };
    match found {
        Some((speaks, fix)) => {
            tracing::warn!(%endpoint, configured = protocol.as_str(), speaks, fix, "protocol mismatch: the backend speaks another protocol than configured");
            ProxyError::ProtocolMismatch {
                endpoint,
                speaks,
                fix,
            }
        }
        None => error,
    }
}

/// HTTP/2 carries the scheme and authority as pseudo-headers: give hyper an absolute URI.
fn absolute_form(request: &mut Request<RequestBody>, addr: SocketAddr, tls: bool) {
    let authority = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| addr.to_string());
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let scheme = if tls { "https" } else { "http" };
    if let Ok(uri) = format!("{scheme}://{authority}{path}").parse() {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
}

/// An HTTP/2 failure: REFUSED_STREAM proves the request was not processed (RFC 9113 8.7).
fn classify_h2(e: &hyper::Error, endpoint: SocketAddr) -> ProxyError {
    let refused = e
        .source()
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
        == Some(h2::Reason::REFUSED_STREAM);
    if refused {
        ProxyError::RefusedStream { endpoint }
    } else {
        classify(e, endpoint)
    }
}

/// What a failed exchange means, from hyper's error.
fn classify(e: &hyper::Error, endpoint: SocketAddr) -> ProxyError {
    if e.is_parse_too_large() {
        return ProxyError::UpstreamHeaderTooLarge { endpoint };
    }
    if e.is_parse() || e.is_parse_status() {
        return ProxyError::UpstreamProtocol {
            endpoint,
            reason: e.to_string(),
        };
    }
    if e.is_user() {
        // Our request body failed: the client's body stream broke while we forwarded it.
        let reason = e
            .source()
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        return ProxyError::ClientBody { reason };
    }
    // Incomplete message, canceled (closed before the request was written), reset, EOF: the
    // connection went away before a whole response head arrived.
    ProxyError::UpstreamReset { endpoint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_proves_a_request_unread() {
        let f = |reused, nothing_back, reset, ms, one_write| Failure {
            reused,
            nothing_back,
            reset,
            since_send: Duration::from_millis(ms),
            one_write,
        };
        // reused connection: any reset, or a close within the race window
        assert!(proven_unread(f(true, true, true, 500, None)));
        assert!(proven_unread(f(true, true, false, 5, None)));
        assert!(!proven_unread(f(true, true, false, 50, None)));
        // new connection: a reset with a small request in one write
        assert!(proven_unread(f(false, true, true, 500, Some(300))));
        assert!(!proven_unread(f(
            false,
            true,
            true,
            1,
            Some(UNREAD_MAX_BYTES + 1)
        )));
        assert!(
            !proven_unread(f(false, true, true, 1, None)),
            "written in pieces"
        );
        assert!(
            !proven_unread(f(false, true, false, 1, Some(300))),
            "a FIN: read, then died"
        );
        // anything of a response came back: it was read
        assert!(!proven_unread(f(true, false, true, 1, Some(300))));
    }
}
