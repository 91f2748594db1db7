//! The direct HTTP/1.1 engine: parsing, head serialisation and relaying, as bytes. A plain
//! request (no upgrade, nothing hop-by-hop but `Connection: keep-alive|close`, and a body only
//! when its `Content-Length` is within the route's `retry.max_replay_bytes` and it has arrived
//! with the head) is parsed in place (httparse), routed, and answered here: forwarded to an
//! `http` backend over the raw pooled connections of `upstream/h1.rs` (`RawTry`, the raw
//! transport of the one attempt loop, `attempt.rs`), or answered by hitless itself (no route,
//! a `respond` route, an error). It is how hitless reaches nginx's CPU per request (README,
//! Performance).
//!
//! What it does not take goes to hyper's engine whole (`Parsed::HandOff`: the connection moves
//! there with the bytes read so far): chunked, late or large bodies, upgrades, `Expect`,
//! absolute-form targets, HTTP/1.0, gRPC, routes whose backend is not plain `http`, and routes
//! with method, header or query conditions, header filters, rewrites, redirects or faults
//! (`Route::direct`; a weighted split is drawn here, as there). What it
//! refuses it answers itself (`Parsed::Refused`): a malformed or ambiguous head (400, no Host,
//! two Hosts, invalid Content-Length), CONNECT (405), a head or target over the limit (431,
//! 414); each answer carries `Proxy-Status`, and the connection closes after it.
//!
//! Headers are rewritten by the rules of `headers.rs` over `ByteHead`, the same rules hyper's
//! engine applies to its maps; `tests/direct.rs` checks the two engines agree.
//! Framing of what is relayed is checked strictly (`upstream/h1.rs`): a response whose framing
//! is ambiguous is a 502 before its head is sent, or a close after.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderName, HeaderValue, Method, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::attempt::{self, Plan, Transport};
use super::body::{ClientConn, RequestLog};
use super::headers::{self, Forwarding, Head, Kind};
use super::route::RouteAction;
use super::Proxy;
use crate::error::ProxyError;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::h1::{ChunkedEnd, Framing, RawConn, ResponseHead};
use crate::upstream::lease::Lease;
use crate::upstream::{Backend, SendError, SendOptions};

/// At most this many request header fields on the direct path (more: hyper's engine).
const MAX_HEADERS: usize = 64;
/// Body bytes relayed per read.
const RELAY: usize = 64 * 1024;

/// What `parse` found at the start of the client's buffer.
// `Ready` is the common case: boxing it would allocate once per request to save a move.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Not for this engine: hyper serves the connection from here on (with these bytes).
    HandOff,
    /// A head hitless answers itself with this error; the connection closes after it.
    Refused(ProxyError),
    Ready(Request),
}

/// A request head read by `parse`, with what the rest of the path needs.
pub struct Request {
    /// Bytes of the request (head and body) in the buffer.
    pub len: usize,
    pub method: Method,
    /// The client asked for `Connection: close`.
    pub close: bool,
    pub idempotent: bool,
    pub route: Option<Arc<super::route::Route>>,
    /// The client's, or a new one (then also sent to the backend).
    pub request_id: HeaderValue,
    /// For the access log only (when it is on).
    pub host: Option<HeaderValue>,
    pub uri: Uri,
}

/// The next thing the connection does after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Next,
    Close,
}

/// Bytes of a path the `http` crate's URI parser accepts everywhere (the access log needs a
/// `Uri`); anything else goes to hyper, which answers 400 where it must.
fn plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.iter().all(|&b| {
            (0x21..=0x7e).contains(&b)
                && !matches!(
                    b,
                    b'#' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'}' | b'|' | b'"'
                )
        })
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The fields of a head parsed in place, rewritten by the rules of `headers.rs` straight into
/// the bytes to send: the fields kept are written when the rule adds its first field (every
/// removal comes before), then the added ones.
pub struct ByteHead<'h, 'b> {
    fields: &'h [httparse::Header<'b>],
    /// Bit `i`: `fields[i]` is removed.
    removed: u128,
    /// The kind of each field (`headers::kind`), told once.
    kinds: [Kind; 128],
    out: &'h mut Vec<u8>,
    flushed: bool,
}

impl<'h, 'b> ByteHead<'h, 'b> {
    pub fn new(fields: &'h [httparse::Header<'b>], out: &'h mut Vec<u8>) -> Self {
        let fields = &fields[..fields.len().min(128)];
        let mut kinds = [Kind::Other; 128];
        for (k, f) in kinds.iter_mut().zip(fields) {
            *k = headers::kind(f.name);
        }
        ByteHead {
            fields,
            removed: 0,
            kinds,
            out,
            flushed: false,
        }
    }

    fn flush(&mut self) {
        if self.flushed {
            return;
        }
        self.flushed = true;
        for (i, h) in self.fields.iter().enumerate() {
            if self.removed & (1 << i) != 0 {
                continue;
            }
            header_line(self.out, h.name.as_bytes(), h.value);
        }
    }

    /// Write the fields still to write.
    pub fn finish(mut self) {
        self.flush();
    }
}

impl<'b> Head for ByteHead<'_, 'b> {
    type Value = &'b [u8];

    fn for_each(&self, mut f: impl FnMut(&str, &&'b [u8])) {
        for (i, h) in self.fields.iter().enumerate() {
            if self.removed & (1 << i) != 0 {
                continue;
            }
            f(h.name, &h.value);
        }
    }

    fn remove(&mut self, name: &str) {
        for (i, h) in self.fields.iter().enumerate() {
            if h.name.eq_ignore_ascii_case(name) {
                self.removed |= 1 << i;
            }
        }
    }

    fn remove_kind(&mut self, k: Kind) {
        for (i, kind) in self.kinds[..self.fields.len()].iter().enumerate() {
            if *kind == k {
                self.removed |= 1 << i;
            }
        }
    }

    fn for_each_kind(&self, mut f: impl FnMut(Kind, &str, &&'b [u8])) {
        for (i, (h, k)) in self.fields.iter().zip(self.kinds).enumerate() {
            if self.removed & (1 << i) != 0 {
                continue;
            }
            f(k, h.name, &h.value);
        }
    }

    fn add(&mut self, name: &HeaderName, parts: &[&[u8]]) {
        self.flush();
        let name = name.as_str().as_bytes();
        let len = name.len() + 4 + parts.iter().map(|p| p.len()).sum::<usize>();
        self.out.reserve(len);
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

/// What `parse` refuses, by what was too long: the request line alone (414) or the head.
fn too_large(buf: &[u8], max_head: usize) -> ProxyError {
    let line = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(buf.len());
    if line > max_head {
        ProxyError::UriTooLong
    } else {
        ProxyError::RequestHeaderTooLarge
    }
}

/// A request's `Content-Length`: digits only, one field.
fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Read the request head at the start of `buf`. For a request to a direct backend, the head
/// to send (rewritten) and its body are written into `upstream` (cleared first).
pub fn parse(
    proxy: &Proxy,
    buf: &[u8],
    conn: &ClientConn,
    upstream: &mut Vec<u8>,
    max_head: usize,
) -> Parsed {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Parsed::Refused(too_large(buf, max_head))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // More fields than here: hyper takes up to its own limit.
        Err(httparse::Error::TooManyHeaders) => return Parsed::HandOff,
        Err(_) => {
            return Parsed::Refused(ProxyError::BadRequest {
                reason: "malformed request head",
            })
        }
    };
    if len > max_head {
        return Parsed::Refused(too_large(buf, max_head));
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parsed::HandOff;
    };
    if method == "CONNECT" {
        return Parsed::Refused(ProxyError::MethodNotAllowed { method: "CONNECT" });
    }
    // HTTP/1.0 keep-alive rules and absolute-form targets: hyper's.
    if version != 1 || !plain_target(target.as_bytes()) {
        return Parsed::HandOff;
    }
    let mut host = None;
    let mut close = false;
    let mut idempotency_key = false;
    let mut body_len: Option<u64> = None;
    for h in request.headers.iter() {
        let n = h.name;
        if eq(n, "host") {
            if host.is_some() {
                return Parsed::Refused(ProxyError::BadRequest {
                    reason: "more than one Host header",
                });
            }
            host = Some(h.value);
        } else if eq(n, "content-length") {
            match (body_len, content_length(h.value)) {
                (None, Some(n)) => body_len = Some(n),
                _ => {
                    return Parsed::Refused(ProxyError::BadRequest {
                        reason: "invalid or repeated Content-Length",
                    })
                }
            }
        } else if eq(n, "connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::HandOff;
                }
            }
        } else if eq(n, "idempotency-key") {
            idempotency_key = true;
        } else if headers::is_hop_by_hop(n)
            || eq(n, "expect")
            || (eq(n, "content-type") && h.value.starts_with(b"application/grpc"))
        {
            return Parsed::HandOff;
        }
    }
    let Some(host_bytes) = host else {
        return Parsed::Refused(ProxyError::BadRequest {
            reason: "no Host header",
        });
    };
    let (Ok(host), Ok(method)) = (
        std::str::from_utf8(host_bytes),
        Method::from_bytes(method.as_bytes()),
    ) else {
        return Parsed::HandOff;
    };
    let path = target.split('?').next().unwrap_or(target);
    let router = proxy.router.load();
    // The first route by host and path. Method, header and query conditions, header
    // filters, rewrites, redirects and faults are hyper's engine's alone (one place for
    // each), as are backends other than plain `http`: such a candidate goes there whole, and
    // hyper's engine matches the request again in full.
    let route = router
        .find(conn.port, host, path)
        .map(|r| Arc::clone(r.pick()));
    let forward = match route.as_deref() {
        Some(r) if !r.direct => return Parsed::HandOff,
        Some(r) => matches!(r.action, RouteAction::Forward(_)),
        None => false,
    };
    // A body goes the direct way when it can be sent again (as hyper's engine would hold it)
    // and is here already; otherwise hyper reads it.
    let Ok(body_len) = usize::try_from(body_len.unwrap_or(0)) else {
        return Parsed::HandOff;
    };
    let body_here = buf
        .len()
        .checked_sub(len)
        .is_some_and(|rest| rest >= body_len);
    if body_len > 0
        && !(forward
            && route
                .as_ref()
                .is_some_and(|r| body_len <= r.retry.max_replay_bytes)
            && body_here)
    {
        return Parsed::HandOff;
    }
    let request_id = if forward {
        upstream.clear();
        upstream.extend_from_slice(method.as_str().as_bytes());
        upstream.push(b' ');
        upstream.extend_from_slice(target.as_bytes());
        upstream.extend_from_slice(b" HTTP/1.1\r\n");
        let mut head = ByteHead::new(request.headers, upstream);
        let id = headers::rewrite_request(
            &mut head,
            &Forwarding {
                client_ip: conn.ip_header.as_bytes(),
                https: conn.scheme == "https",
                authority: None,
                keep_underscores: proxy.keep_underscores,
            },
            headers::new_request_id,
        );
        head.finish();
        upstream.extend_from_slice(b"\r\n");
        if let Some(body) = buf.get(len..len + body_len) {
            upstream.extend_from_slice(body);
        }
        id.value
    } else {
        request
            .headers
            .iter()
            .find(|h| eq(h.name, "x-request-id") && !h.value.is_empty())
            .and_then(|h| HeaderValue::from_bytes(h.value).ok())
            .unwrap_or_else(headers::new_request_id)
    };
    let access_log = proxy.access_log;
    Parsed::Ready(Request {
        len: len + body_len,
        idempotent: attempt::idempotent(
            &method,
            route.as_ref().is_some_and(|r| r.retry.idempotent),
            idempotency_key,
        ),
        method,
        close,
        route,
        request_id,
        host: if access_log {
            HeaderValue::from_str(host).ok()
        } else {
            None
        },
        uri: if access_log {
            target.parse().unwrap_or_default()
        } else {
            Uri::default()
        },
    })
}

/// One `name: value` line of an HTTP/1.1 head (also `stream.rs`'s request heads).
pub(super) fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(code.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The raw transport: a request's bytes (head and body, in memory) written on a raw pooled
/// connection, and the response head parsed as it comes, the client's head written from it
/// into `out` (the rules of `headers.rs`, then the framing this engine relays with).
pub struct RawTry<'a> {
    /// The request to send, as bytes.
    bytes: &'a [u8],
    head_request: bool,
    /// The client's response head, built while the response head is parsed.
    out: &'a mut Vec<u8>,
    request_id: &'a HeaderValue,
    /// The client's connection closes after this answer.
    close: bool,
}

/// A response head from an endpoint, with its connection and the lease on the endpoint.
pub struct RawAnswer {
    up: RawConn,
    head: ResponseHead,
    lease: Lease,
}

impl Transport for RawTry<'_> {
    type Answer = RawAnswer;

    async fn send(
        &mut self,
        backend: &Backend,
        endpoint: &Arc<Endpoint>,
        options: SendOptions,
        _keep_copy: bool,
    ) -> Result<RawAnswer, SendError> {
        let out = &mut *self.out;
        let request_id = self.request_id;
        let exchange = backend
            .send_raw(
                endpoint,
                self.bytes,
                self.head_request,
                options,
                |status, framing, fields| {
                    out.clear();
                    status_line(out, status);
                    let mut head = ByteHead::new(fields, out);
                    // The framing this engine relays with (`relay`).
                    if !framing.keeps_length(status) {
                        head.remove("content-length");
                    }
                    headers::rewrite_response(&mut head, request_id);
                    head.finish();
                },
            )
            .await?;
        // A body the upstream's close delimits goes to the client chunked (`relay_until_close`).
        if matches!(exchange.head.framing, Framing::Chunked | Framing::Close) {
            header_line(out, b"transfer-encoding", b"chunked");
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(RawAnswer {
            up: exchange.conn,
            head: exchange.head,
            lease: exchange.lease,
        })
    }

    fn status(answer: &RawAnswer) -> u16 {
        answer.head.status
    }

    fn resendable(&self) -> bool {
        true
    }

    fn has_request(&self) -> bool {
        true
    }
}

impl Proxy {
    /// Answer the request `parse` returned, whose head and body are the start of the client's
    /// buffer. `upstream`: what to send the backend (`parse` wrote it for forwarded requests).
    pub async fn serve_direct<S>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        upstream: &[u8],
        request: Request,
        conn: &Arc<ClientConn>,
        closing: bool,
    ) -> Step
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        conn.request_started();
        let start = Instant::now();
        let close = closing || request.close;
        let head_request = request.method == Method::HEAD;
        let Request {
            method,
            host,
            uri,
            route,
            request_id,
            idempotent,
            ..
        } = request;
        let mut log = RequestLog::new(start, method, Arc::clone(conn), self.access_log);
        log.host = host;
        log.uri = uri;
        log.request_id = Some(request_id.clone());
        log.route = route.clone();
        let Some(route) = route.as_ref() else {
            // Boxed, as every answer hitless writes itself: rare on this path, and inline its
            // future would make every request's larger.
            return Box::pin(self.write_error(
                client,
                out,
                ProxyError::NoRoute,
                log,
                head_request,
                close,
            ))
            .await;
        };
        let backend = match &route.action {
            RouteAction::Respond(fixed) => {
                out.clear();
                status_line(out, fixed.status.as_u16());
                for (name, value) in &fixed.headers {
                    header_line(out, name.as_str().as_bytes(), value.as_bytes());
                }
                log.status = fixed.status.as_u16();
                return Box::pin(write_generated(
                    client,
                    out,
                    &request_id,
                    &fixed.body,
                    fixed.status.as_u16(),
                    head_request,
                    close,
                ))
                .await;
            }
            RouteAction::Forward(backend) => backend,
            // Not reached: `parse` takes only direct routes, picked (redirects are hyper's).
            RouteAction::Split(_) | RouteAction::Redirect(_) => {
                let error = ProxyError::NoRoute;
                return Box::pin(self.write_error(client, out, error, log, head_request, close))
                    .await;
            }
        };
        let Some(admission) = backend.admit() else {
            let error = ProxyError::Overloaded {
                backend: backend.name.clone(),
            };
            return Box::pin(self.write_error(client, out, error, log, head_request, close)).await;
        };
        log.admission = Some(admission);
        let plan = Plan::new(route, backend, start, None, idempotent);
        let mut transport = RawTry {
            bytes: upstream,
            head_request,
            out,
            request_id: &request_id,
            close,
        };
        let outcome = attempt::run(route, backend, &mut transport, &plan).await;
        log.attempts = outcome.attempts;
        log.endpoint = outcome.endpoint;
        log.failed = outcome.failed;
        let out = transport.out;
        let answer = match outcome.result {
            Ok(answer) => answer,
            Err(error) => {
                return Box::pin(self.write_error(client, out, error, log, head_request, close))
                    .await
            }
        };
        // The answer: from here the client sees it, whatever happens.
        let RawAnswer {
            mut up,
            head,
            lease,
        } = answer;
        log.status = head.status;
        let relayed = relay(client, out, &mut up, head.framing).await;
        let step = match relayed {
            Ok(bytes) => {
                log.bytes = bytes;
                if head.keep_alive {
                    lease.endpoint().pool.local().checkin_raw(up);
                }
                if close {
                    Step::Close
                } else {
                    Step::Next
                }
            }
            Err(bytes) => {
                log.bytes = bytes;
                Step::Close
            }
        };
        drop(lease);
        drop(log);
        step
    }

    /// Answer a head `parse` refused (400, 405, 414, 431); the connection closes after it.
    pub async fn refuse_direct<S>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        error: ProxyError,
        conn: &Arc<ClientConn>,
    ) where
        S: AsyncWrite + Unpin,
    {
        conn.request_started();
        // The head could not be read: its method is not known.
        let method = Method::from_bytes(b"-").unwrap_or(Method::GET);
        let mut log = RequestLog::new(Instant::now(), method, Arc::clone(conn), self.access_log);
        log.request_id = Some(headers::new_request_id());
        self.write_error(client, out, error, log, false, true).await;
    }

    /// Write hitless's own answer for `error` (status, `Proxy-Status`, a short text body).
    async fn write_error<S>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        error: ProxyError,
        mut log: RequestLog,
        head_request: bool,
        close: bool,
    ) -> Step
    where
        S: AsyncWrite + Unpin,
    {
        self.metrics().proxy_error(error.cause_index());
        let response: http::Response<Bytes> = error.to_response(false);
        let status = response.status().as_u16();
        out.clear();
        status_line(out, status);
        for (name, value) in response.headers() {
            header_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
        log.status = status;
        log.cause = Some(error.cause());
        let id = log
            .request_id
            .clone()
            .unwrap_or_else(headers::new_request_id);
        let step = write_generated(
            client,
            out,
            &id,
            response.body(),
            status,
            head_request,
            close || error.closes_connection(),
        )
        .await;
        drop(log);
        step
    }
}

/// Finish and write an answer hitless produced whose status line and own headers are in
/// `out`: the request id, `Date`, the body's length (none on 204 and 304), `Connection: close`
/// when the connection ends, then the body (not for HEAD).
async fn write_generated<S>(
    client: &mut S,
    out: &mut Vec<u8>,
    request_id: &HeaderValue,
    body: &Bytes,
    status: u16,
    head_request: bool,
    close: bool,
) -> Step
where
    S: AsyncWrite + Unpin,
{
    header_line(out, b"x-request-id", request_id.as_bytes());
    header_line(out, b"date", headers::http_date().as_bytes());
    let bodyless_status = status == 204 || status == 304;
    if !bodyless_status {
        header_line(out, b"content-length", body.len().to_string().as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request && !bodyless_status {
        out.extend_from_slice(body);
    }
    let written = client.write_all(out).await;
    out.clear();
    if written.is_err() || close {
        Step::Close
    } else {
        Step::Next
    }
}

/// Send the head in `out` and the body that follows it in `up`, delimited by `framing`.
/// `Ok(payload bytes)` when the body ended as announced and `up` can be reused; `Err` when
/// either side failed (the client connection must close then).
async fn relay<S>(
    client: &mut S,
    out: &mut Vec<u8>,
    up: &mut RawConn,
    framing: Framing,
) -> Result<u64, u64>
where
    S: AsyncWrite + Unpin,
{
    if framing == Framing::Close {
        return relay_until_close(client, out, up).await;
    }
    let mut chunked = ChunkedEnd::default();
    let mut left = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::Close => u64::MAX,
    };
    let mut sent = 0u64;
    loop {
        // What of the buffer belongs to this body, and whether the body ends with it.
        let (take, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = usize::try_from((up.buf.len() as u64).min(left)).unwrap_or(0);
                (take, take as u64 == left)
            }
            Framing::Chunked => match chunked.scan(&up.buf) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (up.buf.len(), false),
                Err(_) => {
                    // Nothing of the invalid part is relayed; the client sees a cut body.
                    if !out.is_empty() {
                        let _ = client.write_all(out).await;
                        out.clear();
                    }
                    return Err(sent);
                }
            },
            // `relay_until_close`'s.
            Framing::Close => (up.buf.len(), false),
        };
        if framing != Framing::Chunked {
            sent += take as u64;
        }
        left = left.saturating_sub(take as u64);
        if out.len() + take <= RELAY {
            out.extend_from_slice(&up.buf[..take]);
            up.buf.advance(take);
            if done || out.len() >= RELAY / 2 {
                if client.write_all(out).await.is_err() {
                    return Err(sent);
                }
                out.clear();
            }
        } else {
            if !out.is_empty() {
                if client.write_all(out).await.is_err() {
                    return Err(sent);
                }
                out.clear();
            }
            if client.write_all(&up.buf[..take]).await.is_err() {
                return Err(sent);
            }
            up.buf.advance(take);
        }
        if done {
            if framing == Framing::Chunked {
                sent = chunked.data;
            }
            if !out.is_empty() {
                if client.write_all(out).await.is_err() {
                    return Err(sent);
                }
                out.clear();
            }
            return Ok(sent);
        }
        // Flush what is pending before waiting for the upstream: a slow stream (server-sent
        // events) must reach the client as it comes.
        if !out.is_empty() {
            if client.write_all(out).await.is_err() {
                return Err(sent);
            }
            out.clear();
        }
        up.buf.clear();
        up.buf.reserve(RELAY);
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) | Err(_) => return Err(sent),
            Ok(_) => {}
        }
    }
}

/// A body the upstream's close delimits, relayed in chunks: the client tells its end (the
/// last chunk, sent at a clean close) from a cut (a reset, a crash mid-body), which its own
/// connection's close could not say, and its connection stays open for the next request.
async fn relay_until_close<S>(
    client: &mut S,
    out: &mut Vec<u8>,
    up: &mut RawConn,
) -> Result<u64, u64>
where
    S: AsyncWrite + Unpin,
{
    use std::io::Write;
    let mut sent = 0u64;
    loop {
        if !up.buf.is_empty() {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", up.buf.len());
            out.extend_from_slice(&up.buf);
            out.extend_from_slice(b"\r\n");
            sent = sent.saturating_add(up.buf.len() as u64);
            up.buf.clear();
        }
        if !out.is_empty() {
            if client.write_all(out).await.is_err() {
                return Err(sent);
            }
            out.clear();
        }
        up.buf.reserve(RELAY);
        match up.stream.read_buf(&mut up.buf).await {
            // After a reset under the request's write, the end is that reset (`send_raw`).
            Ok(0) if !up.reset => {
                return match client.write_all(b"0\r\n\r\n").await {
                    Ok(()) => Ok(sent),
                    Err(_) => Err(sent),
                };
            }
            Ok(0) | Err(_) => return Err(sent),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_the_uri_parser_takes() {
        assert!(plain_target(b"/a/b?c=d&e=%20"));
        assert!(!plain_target(b"*"));
        assert!(!plain_target(b"http://x/"));
        assert!(!plain_target(b"/a#frag"));
        assert!(!plain_target(b"/a{b}"));
    }

    #[test]
    fn mutated_heads_never_panic_and_what_is_taken_parses() {
        let yaml = "backends:\n  app: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - backend: app\n";
        let config = crate::config::Config::from_yaml(yaml).unwrap();
        let metrics = crate::runtime::metrics::Metrics::new(&ProxyError::CAUSES);
        let (router, _backends) = crate::app::build_router(&config, &metrics, 1);
        let proxy = Proxy::new(router, Arc::new(metrics), false, &config.downstream);
        let conn = ClientConn::new(([10, 0, 0, 1], 1234).into(), "http", 80);
        let seed = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: abc\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        let alphabet = b"\r\n :;,/?#%\t\x00\x7f\xffGETHOSTa0_";
        let mut next = crate::upstream::h1::test_rng(0x9e37_79b9_7f4a_7c15);
        let mut upstream = Vec::new();
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut head = seed.to_vec();
            for _ in 0..1 + next(4) {
                let at = next(head.len());
                match next(3) {
                    0 => head[at] = alphabet[next(alphabet.len())],
                    1 => head.insert(at, alphabet[next(alphabet.len())]),
                    _ => {
                        head.remove(at);
                    }
                }
            }
            if let Parsed::Ready(_) = parse(&proxy, &head, &conn, &mut upstream, 65536) {
                taken += 1;
                let mut fields = [httparse::EMPTY_HEADER; 80];
                let mut sent = httparse::Request::new(&mut fields);
                assert!(
                    matches!(sent.parse(&upstream), Ok(httparse::Status::Complete(n)) if n == upstream.len()),
                    "{:?}",
                    String::from_utf8_lossy(&upstream)
                );
            }
        }
        assert!(
            taken > 1000,
            "the mutations must leave many requests plain ({taken})"
        );
    }
}
