//! The response body that goes back to the client, and the record of the request it ends.
//!
//! `ResponseBody` is either a body hitless wrote itself (an error or a route's fixed answer) or
//! the endpoint's streamed body. It carries the request's `RequestLog`: when the body is
//! dropped (fully sent, or the client went away) the log line is written, metrics recorded and
//! the client connection's in-flight count released. One place, so no path can forget it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::attempt::FailedTry;
use super::route::Route;
pub use crate::runtime::clock::now_ms;
use crate::upstream::lease::UpstreamBody;
use crate::upstream::raw_body::RawBody;
use crate::upstream::Admission;

/// One client connection, shared by its requests and its connection task: who the client is
/// (computed once per connection, not per request), and the activity from which the
/// connection task closes idle connections and enforces the header-read timeout.
#[derive(Debug)]
pub struct ClientConn {
    pub addr: SocketAddr,
    /// The client IP as a header value, for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
    /// `http` or `https`: how the client reached hitless.
    pub scheme: &'static str,
    /// The public port of the listener it came in on (`listeners[].public_port`).
    pub port: u16,
    /// Requests whose response has not finished.
    pub in_flight: AtomicU32,
    /// Milliseconds since `epoch()` of the last request start or response end.
    pub last_active_ms: AtomicU64,
    /// Milliseconds since `epoch()` (+1, so 0 means none) when bytes of a request head first
    /// arrived on an otherwise idle connection.
    pub head_started_ms: AtomicU64,
    /// The client speaks HTTP/2 on it.
    pub h2: AtomicBool,
    /// hitless is draining: the connection ends after its current exchange.
    pub closing: AtomicBool,
    /// A request on it was upgraded: the connection is a tunnel's now (its close is the
    /// tunnel's, passed on as is: no lingering close, `inbound/hyper.rs`).
    pub upgraded: AtomicBool,
    /// The last request on it came with a body (`inbound/hyper.rs`: a close right after its
    /// answer may leave the client still sending it, and lingers).
    pub request_body: AtomicBool,
    /// What counts the connection as open (`inbound`'s place under `limits.max_connections`):
    /// held as long as the connection, an upgraded one's tunnel included.
    held: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl ClientConn {
    pub fn new(addr: SocketAddr, scheme: &'static str, port: u16) -> ClientConn {
        ClientConn {
            addr,
            ip_header: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            scheme,
            port,
            in_flight: AtomicU32::new(0),
            last_active_ms: AtomicU64::new(now_ms()),
            head_started_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            request_body: AtomicBool::new(false),
            held: std::sync::OnceLock::new(),
        }
    }

    /// Keep `guard` alive as long as this connection (set once; a second one is dropped).
    pub fn hold(&self, guard: Box<dyn std::any::Any + Send + Sync>) {
        let _ = self.held.set(guard);
    }

    pub fn request_started(&self) {
        // No timestamp here: while `in_flight > 0` the connection is not idle anyway.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the access log line and the metrics need about one request.
pub struct RequestLog {
    pub start: Instant,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub uri: Uri,
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub endpoint: Option<SocketAddr>,
    pub attempts: u32,
    pub cause: Option<&'static str>,
    pub status: u16,
    pub bytes: u64,
    pub access_log: bool,
    pub conn: Arc<ClientConn>,
    /// Tries that failed before the final one (retried, or held).
    pub failed: Vec<FailedTry>,
    /// The request's place under its backend's concurrency limit, freed with the log.
    pub admission: Option<Admission>,
    /// The fault injected into this request (`delay`, `abort`, `reset`), if any.
    pub fault: Option<&'static str>,
}

impl RequestLog {
    /// The log of a request that started at `start`: nothing known yet but its method and
    /// connection; each engine fills in what it learns.
    pub fn new(start: Instant, method: Method, conn: Arc<ClientConn>, access_log: bool) -> Self {
        RequestLog {
            start,
            method,
            host: None,
            uri: Uri::default(),
            request_id: None,
            route: None,
            endpoint: None,
            attempts: 0,
            cause: None,
            status: 0,
            bytes: 0,
            access_log,
            conn,
            failed: Vec::new(),
            admission: None,
            fault: None,
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(route) = &self.route {
            route.metrics.record(self.status, elapsed);
        }
        if self.access_log {
            let host = self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .or_else(|| self.uri.authority().map(|a| a.as_str()))
                .unwrap_or("-");
            tracing::info!(
                target: "hitless::access",
                method = %self.method,
                host,
                path = self.uri.path(),
                status = self.status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes = self.bytes,
                route = self.route.as_ref().map(|r| r.name.as_str()).unwrap_or("-"),
                backend = self.route.as_ref().map(|r| r.backend_name()).unwrap_or("-"),
                endpoint = %self.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                attempts = self.attempts,
                failed_tries = %FailedTries(&self.failed),
                cause = self.cause.unwrap_or("-"),
                fault = self.fault.unwrap_or("-"),
                request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            );
        }
        self.conn.request_finished();
    }
}

/// `endpoint cause duration` of each failed try, comma-separated; `-` when there was none.
struct FailedTries<'a>(&'a [FailedTry]);

impl std::fmt::Display for FailedTries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

// `Raw` is the common case of HTTP/2 streams: boxing it would allocate once per request.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// Read from a raw connection (an HTTP/2 stream's request to an `http` backend).
    Raw(RawBody),
}

/// What a response body fails with: hyper's errors, or a raw body's.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

pub struct ResponseBody {
    kind: Kind,
    log: Option<RequestLog>,
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            log: None,
        }
    }

    pub fn upstream(body: UpstreamBody) -> ResponseBody {
        ResponseBody {
            kind: Kind::Upstream(body),
            log: None,
        }
    }

    pub fn raw(body: RawBody) -> ResponseBody {
        ResponseBody {
            kind: Kind::Raw(body),
            log: None,
        }
    }

    pub fn with_log(mut self, log: RequestLog) -> ResponseBody {
        self.log = Some(log);
        self
    }
}

impl From<Bytes> for ResponseBody {
    fn from(b: Bytes) -> Self {
        ResponseBody::full(b)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Raw(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&polled, &mut this.log) {
            if let Some(data) = frame.data_ref() {
                log.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Raw(body) => body.size_hint(),
        }
    }
}
