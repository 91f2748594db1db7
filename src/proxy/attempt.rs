//! The retry loop: try an endpoint, and when the failure is one the route retries on, try a
//! *different* endpoint, within the attempts, the request deadline and the backend's retry budget.
//!
//! What may be retried follows from what the failure proves (`ProxyError::retry_class`):
//! - nothing was sent (connect refused / timed out / failed): always, whatever the method and
//!   body, because the request comes back untouched from `Backend::send`;
//! - the request may have reached the application (reset, timeout, a 502/503 answer): only when
//!   it is replayable: an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), an
//!   `Idempotency-Key` header, or a route marked `idempotent`, *and* no request body (bodies
//!   are not buffered for replay yet);
//! - never after a response was passed on to the client (the loop ends there).
//!
//! Plain async code rather than `tower::retry`, which fights endpoint exclusion and streaming
//! bodies. When every endpoint was tried, the next try reuses one after a short jittered pause.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request};
use tokio::time::Instant;

use super::error::{ProxyError, RetryClass};
use super::forward::forward;
use super::route::Route;
use crate::config::RetryOn;
use crate::upstream::balance::random_below;
use crate::upstream::body::RequestBody;
use crate::upstream::{Backend, Exchange};

/// At most this many tries are remembered for exclusion (`retry.attempts` is at most 10).
const MAX_TRIED: usize = 10;

pub struct Outcome {
    pub result: Result<Exchange, ProxyError>,
    pub attempts: u32,
    pub endpoint: Option<SocketAddr>,
}

fn is_replayable(request: &Request<RequestBody>, route_idempotent: bool) -> bool {
    use http_body::Body;
    let idempotent = route_idempotent
        || matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
        || request.headers().contains_key("idempotency-key");
    idempotent && request.body().is_end_stream()
}

/// A copy to send again: same head, empty body (only bodiless requests are replayed).
fn copy_of(request: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
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
        | ProxyError::ConnectFailed { .. } => on.connect_failure,
        ProxyError::UpstreamReset { .. } => on.reset,
        ProxyError::BackendTimeout { .. } => on.backend_timeout,
        ProxyError::NoRoute
        | ProxyError::NoEndpoints { .. }
        | ProxyError::UpstreamProtocol { .. }
        | ProxyError::UpstreamHeaderTooLarge { .. }
        | ProxyError::RequestTimeout
        | ProxyError::ClientBody { .. } => false,
    }
}

/// Forward `request` to `backend` under `route`'s retry policy.
pub async fn run(
    route: &Route,
    backend: &Backend,
    request: Request<RequestBody>,
    start: Instant,
) -> Outcome {
    let policy = route.retry;
    let deadline = start + route.request_timeout;
    let replayable = policy.attempts > 1 && is_replayable(&request, policy.idempotent);
    backend.budget.deposit();

    let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_TRIED];
    let mut n_tried = 0;
    let mut next = Some(request);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(request) = next.take() else {
            // Unreachable: every `continue` below sets `next`.
            return Outcome {
                result: Err(ProxyError::RequestTimeout),
                attempts: attempt - 1,
                endpoint: None,
            };
        };
        let last = attempt >= policy.attempts;
        let copy = (!last && replayable).then(|| copy_of(&request));
        let endpoint = match backend.pick_excluding(&tried[..n_tried]) {
            Some(e) => e,
            None if n_tried == 0 => {
                return Outcome {
                    result: Err(ProxyError::NoEndpoints {
                        backend: backend.name.clone(),
                    }),
                    attempts: 0,
                    endpoint: None,
                }
            }
            None => {
                // Every endpoint was tried: pause briefly (jittered) before reusing one.
                let pause = Duration::from_millis(10 + random_below(40) as u64);
                if Instant::now() + pause >= deadline {
                    return Outcome {
                        result: Err(ProxyError::RequestTimeout),
                        attempts: attempt - 1,
                        endpoint: n_tried.checked_sub(1).map(|i| tried[i]),
                    };
                }
                tokio::time::sleep(pause).await;
                match backend.pick() {
                    Some(e) => e,
                    None => {
                        return Outcome {
                            result: Err(ProxyError::NoEndpoints {
                                backend: backend.name.clone(),
                            }),
                            attempts: attempt - 1,
                            endpoint: None,
                        }
                    }
                }
            }
        };
        let addr = endpoint.addr;
        if n_tried < MAX_TRIED && !tried[..n_tried].contains(&addr) {
            tried[n_tried] = addr;
            n_tried += 1;
        }
        let now = Instant::now();
        match forward(
            backend,
            endpoint,
            request,
            route.backend_request_timeout,
            deadline,
            now,
        )
        .await
        {
            Ok(exchange) => {
                let status = exchange.response.status().as_u16();
                if !last && copy.is_some() && policy.on.status(status) && backend.budget.withdraw()
                {
                    tracing::debug!(route = %route.name, endpoint = %addr, status, attempt, "retrying after status");
                    next = copy;
                    continue;
                }
                return Outcome {
                    result: Ok(exchange),
                    attempts: attempt,
                    endpoint: Some(addr),
                };
            }
            Err(failed) => {
                let again = match failed.error.retry_class() {
                    RetryClass::NotSent => failed.request.or(copy),
                    RetryClass::MaybeSent => copy,
                    RetryClass::Never => None,
                };
                if !last
                    && again.is_some()
                    && wanted(&policy.on, &failed.error)
                    && backend.budget.withdraw()
                {
                    tracing::debug!(route = %route.name, endpoint = %addr, cause = failed.error.cause(), attempt, "retrying");
                    next = again;
                    continue;
                }
                return Outcome {
                    result: Err(failed.error),
                    attempts: attempt,
                    endpoint: Some(addr),
                };
            }
        }
    }
}
