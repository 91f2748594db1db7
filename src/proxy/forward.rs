//! The hyper transport: a request's tries carried by hyper's client (`Backend::send`), for
//! every backend protocol (HTTP/1.1 pooled, HTTP/2 multiplexed, TLS), streaming bodies and
//! upgrades. The attempt loop (`attempt.rs`) decides where and when; this keeps the request
//! between tries: a request that was not sent comes back from `Backend::send`, and a copy is
//! kept (head and body held in memory) when another try may follow one that could have
//! reached an application.
//!
//! Bodies of known length up to `retry.max_replay_bytes` are read whole before the first try
//! (`HyperTry::new`), so that they can be sent again; longer bodies, or bodies without a
//! length, stream and are not re-sent once sent.

use std::sync::Arc;

use http::Request;
use tokio::time::Instant;

use super::attempt::Transport;
use super::route::Route;
use crate::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::{Backend, Exchange, SendError, SendOptions};

pub struct HyperTry {
    /// The request for the next try (taken by a try; given back when it was not sent, or
    /// replaced by the copy kept for another try).
    request: Option<Request<RequestBody>>,
    resendable: bool,
}

impl HyperTry {
    /// Ready to try `request`; a body to replay (or to copy: `copied`, a mirror's) is read
    /// first (bounded by `deadline`).
    pub async fn new(
        request: Request<RequestBody>,
        route: &Route,
        deadline: Instant,
        copied: bool,
    ) -> Result<HyperTry, ProxyError> {
        let max = route.retry.max_replay_bytes;
        // Held for another try, or for a mirror's copy.
        let wanted = route.retry.attempts > 1 || copied;
        let request = if wanted && body_to_hold(&request, max) {
            // Boxed: rarely needed, and inline it would make every request's future (moved,
            // memcpy, at each await) larger.
            Box::pin(hold_body(request, max, deadline)).await?
        } else {
            request
        };
        let resendable = resendable_body(&request);
        Ok(HyperTry {
            request: Some(request),
            resendable,
        })
    }
}

impl HyperTry {
    /// The request the next try would send.
    pub fn request(&self) -> Option<&Request<RequestBody>> {
        self.request.as_ref()
    }

    /// A copy of the request to send elsewhere (a mirror), when its body is held or empty.
    pub fn copy(&self) -> Option<Request<RequestBody>> {
        self.request
            .as_ref()
            .filter(|_| self.resendable)
            .map(copy_of)
    }
}

impl Transport for HyperTry {
    type Answer = Exchange;

    async fn send(
        &mut self,
        backend: &Backend,
        endpoint: &Arc<Endpoint>,
        options: SendOptions,
        keep_copy: bool,
    ) -> Result<Exchange, SendError> {
        let Some(request) = self.request.take() else {
            // Not reached: the loop tries only while there is a request (`has_request`).
            return Err(SendError {
                error: ProxyError::RequestTimeout,
                reused: false,
                request: None,
                unread: false,
            });
        };
        if keep_copy && self.resendable {
            self.request = Some(copy_of(&request));
        }
        match backend.send(endpoint, request, options).await {
            Ok(exchange) => Ok(exchange),
            Err(mut failure) => {
                if let Some(unsent) = failure.request.take() {
                    self.request = Some(unsent);
                }
                Err(failure)
            }
        }
    }

    fn status(exchange: &Exchange) -> u16 {
        // A gRPC trailers-only UNAVAILABLE is the gRPC way of saying 503.
        let grpc_unavailable = exchange
            .response
            .headers()
            .get("grpc-status")
            .is_some_and(|v| v == "14");
        match exchange.response.status().as_u16() {
            200 if grpc_unavailable => 503,
            s => s,
        }
    }

    fn resendable(&self) -> bool {
        self.resendable
    }

    fn has_request(&self) -> bool {
        self.request.is_some()
    }
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

/// Read a body that `body_to_hold` chose (known length, at most `max`) whole.
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
