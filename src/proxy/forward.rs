//! One attempt: pick an endpoint of the route's backend and exchange the request with it, bounded
//! by the per-try timeout (`backend_request`) and the request's deadline (`request`).
//!
//! Which of the two timeouts fired decides the cause (`backend_timeout` or `request_timeout`),
//! so the log names the setting to change. The retry loop (issue #3) calls this once per try.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use crate::proxy::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::{Backend, Exchange};

/// The result of one attempt, with the endpoint it went to (for the access log).
pub struct Attempt {
    pub endpoint: Option<SocketAddr>,
    pub result: Result<Exchange, ProxyError>,
}

pub async fn forward(
    backend: &Backend,
    request: Request<RequestBody>,
    per_try: Duration,
    deadline: Instant,
    now: Instant,
) -> Attempt {
    let Some(endpoint) = backend.pick() else {
        return Attempt {
            endpoint: None,
            result: Err(ProxyError::NoEndpoints {
                backend: backend.name.clone(),
            }),
        };
    };
    let addr = endpoint.addr;
    let try_deadline = now + per_try;
    let (limit, on_timeout) = if try_deadline < deadline {
        (try_deadline, ProxyError::BackendTimeout { endpoint: addr })
    } else {
        (deadline, ProxyError::RequestTimeout)
    };
    let result = match tokio::time::timeout_at(limit, backend.send(endpoint, request)).await {
        Ok(Ok(exchange)) => Ok(exchange),
        Ok(Err((error, _reused))) => Err(error),
        Err(_) => Err(on_timeout),
    };
    Attempt {
        endpoint: Some(addr),
        result,
    }
}
