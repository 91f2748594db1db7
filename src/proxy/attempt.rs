//! The retry loop: try an endpoint, and when the failure is one the route retries on, try a
//! *different* endpoint, within the attempts, the request deadline and the backend's retry budget.
//!
//! What may be retried follows from what the failure proves (`ProxyError::retry_class`):
//! - nothing was sent (connect refused / timed out / failed): always, whatever the method and
//!   body, because the request comes back untouched from `Backend::send`;
//! - the request may have reached the application (reset, timeout, a 502/503 answer): only when
//!   it is replayable: an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), an
//!   `Idempotency-Key` header, or a route marked `idempotent`, *and* a body that can be sent
//!   again: none, or one of known length up to `retry.max_replay_bytes` (64 KiB), which is
//!   read whole before the first try and kept until a response head arrives;
//! - the request provably never read (`upstream::proven_unread`: the keep-alive race on a
//!   reused connection, or a new connection reset with the request unread): any method;
//! - never after a response was passed on to the client (the loop ends there).
//!
//! Plain async code rather than `tower::retry`, which fights endpoint exclusion and streaming
//! bodies. When every endpoint was tried, the next try reuses one after a short jittered pause.
//!
//! When nothing could be sent anywhere (every endpoint refused or is ejected, or the backend
//! has none), the request is *held* (`upstream/hold.rs`) up to the backend's `hold_timeout`
//! and goes as soon as an endpoint is back; when the hold expires the answer is 503
//! `no_healthy_endpoints` naming the last failure. Every outcome feeds the endpoint's passive
//! health (`Backend::report`), and every failed try is kept for the access log.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request};
use tokio::time::Instant;

use super::forward::forward;
use super::route::Route;
use crate::config::RetryOn;
use crate::error::{ProxyError, RetryClass};
use crate::runtime::random::random_below;
use crate::upstream::body::RequestBody;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::hold::Woken;
use crate::upstream::{Backend, Exchange, SendError, SendOptions};
use std::sync::Arc;

/// At most this many tries per request, and remembered for exclusion (`retry.attempts` is at
/// most 10; tries that sent nothing are not counted there, but here).
const MAX_TRIED: usize = 10;

pub struct Outcome {
    pub result: Result<Exchange, ProxyError>,
    pub attempts: u32,
    pub endpoint: Option<SocketAddr>,
    /// The tries that failed before the last one (empty in the common case: no allocation).
    pub failed: Vec<FailedTry>,
}

/// One try that did not produce the answer, for the access log.
pub struct FailedTry {
    pub endpoint: SocketAddr,
    /// A cause label, or the status of an answer that was retried.
    pub outcome: TryOutcome,
    pub elapsed: Duration,
}

pub enum TryOutcome {
    Cause(&'static str),
    Status(u16),
}

impl fmt::Display for FailedTry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.elapsed.as_secs_f64() * 1000.0;
        match self.outcome {
            TryOutcome::Cause(c) => write!(f, "{} {c} {ms:.1}ms", self.endpoint),
            TryOutcome::Status(s) => write!(f, "{} {s} {ms:.1}ms", self.endpoint),
        }
    }
}

/// `grpc-timeout` (gRPC over HTTP/2: up to 8 digits and a unit: H, M, S, m, u, n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a request may be sent twice: the route says so, its method is idempotent (RFC 9110
/// section 9.2.2), or the client sent an `Idempotency-Key`.
pub fn idempotent(method: &Method, route_idempotent: bool, idempotency_key: bool) -> bool {
    route_idempotent
        || idempotency_key
        || matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
}

fn is_idempotent(request: &Request<RequestBody>, route_idempotent: bool) -> bool {
    idempotent(
        request.method(),
        route_idempotent,
        request.headers().contains_key("idempotency-key"),
    )
}

/// Whether the body can be sent again: none, or held in memory.
fn resendable_body(request: &Request<RequestBody>) -> bool {
    use http_body::Body;
    matches!(request.body(), RequestBody::Full(_)) || request.body().is_end_stream()
}

/// A streaming body with a known length of 1 to `max` bytes: `hold_body` reads it whole.
fn body_to_hold(request: &Request<RequestBody>, max: usize) -> bool {
    let length = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    matches!(request.body(), RequestBody::Streaming(_))
        && length.is_some_and(|n| n > 0 && n <= max as u64)
}

/// Read a body that `body_to_hold` chose (known length, at most `max`) whole, so that it can
/// be sent again. Bodies without a length, or longer, keep streaming (and are not re-sent once
/// sent): the caller does not hand them here.
async fn hold_body(
    request: Request<RequestBody>,
    max: usize,
    deadline: Instant,
) -> Result<Request<RequestBody>, ProxyError> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let RequestBody::Streaming(incoming) = body else {
        return Ok(Request::from_parts(parts, body));
    };
    let limited = http_body_util::Limited::new(incoming, max);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Err(_) => Err(ProxyError::RequestTimeout),
        Ok(Err(e)) => Err(ProxyError::ClientBody {
            reason: e.to_string(),
        }),
        Ok(Ok(collected)) => Ok(Request::from_parts(
            parts,
            RequestBody::from(collected.to_bytes()),
        )),
    }
}

/// A copy to send again: same head, same body (held in memory, or none).
fn copy_of(request: &Request<RequestBody>) -> Request<RequestBody> {
    let body = match request.body() {
        RequestBody::Full(data) => RequestBody::Full(data.clone()),
        RequestBody::Streaming(_) => RequestBody::empty(),
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

fn wanted(on: &RetryOn, error: &ProxyError) -> bool {
    match error {
        ProxyError::ConnectRefused { .. }
        | ProxyError::ConnectTimeout { .. }
        | ProxyError::ConnectFailed { .. }
        | ProxyError::TlsError { .. } => on.connect_failure,
        ProxyError::UpstreamReset { .. } => on.reset,
        ProxyError::RefusedStream { .. } => on.refused_stream,
        ProxyError::BackendTimeout { .. } => on.backend_timeout,
        ProxyError::NoRoute
        | ProxyError::NoEndpoints { .. }
        | ProxyError::NoHealthyEndpoints { .. }
        | ProxyError::Overloaded { .. }
        | ProxyError::UpstreamProtocol { .. }
        | ProxyError::ProtocolMismatch { .. }
        | ProxyError::UpstreamHeaderTooLarge { .. }
        | ProxyError::RequestTimeout
        | ProxyError::ClientBody { .. } => false,
    }
}

fn holds(backend: &Backend) -> bool {
    !backend.config.hold_timeout.is_zero()
}

/// The answer when no endpoint took the request: the last failure itself without a hold;
/// with one, `no_healthy_endpoints` (503: the backend is unavailable, not misbehaving).
fn give_up(backend: &Backend, last: Option<ProxyError>) -> ProxyError {
    // A request that found every endpoint out of rotation tried none: name why they are out.
    let last = last.or_else(|| backend.why_unavailable());
    match last {
        None => ProxyError::NoEndpoints {
            backend: backend.name.clone(),
        },
        Some(last) if !holds(backend) => last,
        Some(last) => ProxyError::NoHealthyEndpoints {
            backend: backend.name.clone(),
            last: Box::new(last),
        },
    }
}

/// Whether endpoints this request already tried may take it again (every usable one was
/// tried): after an answer or a reset (within the attempts), or a refused HTTP/2 stream (a
/// new connection may take it). Not after a failed TLS handshake: the same endpoint would
/// fail the same way, so the request waits for a change (the hold) or gets the error.
fn reusable(last: &Option<ProxyError>, unsent: bool) -> bool {
    !unsent || matches!(last, Some(ProxyError::RefusedStream { .. }))
}

/// Wait in the backend's hold until an endpoint can take the request, or `until` passes
/// (`None`). Waiting costs the backend nothing: endpoints come back through probes, checks
/// or discovery, which release the hold (`upstream/hold.rs`). `Some(true)`: released, and
/// an endpoint can take it (one this request tried may have come back); `Some(false)`: an
/// endpoint it has not tried can take it.
async fn hold(backend: &Backend, until: Instant, tried: &[SocketAddr]) -> Option<bool> {
    loop {
        match backend.hold.wait(until).await {
            Woken::Expired => return None,
            Woken::Released if backend.any_usable() => return Some(true),
            _ if backend.any_usable_except(tried) => return Some(false),
            _ => {}
        }
    }
}

/// A first try made by the direct HTTP/1.1 path (`proxy/direct.rs`) that did not produce the
/// answer: the loop below continues from it under the same policy, as if it had made it.
pub enum Prior {
    /// It failed (not yet reported to the endpoint's health); it started at `started`.
    Failed {
        endpoint: Arc<Endpoint>,
        failure: Box<SendError>,
        started: Instant,
    },
    /// The endpoint answered `status`, one the route retries on: already reported, and the
    /// retry already paid from the budget and counted (`retry_on_status`).
    Retried {
        endpoint: SocketAddr,
        status: u16,
        elapsed: Duration,
    },
}

/// Whether an answer with `status` is retried: the route retries on it, the request can be
/// sent again, a try is left, and the budget pays for it (counted either way).
pub fn retry_on_status(
    route: &Route,
    backend: &Backend,
    status: u16,
    replayable: bool,
    attempt: u32,
) -> bool {
    if attempt >= route.retry.attempts || !replayable || !route.retry.on.status(status) {
        return false;
    }
    if backend.budget.withdraw() {
        backend.metrics.retry(status_label(status));
        return true;
    }
    backend.metrics.budget_exhausted.inc();
    false
}

/// Forward `request` to `backend` under `route`'s retry policy. `grpc`: the request is a gRPC
/// call (its `grpc-timeout` is looked for only then). `prior`: a first try already made.
pub async fn run(
    route: &Route,
    backend: &Backend,
    request: Request<RequestBody>,
    start: Instant,
    grpc: bool,
    prior: Option<Prior>,
) -> Outcome {
    let policy = route.retry;
    // A gRPC client's own deadline, when shorter, is the request's.
    let grpc_deadline = if grpc {
        grpc_timeout(request.headers())
    } else {
        None
    };
    let deadline = match grpc_deadline {
        Some(t) => start + t.min(route.request_timeout),
        None => start + route.request_timeout,
    };
    let hold_until = (start + backend.config.hold_timeout).min(deadline);
    let idempotent = is_idempotent(&request, policy.idempotent);
    // Boxed, like the hold below: rarely needed, and inline they would make every request's
    // future (moved, memcpy, at each await) larger.
    let request = if policy.attempts > 1 && body_to_hold(&request, policy.max_replay_bytes) {
        match Box::pin(hold_body(request, policy.max_replay_bytes, deadline)).await {
            Ok(request) => request,
            Err(error) => {
                return Outcome {
                    result: Err(error),
                    attempts: 0,
                    endpoint: None,
                    failed: Vec::new(),
                }
            }
        }
    } else {
        request
    };
    let resendable = policy.attempts > 1 && resendable_body(&request);
    let replayable = resendable && idempotent;
    // Requests that must not be sent twice are also sent more carefully (`Pool::checkout`).
    let careful = !idempotent;
    // A connect is given up after its patience only when another endpoint may take over.
    let patient = policy.attempts <= 1 || !policy.on.connect_failure;
    if prior.is_none() {
        // Otherwise the first try's path paid it.
        backend.budget.deposit();
    }

    let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_TRIED];
    let mut n_tried = 0;
    let mut next = Some(request);
    // Tries made, and those of them that may have reached an application (`retry.attempts`
    // bounds the latter; a try that sent nothing is bounded by `MAX_TRIED`, the hold and the
    // deadline).
    let mut attempt = 0;
    let mut counted = 0;
    let mut failed: Vec<FailedTry> = Vec::new();
    // The last failure, and whether it proved that nothing was sent.
    let mut last_error: Option<ProxyError> = None;
    let mut unsent = false;
    let mut held = false;
    // The hold was released: endpoints this request tried may have come back.
    let mut came_back = false;
    let mut raced = false;
    // The next try goes on a new connection (after a stale pooled one failed).
    let mut fresh = false;
    let mut prior_failed = None;
    match prior {
        Some(Prior::Retried {
            endpoint,
            status,
            elapsed,
        }) => {
            tried[0] = endpoint;
            n_tried = 1;
            attempt = 1;
            counted = 1;
            failed.push(FailedTry {
                endpoint,
                outcome: TryOutcome::Status(status),
                elapsed,
            });
        }
        Some(Prior::Failed {
            endpoint,
            failure,
            started,
        }) => prior_failed = Some((endpoint, *failure, started)),
        None => {}
    }
    let end = |result, attempt, endpoint, failed, held: bool| {
        if held {
            match &result {
                Ok(_) => backend.metrics.held_served.inc(),
                Err(_) => backend.metrics.held_expired.inc(),
            };
        }
        Outcome {
            result,
            attempts: attempt,
            endpoint,
            failed,
        }
    };
    loop {
        let Some(request) = next.take() else {
            // Unreachable: every `continue` below sets `next`.
            return end(Err(ProxyError::RequestTimeout), attempt, None, failed, held);
        };
        let first = prior_failed.take();
        let picked = match &first {
            Some((endpoint, _, _)) => Some(Arc::clone(endpoint)),
            None => backend.pick_excluding(&tried[..n_tried]),
        };
        let endpoint = match picked {
            Some(e) => e,
            None if n_tried > 0
                && (std::mem::take(&mut came_back) || reusable(&last_error, unsent))
                && backend.any_usable() =>
            {
                // Every endpoint that can take it was tried already. After an answer that may
                // have reached the application, pause briefly (jittered) before reusing one.
                if !unsent {
                    let pause = Duration::from_millis(10 + random_below(40) as u64);
                    if Instant::now() + pause >= deadline {
                        let last = tried.get(n_tried - 1).copied();
                        return end(Err(ProxyError::RequestTimeout), attempt, last, failed, held);
                    }
                    tokio::time::sleep(pause).await;
                }
                n_tried = 0;
                next = Some(request);
                continue;
            }
            None => {
                // No endpoint can take the request right now: wait for one (the hold), with
                // the endpoints already tried still excluded when it ends.
                if holds(backend) {
                    held = true;
                    if let Some(released) =
                        Box::pin(hold(backend, hold_until, &tried[..n_tried])).await
                    {
                        came_back = released;
                        next = Some(request);
                        continue;
                    }
                }
                if last_error.is_some() {
                    failed.pop(); // the last try is reported as the outcome itself
                }
                let error = give_up(backend, last_error);
                let endpoint = error.endpoint();
                return end(Err(error), attempt, endpoint, failed, held);
            }
        };
        attempt += 1;
        let addr = endpoint.addr;
        if n_tried < MAX_TRIED && !tried[..n_tried].contains(&addr) {
            tried[n_tried] = addr;
            n_tried += 1;
        }
        // Whether this try is the last one that may reach an application.
        let last = counted + 1 >= policy.attempts;
        let (copy, result, now) = match first {
            // The request itself was not sent by that try (the direct path sends its own
            // copy of the head): it is the copy to send again.
            Some((_, mut failure, started)) => {
                if failure.error.retry_class() == RetryClass::NotSent {
                    // As `Backend::send` hands back a request it could not send.
                    failure.request = Some(request);
                    (None, Err(failure), started)
                } else {
                    (
                        (!last && resendable).then_some(request),
                        Err(failure),
                        started,
                    )
                }
            }
            None => {
                let copy = (!last && resendable).then(|| copy_of(&request));
                let now = Instant::now();
                let result = forward(
                    backend,
                    &endpoint,
                    request,
                    SendOptions {
                        careful,
                        fresh: std::mem::take(&mut fresh),
                        patient,
                    },
                    route.backend_request_timeout,
                    deadline,
                    now,
                )
                .await;
                (copy, result, now)
            }
        };
        match result {
            Ok(exchange) => {
                // A gRPC trailers-only UNAVAILABLE is the gRPC way of saying 503.
                let grpc_unavailable = exchange
                    .response
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|v| v == "14");
                let status = match exchange.response.status().as_u16() {
                    200 if grpc_unavailable => 503,
                    s => s,
                };
                backend.report(&endpoint, Ok(status));
                counted += 1;
                if retry_on_status(route, backend, status, replayable, counted) {
                    tracing::debug!(route = %route.name, endpoint = %addr, status, attempt, "retrying after status");
                    failed.push(FailedTry {
                        endpoint: addr,
                        outcome: TryOutcome::Status(status),
                        elapsed: now.elapsed(),
                    });
                    unsent = false;
                    last_error = None;
                    next = copy;
                    continue;
                }
                return end(Ok(exchange), attempt, Some(addr), failed, held);
            }
            Err(failure) => {
                backend.report(&endpoint, Err(&failure.error));
                let class = failure.error.retry_class();
                if class != RetryClass::NotSent {
                    counted += 1;
                }
                let again = match class {
                    RetryClass::NotSent => failure.request.or(copy),
                    RetryClass::MaybeSent if replayable || failure.unread => copy,
                    RetryClass::MaybeSent => None,
                    RetryClass::Never => None,
                };
                let retry = again.is_some()
                    && policy.attempts > 1
                    && wanted(&policy.on, &failure.error)
                    && (attempt as usize) < MAX_TRIED
                    && (class == RetryClass::NotSent || !last);
                failed.push(FailedTry {
                    endpoint: addr,
                    outcome: TryOutcome::Cause(failure.error.cause()),
                    elapsed: now.elapsed(),
                });
                if retry && class == RetryClass::NotSent {
                    // Nothing reached anyone: free (the budget bounds what reaches an
                    // application), and the endpoint is out of rotation already if it refused.
                    backend.metrics.retry(failure.error.cause());
                    unsent = true;
                    last_error = Some(failure.error);
                    next = again;
                    continue;
                }
                if retry && failure.unread && !(failure.reused && raced) {
                    // Provably unread: free, as nothing reached an application. A stale pooled
                    // connection says nothing about the backend's health and can fail one
                    // request only, so the first one of a request is free (a burst of them
                    // after an app's keep-alive timeout must not exhaust the budget), and the
                    // next try takes a new connection. A new connection closed unread is an
                    // app stopping (it is penalised by `report`).
                    let reason = if failure.reused {
                        raced = true;
                        fresh = true;
                        "stale_connection"
                    } else {
                        "unread"
                    };
                    backend.metrics.retry(reason);
                    unsent = false;
                    last_error = Some(failure.error);
                    next = again;
                    continue;
                }
                if retry {
                    if backend.budget.withdraw() {
                        tracing::debug!(route = %route.name, endpoint = %addr, cause = failure.error.cause(), attempt, "retrying");
                        backend.metrics.retry(failure.error.cause());
                        unsent = false;
                        last_error = Some(failure.error);
                        next = again;
                        continue;
                    }
                    backend.metrics.budget_exhausted.inc();
                }
                failed.pop(); // the last try is reported as the outcome itself
                return end(Err(failure.error), attempt, Some(addr), failed, held);
            }
        }
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("123456789S"), None, "more than 8 digits");
        assert_eq!(t("10x"), None);
        assert_eq!(t("S"), None);
    }
}
