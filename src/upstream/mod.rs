//! Backends: a named set of endpoints, how to pick one, and how to exchange one request with it.
//!
//! Vocabulary: a *Backend* has *Endpoints* (`endpoints.rs`, one snapshot), each with a pool of
//! *Connections* (`pool.rs`). `balance.rs` picks; `send` performs one exchange and classifies its
//! failure into a `ProxyError` that says what the failure proves (see `RetryClass`).

pub mod balance;
pub mod body;
pub mod budget;
pub mod endpoints;
pub mod pool;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use http::{Request, Response};

use crate::config::{BackendConfig, Balance};
use crate::proxy::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;
use body::{RequestBody, UpstreamBody};
use endpoints::{Endpoint, Endpoints};
use pool::{Lease, PoolSettings};

pub struct Backend {
    pub name: String,
    balance: Balance,
    pub endpoints: Endpoints,
    pub budget: budget::RetryBudget,
    rr: AtomicUsize,
}

/// A failed exchange: the error, whether the connection was a reused one, and the request
/// itself when it was never sent.
pub struct SendError {
    pub error: ProxyError,
    pub reused: bool,
    pub request: Option<Request<RequestBody>>,
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
        });
        let endpoints = Endpoints::new(settings, metrics);
        endpoints.publish(&config.endpoints);
        Backend {
            name: config.name.clone(),
            balance: config.balance,
            endpoints,
            budget: budget::RetryBudget::new(config.retry_budget),
            rr: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        balance::pick(&self.endpoints.load(), self.balance, &self.rr)
    }

    /// One exchange with `endpoint`, up to the response head. The connection stays with the
    /// response body and returns to the pool when the body ends. When no connection could be
    /// had, nothing was sent and the request comes back with the error, ready for another try.
    pub async fn send(
        &self,
        endpoint: Arc<Endpoint>,
        request: Request<RequestBody>,
    ) -> Result<Exchange, SendError> {
        let addr = endpoint.addr;
        let mut lease = Lease::new(endpoint);
        let mut conn = match lease.endpoint().pool.local().checkout(addr).await {
            Ok(conn) => conn,
            Err(error) => {
                return Err(SendError {
                    error,
                    reused: false,
                    request: Some(request),
                })
            }
        };
        let reused = conn.reused;
        match conn.sender.send_request(request).await {
            Ok(response) => {
                lease.attach(conn.sender);
                let response = response.map(|body| UpstreamBody::new(body, lease));
                Ok(Exchange {
                    response,
                    endpoint: addr,
                    reused,
                })
            }
            Err(e) => Err(SendError {
                error: classify(&e, addr),
                reused,
                request: None,
            }),
        }
    }

    /// Pick an endpoint not in `tried`, or `None` when every endpoint was tried.
    pub fn pick_excluding(&self, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        balance::pick_excluding(&self.endpoints.load(), self.balance, &self.rr, tried)
    }

    /// Close idle connections past their timeout (called by the reaper task).
    pub fn reap(&self) {
        for e in &self.endpoints.load().endpoints {
            e.pool.reap();
        }
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
