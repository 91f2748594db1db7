//! The direct HTTP/1.1 path: a plain request (no upgrade, nothing hop-by-hop but
//! `Connection: keep-alive|close`, and a body only when its `Content-Length` is within the
//! route's `retry.max_replay_bytes` and it has arrived with the head) to a plain `http`
//! backend is read, rewritten and forwarded as bytes, and its response relayed as bytes, over
//! the raw connections of `upstream/h1.rs`.
//! It is how hitless reaches nginx's CPU per request (see README, Benchmarks).
//!
//! It makes the first try only. Everything else goes to the general path (`Proxy::answer`,
//! hyper types) with what that try learnt (`attempt::Prior`), so retries, holds, budgets and
//! error answers are the same code for every request:
//! - a request the path does not take (route answers itself, TLS or HTTP/2 backend, no
//!   endpoint, over the concurrency limit) goes there untouched;
//! - a try that failed before a response head (refused, reset, timed out, the keep-alive
//!   race, an invalid head) continues there as a failed first try;
//! - an answer the route retries on (502/503/504 per `retry.on`) continues there as retried.
//!
//! Header rewriting is the same as `headers.rs` does with hyper's maps (hop-by-hop removed,
//! `X-Forwarded-*` set, `x-request-id` both ways); `tests/direct.rs` checks the two paths
//! agree byte for byte.

use std::sync::Arc;

use bytes::Buf;
use http::{HeaderValue, Method, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::attempt::{self, Prior};
use super::body::{ClientConn, RequestLog, ResponseBody};
use super::headers;
use super::route::{Route, RouteAction};
use super::Proxy;
use crate::config::Protocol;
use crate::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::h1::{self, ChunkedEnd, Framing, HeadError, Part, RawConn};
use crate::upstream::lease::Lease;
use crate::upstream::{proven_unread, Backend, Failure, SendError};

/// At most this many request header fields on the direct path (more: the general path).
const MAX_HEADERS: usize = 64;
/// Body bytes relayed per read.
const RELAY: usize = 64 * 1024;

/// What `parse` found at the start of the client's buffer.
// `Ready` is the common case: boxing it would allocate once per request to save a move.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Not for this path: hyper serves the connection from here on (with these bytes).
    HandOff,
    Ready(Request),
}

/// A request head read by `parse`, with what the rest of the path needs.
pub struct Request {
    /// Bytes of the request (head and body) in the buffer.
    pub len: usize,
    /// Bytes of the head; the body follows it.
    pub head_len: usize,
    pub method: Method,
    /// The client asked for `Connection: close`.
    pub close: bool,
    pub idempotent: bool,
    pub route: Option<Arc<Route>>,
    /// Whether `upstream` holds the head to send (the route forwards to a direct backend).
    pub direct: bool,
    /// The client's, or one made for the direct try (then also the general path's).
    pub request_id: Option<HeaderValue>,
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

/// Whether a backend's requests can go the direct way.
fn direct_backend(backend: &Backend) -> bool {
    backend.config.protocol == Protocol::Http && backend.config.tls.is_none()
}

/// Bytes of a path the `http` crate's URI parser accepts everywhere (`Proxy::answer` needs a
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

/// Read the request head at the start of `buf`. For a request to a direct backend, the head
/// to send is written into `upstream` (cleared first).
pub fn parse(proxy: &Proxy, buf: &[u8], conn: &ClientConn, upstream: &mut Vec<u8>) -> Parsed {
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Malformed, or more fields than here: hyper answers (400, 431) or serves it.
        Err(_) => return Parsed::HandOff,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::HandOff;
    };
    if !plain_target(target.as_bytes()) {
        return Parsed::HandOff;
    }
    let mut host = None;
    let mut close = false;
    let mut request_id = None;
    let mut forwarded_for = None;
    let mut idempotency_key = false;
    let mut content_length: Option<u64> = None;
    for h in request.headers.iter() {
        let n = h.name;
        if eq(n, "host") {
            if host.is_some() {
                return Parsed::HandOff;
            }
            host = Some(h.value);
        } else if eq(n, "content-length") {
            let digits = !h.value.is_empty() && h.value.len() <= 18;
            if content_length.is_some() || !digits || !h.value.iter().all(u8::is_ascii_digit) {
                return Parsed::HandOff;
            }
            content_length = Some(h.value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')));
        } else if eq(n, "connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::HandOff;
                }
            }
        } else if eq(n, "x-request-id") {
            if request_id.is_some() {
                return Parsed::HandOff;
            }
            request_id = Some(h.value);
        } else if eq(n, "x-forwarded-for") {
            if forwarded_for.is_some() {
                return Parsed::HandOff;
            }
            forwarded_for = Some(h.value);
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
        return Parsed::HandOff;
    };
    let Ok(host) = std::str::from_utf8(host_bytes) else {
        return Parsed::HandOff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOff;
    };
    let path = target.split('?').next().unwrap_or(target);
    let router = proxy.router.load();
    let route = router.find(host, path).cloned();
    let direct = matches!(&route, Some(r) if matches!(&r.action, RouteAction::Forward(b) if direct_backend(b)));
    let request_id = match request_id {
        Some(id) if !id.is_empty() => match HeaderValue::from_bytes(id) {
            Ok(id) => Some(id),
            Err(_) => return Parsed::HandOff,
        },
        // Otherwise `Proxy::answer` makes one.
        _ if direct => Some(headers::new_request_id()),
        _ => None,
    };
    // A body goes the direct way when it can be sent again (as the general path would hold
    // it) and is here already; otherwise hyper reads it.
    let Ok(body_len) = usize::try_from(content_length.unwrap_or(0)) else {
        return Parsed::HandOff;
    };
    if body_len > 0
        && !(direct
            && route
                .as_ref()
                .is_some_and(|r| body_len <= r.retry.max_replay_bytes)
            && buf.len() - len >= body_len)
    {
        return Parsed::HandOff;
    }
    if let (true, Some(request_id)) = (direct, &request_id) {
        upstream.clear();
        upstream.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
        upstream.push(b' ');
        upstream.extend_from_slice(target.as_bytes());
        upstream.extend_from_slice(b" HTTP/1.1\r\n");
        for h in request.headers.iter() {
            let n = h.name;
            if eq(n, "connection")
                || eq(n, "x-forwarded-for")
                || eq(n, "x-forwarded-proto")
                || eq(n, "x-forwarded-host")
                || eq(n, "x-request-id")
            {
                continue;
            }
            header_line(upstream, n.as_bytes(), h.value);
        }
        upstream.extend_from_slice(b"x-forwarded-for: ");
        if let Some(previous) = forwarded_for {
            upstream.extend_from_slice(previous);
            upstream.extend_from_slice(b", ");
        }
        upstream.extend_from_slice(conn.ip_header.as_bytes());
        upstream.extend_from_slice(if conn.scheme == "https" {
            b"\r\nx-forwarded-proto: https\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n"
        });
        header_line(upstream, b"x-forwarded-host", host_bytes);
        // (The client's Content-Length went through with the other headers.)
        header_line(upstream, b"x-request-id", request_id.as_bytes());
        upstream.extend_from_slice(b"\r\n");
        upstream.extend_from_slice(&buf[len..len + body_len]);
    }
    let access_log = proxy.access_log;
    Parsed::Ready(Request {
        len: len + body_len,
        head_len: len,
        idempotent: attempt::idempotent(
            &method,
            route.as_ref().is_some_and(|r| r.retry.idempotent),
            idempotency_key,
        ),
        method,
        close,
        route,
        direct,
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

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request's head as hyper would have given it to `Proxy::handle`.
fn parts_of(head: &[u8]) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).ok()?;
    let mut builder = http::Request::builder()
        .method(request.method?)
        .uri(request.path?)
        .version(http::Version::HTTP_11);
    for h in request.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}

/// A failure of the direct try, as `Backend::send` would have reported it.
fn failed(error: ProxyError, unread: bool, reused: bool) -> SendError {
    SendError {
        error,
        reused,
        request: None,
        unread,
    }
}

impl Proxy {
    /// Answer the request `parse` returned, whose head and body are `message` (the start of
    /// the client's buffer). `upstream`: what to send the backend when `request.direct`.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve_direct<S>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        message: &[u8],
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
        let prior = match (&request.route, request.direct) {
            (Some(route), true) => {
                match self
                    .try_direct(client, out, upstream, &request, route, conn, start, close)
                    .await
                {
                    Ok(step) => return step,
                    Err(prior) => prior,
                }
            }
            _ => None,
        };
        let head_request = request.method == Method::HEAD;
        let Some(mut parts) = parts_of(message) else {
            // `parse` admits only what parses; should that ever differ, answer as hyper would.
            conn.request_finished();
            let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = client.write_all(bad).await;
            return Step::Close;
        };
        if let Some(id) = &request.request_id {
            // The id the direct try sent is the request's, on every try.
            parts.headers.insert(&headers::X_REQUEST_ID, id.clone());
        }
        let body = RequestBody::from(bytes::Bytes::copy_from_slice(&message[request.head_len..]));
        let response = Box::pin(self.answer(parts, body, Arc::clone(conn), start, prior)).await;
        write_response(client, out, response, head_request, close).await
    }

    /// The first try, made here. `Err`: the general path takes the request over (with the
    /// try's outcome, or `None` when none was made).
    #[allow(clippy::too_many_arguments)]
    async fn try_direct<S>(
        &self,
        client: &mut S,
        out: &mut Vec<u8>,
        upstream: &[u8],
        request: &Request,
        route: &Arc<Route>,
        conn: &Arc<ClientConn>,
        start: Instant,
        close: bool,
    ) -> Result<Step, Option<Prior>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (RouteAction::Forward(backend), Some(request_id)) =
            (&route.action, &request.request_id)
        else {
            return Err(None);
        };
        let Some(admission) = backend.admit() else {
            return Err(None);
        };
        let Some(endpoint) = backend.pick_excluding(&[]) else {
            return Err(None);
        };
        backend.budget.deposit();
        let addr = endpoint.addr;
        let lease = Lease::new(Arc::clone(&endpoint));
        let pool = endpoint.pool.local();
        let deadline = start + route.request_timeout;
        let try_deadline = start + route.backend_request_timeout;
        let (limit, on_timeout) = if try_deadline < deadline {
            (try_deadline, ProxyError::BackendTimeout { endpoint: addr })
        } else {
            (deadline, ProxyError::RequestTimeout)
        };
        let max_head = pool.settings().max_response_header_bytes;
        let keepalive = &endpoint.pool.keepalive;
        let careful = !request.idempotent;
        let patient = route.retry.attempts <= 1 || !route.retry.on.connect_failure;

        out.clear();
        // Whether `out` holds a Content-Length line.
        let mut has_length = false;
        let exchange = async {
            let (mut up, reused) = match pool.checkout_raw(addr, careful, patient).await {
                Ok(found) => found,
                Err(error) => return Err(failed(error, false, false)),
            };
            let sent_at = Instant::now();
            if up.stream.write_all(upstream).await.is_err() {
                // The upstream had reset the connection before the request went out.
                let unread = proven_unread(Failure {
                    reused,
                    nothing_back: true,
                    reset: true,
                    since_send: sent_at.elapsed(),
                    one_write: Some(upstream.len()),
                });
                let error = ProxyError::UpstreamReset { endpoint: addr };
                return Err(failed(error, unread, reused));
            }
            up.buf.clear();
            loop {
                let parsed = h1::parse_response(
                    &mut up.buf,
                    request.method == Method::HEAD,
                    max_head,
                    |part| match part {
                        Part::Status(status) => status_line(out, status),
                        Part::Header(name, value) => {
                            if eq(name, "keep-alive") {
                                keepalive.announced(value, addr, &backend.metrics);
                            }
                            if hop_by_hop_response(name) {
                                return;
                            }
                            has_length |= eq(name, "content-length");
                            header_line(out, name.as_bytes(), value);
                        }
                    },
                );
                match parsed {
                    Ok(Some(head)) => return Ok((up, head)),
                    Ok(None) => {}
                    Err(HeadError::TooLarge) => {
                        let error = ProxyError::UpstreamHeaderTooLarge { endpoint: addr };
                        return Err(failed(error, false, reused));
                    }
                    Err(HeadError::Invalid(reason)) => {
                        let error = ProxyError::UpstreamProtocol {
                            endpoint: addr,
                            reason: reason.to_string(),
                        };
                        let first = (!reused).then_some(&up.buf[..]);
                        let error =
                            crate::upstream::diagnose_bytes(error, Protocol::Http, first, !reused);
                        return Err(failed(error, false, reused));
                    }
                }
                out.clear();
                has_length = false;
                if up.buf.capacity() - up.buf.len() < 1024 {
                    up.buf.reserve(h1::READ_BUF);
                }
                let had = up.buf.len();
                let read = up.stream.read_buf(&mut up.buf).await;
                let reset = match read {
                    Ok(0) => false,
                    Ok(_) => continue,
                    Err(e) => matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ),
                };
                // Closed (or reset) before a whole head: was the request read?
                let unread = proven_unread(Failure {
                    reused,
                    nothing_back: had == 0,
                    reset,
                    since_send: sent_at.elapsed(),
                    one_write: Some(upstream.len()),
                });
                let error = ProxyError::UpstreamReset { endpoint: addr };
                return Err(failed(error, unread, reused));
            }
        };
        let started = start;
        let (mut up, head) = match tokio::time::timeout_at(limit, exchange).await {
            Ok(Ok(exchanged)) => exchanged,
            Ok(Err(failure)) => {
                drop((lease, admission));
                return Err(Some(Prior::Failed {
                    endpoint,
                    failure: Box::new(failure),
                    started,
                }));
            }
            Err(_) => {
                drop((lease, admission));
                return Err(Some(Prior::Failed {
                    endpoint,
                    failure: Box::new(failed(on_timeout, false, false)),
                    started,
                }));
            }
        };
        let status = head.status;
        backend.report(&endpoint, Ok(status));
        if attempt::retry_on_status(route, backend, status, request.idempotent, 1) {
            drop((up, lease, admission));
            return Err(Some(Prior::Retried {
                endpoint: addr,
                status,
                elapsed: started.elapsed(),
            }));
        }

        // The answer: from here the client sees it, whatever happens.
        let mut log = RequestLog {
            start,
            method: request.method.clone(),
            host: request.host.clone(),
            uri: request.uri.clone(),
            request_id: Some(request_id.clone()),
            route: Some(Arc::clone(route)),
            endpoint: Some(addr),
            attempts: 1,
            cause: None,
            status,
            bytes: 0,
            access_log: self.access_log,
            conn: Arc::clone(conn),
            failed: Vec::new(),
            admission: Some(admission),
        };
        let length_dropped = head.framing == Framing::Chunked || head.framing == Framing::Close;
        if head.connection_names || (length_dropped && has_length) {
            // Rare: headers to leave out that the first pass could not know of yet.
            out.clear();
            status_line(out, status);
            client_headers(&up.buf[..head.len], length_dropped, out);
        }
        let close = close || head.framing == Framing::Close;
        if head.framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        header_line(out, b"x-request-id", request_id.as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        up.buf.advance(head.len);

        let relayed = relay(client, out, &mut up, head.framing).await;
        let step = match relayed {
            Ok(bytes) => {
                log.bytes = bytes;
                if head.keep_alive {
                    pool.checkin_raw(up);
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
        Ok(step)
    }
}

/// Response headers that do not cross the proxy (`headers.rs`), and the id hitless sets.
fn hop_by_hop_response(name: &str) -> bool {
    headers::is_hop_by_hop(name) || eq(name, "x-request-id")
}

/// The client's header lines from a response head: without the hop-by-hop ones, those its
/// `Connection` names, and Content-Length when `drop_length` (framed by a transfer coding).
fn client_headers(head: &[u8], drop_length: bool, out: &mut Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if response.parse(head).is_err() {
        return;
    }
    let named: Vec<&[u8]> = response
        .headers
        .iter()
        .filter(|h| eq(h.name, "connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .collect();
    for h in response.headers.iter() {
        let name = h.name;
        if hop_by_hop_response(name)
            || (drop_length && eq(name, "content-length"))
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        header_line(out, name.as_bytes(), h.value);
    }
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(code.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
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
                let take = (up.buf.len() as u64).min(left) as usize;
                (take, take as u64 == left)
            }
            Framing::Chunked => match chunked.scan(&up.buf) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (up.buf.len(), false),
                Err(_) => return Err(sent),
            },
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
            Ok(0) if framing == Framing::Close => return Ok(sent),
            Ok(0) | Err(_) => return Err(sent),
            Ok(_) => {}
        }
    }
}

/// Write a response from the general path (hyper types) to the client.
async fn write_response<S>(
    client: &mut S,
    out: &mut Vec<u8>,
    response: http::Response<ResponseBody>,
    head_request: bool,
    close: bool,
) -> Step
where
    S: AsyncWrite + Unpin,
{
    use http_body::Body;
    use http_body_util::BodyExt;
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16();
    out.clear();
    status_line(out, status);
    let bodyless = head_request || status == 204 || status == 304;
    let mut chunked = false;
    let no_content = status == 204 || status == 304;
    if !parts.headers.contains_key(http::header::CONTENT_LENGTH) && !no_content {
        // As hyper: the length of a known body, also in the answer to HEAD.
        match body.size_hint().exact() {
            Some(n) => header_line(out, b"content-length", n.to_string().as_bytes()),
            None => chunked = !bodyless,
        }
    }
    for (name, value) in &parts.headers {
        header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    // The upstream body broke: end the response the way hyper does.
                    let _ = client.write_all(out).await;
                    return Step::Close;
                }
            };
            match frame.into_data() {
                Ok(data) if chunked => {
                    if data.is_empty() {
                        continue;
                    }
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
                Ok(data) => out.extend_from_slice(&data),
                Err(frame) => {
                    if let (Ok(trailers), true) = (frame.into_trailers(), chunked) {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            header_line(out, name.as_str().as_bytes(), value.as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                        chunked = false;
                    }
                    continue;
                }
            }
            if !body.is_end_stream() {
                if client.write_all(out).await.is_err() {
                    return Step::Close;
                }
                out.clear();
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    if client.write_all(out).await.is_err() {
        return Step::Close;
    }
    out.clear();
    drop(body);
    if close {
        Step::Close
    } else {
        Step::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn targets_the_uri_parser_takes() {
        assert!(plain_target(b"/a/b?c=d&e=%20"));
        assert!(!plain_target(b"*"));
        assert!(!plain_target(b"http://x/"));
        assert!(!plain_target(b"/a#frag"));
        assert!(!plain_target(b"/a{b}"));
    }

    #[test]
    fn mutated_heads_never_panic_and_what_is_taken_parses_both_ways() {
        let yaml = "backends:\n  app: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - backend: app\n";
        let config = crate::config::Config::from_yaml(yaml).unwrap();
        let metrics = crate::runtime::metrics::Metrics::new(&ProxyError::CAUSES);
        let (router, _backends) = crate::app::build_router(&config, &metrics, 1);
        let proxy = Proxy::new(router, Arc::new(metrics), false, Duration::from_secs(1));
        let conn = ClientConn::new(([10, 0, 0, 1], 1234).into(), "http");
        let seed = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: abc\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        let alphabet = b"\r\n :;,/?#%\t\x00\x7f\xffGETHOSTa0";
        let mut next = h1::test_rng(0x9e37_79b9_7f4a_7c15);
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
            if let Parsed::Ready(request) = parse(&proxy, &head, &conn, &mut upstream) {
                taken += 1;
                let parts = parts_of(&head[..request.len]);
                assert!(parts.is_some(), "{:?}", String::from_utf8_lossy(&head));
                let mut headers = [httparse::EMPTY_HEADER; 80];
                let mut sent = httparse::Request::new(&mut headers);
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

    #[test]
    fn parts_round_trip() {
        let parts = parts_of(b"GET /x?y HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n").unwrap();
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/x?y");
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
    }
}
