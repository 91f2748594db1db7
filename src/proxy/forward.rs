//! One attempt: exchange the request with one endpoint, bounded by the per-try timeout
//! (`backend_request`) and the request's deadline (`request`).
//!
//! Which of the two timeouts fired decides the cause (`backend_timeout` or `request_timeout`),
//! so the log names the setting to change. `attempt.rs` calls this once per try.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::{Backend, Exchange, SendError, SendOptions};

pub async fn forward(
    backend: &Backend,
    endpoint: &Arc<Endpoint>,
    request: Request<RequestBody>,
    options: SendOptions,
    per_try: Duration,
    deadline: Instant,
    now: Instant,
) -> Result<Exchange, SendError> {
    let addr = endpoint.addr;
    let try_deadline = now + per_try;
    let (limit, on_timeout) = if try_deadline < deadline {
        (try_deadline, ProxyError::BackendTimeout { endpoint: addr })
    } else {
        (deadline, ProxyError::RequestTimeout)
    };
    match tokio::time::timeout_at(limit, backend.send(endpoint, request, options)).await {
        Ok(result) => result,
        Err(_) => Err(SendError {
            error: on_timeout,
            reused: false,
            request: None,
            unread: false,
        }),
    }
}
