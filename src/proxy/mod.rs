//! The request path inside hitless: route (and draw a split's backend, or answer a redirect)
//! -> rewrite headers (hitless's rules, then the route's filters and rewrite) -> forward ->
//! rewrite the response (the same order).
//!
//! `Proxy::handle` is the one function a client request goes through. It never fails: every
//! error becomes a response from `error.rs`, and every response carries the request's
//! `RequestLog`, so each request yields exactly one access log line and one metric sample.
//! The routing table is an `ArcSwap` snapshot: one atomic load per request, swapped whole on
//! reload.

pub mod attempt;
pub mod body;
pub mod direct;
pub mod fault;
pub mod forward;
pub mod headers;
pub mod mirror;
pub mod route;
pub mod stream;
pub mod tunnel;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::runtime::metrics::Metrics;
use crate::upstream::body::RequestBody;
use body::{ClientConn, RequestLog, ResponseBody};
use route::{Route, RouteAction, Router};

pub struct Proxy {
    pub(crate) router: ArcSwap<Router>,
    metrics: Arc<Metrics>,
    pub(crate) access_log: bool,
    /// Upgraded connections being spliced (a drain waits for them too).
    pub tunnels: tokio_util::task::TaskTracker,
    tunnel_idle: std::time::Duration,
    /// Forward request header names with `_` (`limits.keep_underscore_headers`).
    pub(crate) keep_underscores: bool,
    /// Carry plain requests to `http` backends on raw connections (`stream.rs`;
    /// `runtime.direct_path`).
    raw_streams: bool,
}

/// Whether a request is a gRPC call (its errors are then gRPC-shaped answers).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes().starts_with(b"application/grpc"))
        .unwrap_or(false)
}

/// What a request head must not be, whatever engine read it (RFC 9112 3.2, 6.1; hitless is a
/// reverse proxy, not a tunnel): answered before routing.
fn refuse(parts: &http::request::Parts, h2_websocket: bool) -> Option<ProxyError> {
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Some(ProxyError::BadRequest {
            reason: "more than one Host header",
        });
    }
    if hosts == 0 && parts.version == Version::HTTP_11 && parts.uri.authority().is_none() {
        return Some(ProxyError::BadRequest {
            reason: "no Host header",
        });
    }
    if parts.method == http::Method::CONNECT && !h2_websocket {
        return Some(ProxyError::MethodNotAllowed { method: "CONNECT" });
    }
    for te in parts.headers.get_all(header::TRANSFER_ENCODING) {
        let only_chunked = te
            .as_bytes()
            .split(|&b| b == b',')
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
            .all(|t| t.eq_ignore_ascii_case(b"chunked"));
        if !only_chunked {
            return Some(ProxyError::UnsupportedTransferCoding);
        }
    }
    None
}

impl Proxy {
    pub fn new(
        router: Router,
        metrics: Arc<Metrics>,
        access_log: bool,
        downstream: &crate::config::Downstream,
    ) -> Proxy {
        Proxy {
            router: ArcSwap::from_pointee(router),
            metrics,
            access_log,
            tunnels: tokio_util::task::TaskTracker::new(),
            tunnel_idle: downstream.tunnel_idle,
            keep_underscores: downstream.keep_underscore_headers,
            raw_streams: false,
        }
    }

    /// Carry the requests hyper's engine read to `http` backends over raw connections when
    /// they allow it (`stream.rs`), as the direct engine does (`runtime.direct_path`).
    pub fn with_raw_streams(mut self, on: bool) -> Proxy {
        self.raw_streams = on;
        self
    }

    /// Install a new routing table; requests already routed keep the old one.
    pub fn swap_router(&self, router: Router) {
        self.router.store(Arc::new(router));
    }

    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answer one client request that arrived on `conn` (hyper's engine).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        conn: Arc<ClientConn>,
    ) -> Response<ResponseBody> {
        conn.request_started();
        let start = Instant::now();
        let (parts, body) = request.into_parts();
        self.answer(parts, RequestBody::Streaming(body), conn, start)
            .await
    }

    /// Answer a request whose handling started at `start` (`conn.request_started()` was
    /// called).
    async fn answer(
        &self,
        mut parts: http::request::Parts,
        body: RequestBody,
        conn: Arc<ClientConn>,
        start: Instant,
    ) -> Response<ResponseBody> {
        let grpc = is_grpc(&parts.headers);
        let router = self.router.load();
        // A split's draw is made here, once: the request is the picked route's from now on
        // (its backend, retries, metrics and log line).
        let route = router
            .find_request(authority_of(&parts), (conn.scheme, conn.port), &parts)
            .map(|r| Arc::clone(r.pick()));
        let mut log = RequestLog::new(start, parts.method.clone(), conn, self.access_log);
        if self.access_log {
            log.host = parts.headers.get(header::HOST).cloned();
            log.uri = parts.uri.clone();
        }
        log.route = route.clone();
        let upgrade = tunnel::requested(&parts);
        if let Some(error) = refuse(
            &parts,
            matches!(upgrade, Some(tunnel::Upgrade::H2WebSocket)),
        ) {
            log.route = None;
            let id = request_id_of(&parts.headers);
            return self.error(error, grpc, id, log);
        }

        let Some(route) = route else {
            let id = request_id_of(&parts.headers);
            return self.error(ProxyError::NoRoute, grpc, id, log);
        };
        let backend = match &route.action {
            RouteAction::Respond(fixed) => {
                let id = request_id_of(&parts.headers);
                let mut response = Response::new(ResponseBody::full(fixed.body.clone()));
                *response.status_mut() = fixed.status;
                for (name, value) in &fixed.headers {
                    response.headers_mut().append(name, value.clone());
                }
                response
                    .headers_mut()
                    .insert(&headers::X_REQUEST_ID, id.clone());
                log.status = fixed.status.as_u16();
                log.request_id = Some(id);
                return response.map(|b| b.with_log(log));
            }
            RouteAction::Redirect(redirect) => {
                return self.redirect(&route, redirect, &parts, log);
            }
            RouteAction::Forward(backend) => backend,
            // Not reached: `pick` returns one of the split's routes, which forward.
            RouteAction::Split(_) => {
                let id = request_id_of(&parts.headers);
                return self.error(ProxyError::NoRoute, grpc, id, log);
            }
        };
        if let Some(faults) = &route.fault {
            // Boxed: rare, and inline its future would be in every request's.
            log = match Box::pin(self.inject(faults, &route, &mut parts, grpc, log)).await {
                Ok(log) => log,
                Err(answer) => return answer,
            };
        }
        match backend.admit() {
            Some(admission) => log.admission = Some(admission),
            None => {
                let id = request_id_of(&parts.headers);
                let error = ProxyError::Overloaded {
                    backend: backend.name.clone(),
                };
                return self.error(error, grpc, id, log);
            }
        }

        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes().to_vec());
        let request_id = headers::rewrite_request(
            &mut parts.headers,
            &headers::Forwarding {
                client_ip: log.conn.ip_header.as_bytes(),
                https: log.conn.scheme == "https",
                authority: authority.as_deref(),
                keep_underscores: self.keep_underscores,
            },
            headers::new_request_id,
        )
        .value;
        if let Some(filters) = &route.filters {
            filter_request(&mut parts.headers, filters);
        }
        let client_upgrade = match &upgrade {
            Some(tunnel::Upgrade::Http1(token)) => {
                tunnel::restore_headers(&mut parts.headers, token.clone());
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
            }
            Some(tunnel::Upgrade::H2WebSocket) => {
                tunnel::h2_websocket_to_http1(&mut parts, &request_id);
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
            }
            None => None,
        };
        // An HTTP/1.1 backend wants origin-form (`/path?query`), whatever form the client used.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .map(|pq| Uri::from(pq.clone()))
                .unwrap_or_else(|| Uri::from_static("/"));
        }
        if let Some(replace) = route
            .filters
            .as_ref()
            .and_then(|f| f.rewrite.as_ref()?.path.as_ref())
        {
            parts.uri = rewritten_uri(&route, replace, &parts.uri);
        }
        parts.version = Version::HTTP_11;
        let idempotent = attempt::idempotent(
            &parts.method,
            route.retry.idempotent,
            parts.headers.contains_key("idempotency-key"),
        );
        // A gRPC client's own deadline, when shorter, is the request's.
        let client_deadline = if grpc {
            attempt::grpc_timeout(&parts.headers)
        } else {
            None
        };
        // An injected delay is the rehearsal's, not the backend's: the request's timeouts
        // start after it.
        let plan_start = if log.fault.is_some() {
            Instant::now()
        } else {
            start
        };
        let plan = attempt::Plan::new(&route, backend, plan_start, client_deadline, idempotent);
        let upstream_request = Request::from_parts(parts, body);
        // Drawn before the body is read: only a request that is copied waits for its body
        // (held to be copied) when no retry would need it. Upgrades are not copied (a second
        // WebSocket would be a second session).
        let copied = route
            .mirror
            .as_ref()
            .filter(|m| upgrade.is_none() && m.draw());
        let mut transport =
            match forward::HyperTry::new(upstream_request, &route, plan.deadline, copied.is_some())
                .await
            {
                Ok(t) => t,
                Err(error) => return self.error(error, grpc, request_id, log),
            };
        if let Some(mirror) = copied {
            // The copy as the backend gets it (forwarding headers, filters, rewrite), sent
            // before the first try: the client never waits for it.
            mirror.send(transport.copy());
        }
        let raw = self.raw_streams
            && upgrade.is_none()
            && backend.config.protocol == crate::config::Protocol::Http;
        let outcome = match transport
            .request()
            .filter(|_| raw)
            .and_then(stream::StreamTry::of)
        {
            Some(mut raw) => attempt::run(&route, backend, &mut raw, &plan)
                .await
                .map(|answer| (answer.head, ResponseBody::raw(answer.body))),
            None => attempt::run(&route, backend, &mut transport, &plan)
                .await
                .map(|exchange| {
                    let (head, body) = exchange.response.into_parts();
                    (head, ResponseBody::upstream(body))
                }),
        };
        log.attempts = outcome.attempts;
        log.endpoint = outcome.endpoint;
        log.failed = outcome.failed;
        match outcome.result {
            Ok((mut head, body)) => {
                let switching = head.status == http::StatusCode::SWITCHING_PROTOCOLS;
                // To an HTTP/2 client any 2xx means "tunnel open": a backend that answered
                // the handshake without switching must not look like one that did.
                if let (Some(tunnel::Upgrade::H2WebSocket), Some(endpoint), false) =
                    (&upgrade, log.endpoint, switching)
                {
                    if head.status.is_success() {
                        let error = ProxyError::UpstreamProtocol {
                            endpoint,
                            reason: format!(
                                "answered {} to a WebSocket handshake instead of 101",
                                head.status.as_u16()
                            ),
                        };
                        return self.error(error, grpc, request_id, log);
                    }
                }
                let upstream_token = head.headers.get(header::UPGRADE).cloned();
                headers::rewrite_response(&mut head.headers, &request_id);
                if let Some(filters) = &route.filters {
                    headers::apply_filter(&mut head.headers, &filters.response_headers);
                }
                if switching {
                    // A refused upgrade is an ordinary answer, passed through as such.
                    let upstream_upgrade = head.extensions.remove::<hyper::upgrade::OnUpgrade>();
                    if let (Some(client), Some(upstream), Some(token)) =
                        (client_upgrade, upstream_upgrade, upstream_token)
                    {
                        match upgrade {
                            Some(tunnel::Upgrade::H2WebSocket) => {
                                tunnel::http1_switch_to_h2(&mut head)
                            }
                            _ => tunnel::restore_headers(&mut head.headers, token),
                        }
                        let splice = tunnel::splice(
                            client,
                            upstream,
                            self.tunnel_idle,
                            Arc::clone(&self.metrics),
                        );
                        // The tunnel is the client connection now: it keeps the connection's
                        // place under limits.max_connections until it ends.
                        let conn = Arc::clone(&log.conn);
                        conn.upgraded
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        self.tunnels.spawn(async move {
                            splice.await;
                            drop(conn);
                        });
                    }
                }
                if log.fault.is_some() {
                    // Only a delay lets a faulted request reach the backend.
                    head.headers.append(
                        "proxy-status",
                        HeaderValue::from_static("hitless; details=\"fault_injected delay\""),
                    );
                }
                log.status = head.status.as_u16();
                log.request_id = Some(request_id);
                Response::from_parts(head, body.with_log(log))
            }
            Err(error) => self.error(error, grpc, request_id, log),
        }
    }

    /// Apply the route's faults to one request: wait out an injected delay, then answer in
    /// place of the backend when the request is aborted or reset (`Err`), or give the log
    /// back to forward it (`Ok`).
    async fn inject(
        &self,
        faults: &fault::Faults,
        route: &Route,
        parts: &mut http::request::Parts,
        grpc: bool,
        mut log: RequestLog,
    ) -> Result<RequestLog, Response<ResponseBody>> {
        let decision = match faults.decide(&parts.headers) {
            Ok(decision) => decision,
            Err(error) => return Err(self.error(error, grpc, request_id_of(&parts.headers), log)),
        };
        parts.headers.remove(&fault::FAULT_HEADER);
        if let Some(delay) = decision.delay {
            route.metrics.fault("delay");
            log.fault = Some("delay");
            tokio::time::sleep(delay).await;
        }
        let Some(end) = decision.end else {
            return Ok(log);
        };
        let id = request_id_of(&parts.headers);
        match end {
            fault::End::Abort(status) => {
                route.metrics.fault("abort");
                log.fault = Some(if log.fault.is_some() {
                    "delay,abort"
                } else {
                    "abort"
                });
                Err(self.error(ProxyError::FaultInjected { status }, grpc, id, log))
            }
            fault::End::Reset => {
                route.metrics.fault("reset");
                let cause = ProxyError::FaultInjected {
                    status: StatusCode::OK,
                };
                self.metrics.proxy_error(cause.cause_index());
                log.fault = Some(if log.fault.is_some() {
                    "delay,reset"
                } else {
                    "reset"
                });
                log.cause = Some(cause.cause());
                log.request_id = Some(id);
                // Status 0 in the access log: nothing was answered.
                let mut response = Response::new(ResponseBody::full(Bytes::new()).with_log(log));
                response.extensions_mut().insert(fault::Reset);
                Err(response)
            }
        }
    }

    /// Answer a `redirect:` route: its status, the `Location` built from the request, an
    /// empty body and the request id (as `respond` answers).
    fn redirect(
        &self,
        route: &Route,
        redirect: &crate::config::Redirect,
        parts: &http::request::Parts,
        mut log: RequestLog,
    ) -> Response<ResponseBody> {
        let id = request_id_of(&parts.headers);
        if authority_of(parts).is_empty() && redirect.host.is_none() {
            // HTTP/1.0 without Host: no host to send the client to.
            let error = ProxyError::BadRequest {
                reason: "no Host to redirect to",
            };
            return self.error(error, is_grpc(&parts.headers), id, log);
        }
        let location = route.location(
            redirect,
            log.conn.scheme,
            authority_of(parts),
            parts.uri.path(),
            parts.uri.query(),
        );
        let Ok(location) = HeaderValue::try_from(location) else {
            let error = ProxyError::BadRequest {
                reason: "no redirect location can be made from this request",
            };
            return self.error(error, is_grpc(&parts.headers), id, log);
        };
        let mut response = Response::new(ResponseBody::full(Bytes::new()));
        *response.status_mut() = redirect.status;
        response.headers_mut().insert(header::LOCATION, location);
        response
            .headers_mut()
            .insert(&headers::X_REQUEST_ID, id.clone());
        log.status = redirect.status.as_u16();
        log.request_id = Some(id);
        response.map(|b| b.with_log(log))
    }

    fn error(
        &self,
        error: ProxyError,
        grpc: bool,
        request_id: HeaderValue,
        mut log: RequestLog,
    ) -> Response<ResponseBody> {
        self.metrics.proxy_error(error.cause_index());
        tracing::debug!(cause = error.cause(), error = %error, "proxy error");
        let mut response: Response<ResponseBody> = error.to_response(grpc);
        response
            .headers_mut()
            .insert(&headers::X_REQUEST_ID, request_id.clone());
        log.status = response.status().as_u16();
        log.cause = Some(error.cause());
        log.request_id = Some(request_id);
        response.map(|b| b.with_log(log))
    }
}

/// Where a request is addressed: the target's authority (absolute form, HTTP/2's
/// `:authority`), which wins over `Host` (RFC 9112 3.2.2), or `Host`.
fn authority_of(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// A route's changes to the request head, after hitless's own rules: `rewrite.host` (the
/// `X-Forwarded-Host` written before keeps the client's), then `request_headers:`.
fn filter_request(headers: &mut http::HeaderMap, filters: &route::Filters) {
    if let Some(host) = filters.rewrite.as_ref().and_then(|w| w.host.as_ref()) {
        headers.insert(header::HOST, host.clone());
    }
    headers::apply_filter(headers, &filters.request_headers);
}

/// An origin-form target with its path replaced by `rewrite:` and its query kept.
fn rewritten_uri(route: &Route, replace: &crate::config::PathReplace, uri: &Uri) -> Uri {
    let mut target = route.replaced_path(replace, uri.path());
    if let Some(query) = uri.query() {
        target.push('?');
        target.push_str(query);
    }
    // The replacement was validated as a path and the rest came from a parsed one.
    Uri::try_from(target).unwrap_or_else(|_| uri.clone())
}

fn request_id_of(headers: &http::HeaderMap) -> HeaderValue {
    match headers.get(&headers::X_REQUEST_ID) {
        Some(id) if !id.is_empty() => id.clone(),
        _ => headers::new_request_id(),
    }
}
