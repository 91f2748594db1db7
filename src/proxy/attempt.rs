//! The attempt loop: every try of every request, the first included, whatever engine carries
//! it. Try an endpoint, and when the failure is one the route retries on, try a *different*
//! endpoint, within the attempts, the request deadline and the backend's retry budget.
//!
//! The engine is a `Transport` below the loop, not a second proxy beside it: `forward::HyperTry`
//! carries a try with hyper's client (every backend protocol, streaming bodies, upgrades),
//! `direct::RawTry` writes the request's bytes on a raw pooled HTTP/1.1 connection. Picking,
//! timeouts, budgets, holds, exclusion, passive health and the record of failed tries are
//! here, once.
//!
//! What may be retried follows from what the failure proves (`ProxyError::retry_class`):
//! - nothing was sent (connect refused / timed out / failed, TLS handshake, REFUSED_STREAM):
//!   always, whatever the method and body, and free: no budget, not counted in `attempts`;
//! - the request provably never read (`upstream::proven_unread`: the keep-alive race on a
//!   reused connection, or a new connection reset with the request unread): any method;
//! - the request may have reached the application (reset, timeout, a 502/503 answer): only
//!   when it is replayable -- an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), an
//!   `Idempotency-Key` header, or a route marked `idempotent`, *and* a body the transport can
//!   send again -- and paid from the budget;
//! - never after a response was passed on to the client (the loop ends there).
//!
//! Plain async code rather than `tower::retry`, which fights endpoint exclusion and streaming
//! bodies. When every endpoint that can take the request was tried, the next try reuses one
//! after a short jittered pause. When no endpoint can take it (all refusing, black-holed,
//! failing their checks, or none at all), the request is *held* (`upstream/hold.rs`) up to the
//! backend's `hold_timeout`, the endpoints it tried still excluded, and goes as soon as one is
//! back; when the hold expires the answer is 503 `no_healthy_endpoints` naming the last
//! failure.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use super::route::Route;
use crate::config::RetryOn;
use crate::error::{ProxyError, RetryClass};
use crate::runtime::random::random_below;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::hold::Woken;
use crate::upstream::{Backend, SendError, SendOptions};

/// At most this many tries per request, and remembered for exclusion (`retry.attempts` is at
/// most 10; tries that sent nothing are not counted there, but here).
const MAX_TRIED: usize = 10;

/// One way of carrying a request's tries to endpoints.
pub trait Transport {
    /// What a try that got a response head yields.
    type Answer;

    /// One exchange with `endpoint`, up to the response head. `keep_copy`: another try may
    /// follow, so keep what is needed to send the request again.
    fn send(
        &mut self,
        backend: &Backend,
        endpoint: &Arc<Endpoint>,
        options: SendOptions,
        keep_copy: bool,
    ) -> impl Future<Output = Result<Self::Answer, SendError>>;

    /// The status the retry policy and passive health see.
    fn status(answer: &Self::Answer) -> u16;

    /// Whether the request could be sent again after a try that may have reached an
    /// application (its body is in memory, or it has none).
    fn resendable(&self) -> bool;

    /// Whether there is a request to send (after a failure that took it away, none).
    fn has_request(&self) -> bool;
}

/// What the loop needs to know about a request, decided by its engine before the first try.
pub struct Plan {
    /// The request's whole deadline (`timeouts.request`, or a shorter `grpc-timeout`).
    pub deadline: Instant,
    /// Until when a request that no endpoint can take waits for one.
    pub hold_until: Instant,
    /// It may be sent twice (method, `Idempotency-Key`, or the route says so).
    pub idempotent: bool,
}

impl Plan {
    pub fn new(
        route: &Route,
        backend: &Backend,
        start: Instant,
        client_deadline: Option<Duration>,
        idempotent: bool,
    ) -> Plan {
        let timeout = match client_deadline {
            Some(t) => t.min(route.request_timeout),
            None => route.request_timeout,
        };
        let deadline = start + timeout;
        Plan {
            deadline,
            hold_until: (start + backend.config.hold_timeout).min(deadline),
            idempotent,
        }
    }
}

pub struct Outcome<A> {
    pub result: Result<A, ProxyError>,
    pub attempts: u32,
    pub endpoint: Option<SocketAddr>,
    /// The tries that failed before the last one (empty in the common case: no allocation).
    pub failed: Vec<FailedTry>,
}

impl<A> Outcome<A> {
    /// The same outcome with its answer turned into `f`'s.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Outcome<B> {
        Outcome {
            result: self.result.map(f),
            attempts: self.attempts,
            endpoint: self.endpoint,
            failed: self.failed,
        }
    }
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
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
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
        | ProxyError::ClientBody { .. }
        | ProxyError::BadRequest { .. }
        | ProxyError::UriTooLong
        | ProxyError::RequestHeaderTooLarge
        | ProxyError::MethodNotAllowed { .. }
        | ProxyError::UnsupportedTransferCoding
        | ProxyError::FaultInjected { .. } => false,
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

/// Forward a request to `backend` under `route`'s retry policy, each try carried by
/// `transport`.
pub async fn run<T: Transport>(
    route: &Route,
    backend: &Backend,
    transport: &mut T,
    plan: &Plan,
) -> Outcome<T::Answer> {
    backend.budget.deposit();
    let mut tries = Tries::new(route, backend, plan, transport.resendable());
    loop {
        let endpoint = match tries.next_endpoint().await {
            Ok(endpoint) => endpoint,
            Err(error) => return tries.end(Err(error)),
        };
        let now = Instant::now();
        let (options, keep_copy) = tries.start(&endpoint);
        let (limit, on_timeout) = tries.limit(now);
        let sent = match tokio::time::timeout_at(
            limit,
            transport.send(backend, &endpoint, options, keep_copy),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SendError {
                error: on_timeout,
                reused: false,
                request: None,
                unread: false,
            }),
        };
        match sent {
            Ok(answer) => {
                if tries.retries_answer(&endpoint, T::status(&answer), now) {
                    continue;
                }
                return tries.end(Ok(answer));
            }
            Err(failure) => {
                if let Err(error) = tries.after_failure(&endpoint, failure, transport, now) {
                    return tries.end(Err(error));
                }
            }
        }
    }
}

/// The state of one request's tries, and the named steps of the loop.
struct Tries<'a> {
    route: &'a Route,
    backend: &'a Backend,
    plan: &'a Plan,
    replayable: bool,
    /// `Endpoint::id` of each endpoint tried.
    tried: [usize; MAX_TRIED],
    n_tried: usize,
    /// Tries made.
    attempt: u32,
    /// Tries that may have reached an application (`retry.attempts` bounds them).
    counted: u32,
    failed: Vec<FailedTry>,
    /// The last failure, and whether it proved that nothing was sent.
    last_error: Option<ProxyError>,
    unsent: bool,
    held: bool,
    /// The hold was released: endpoints this request tried may have come back.
    came_back: bool,
    /// A stale pooled connection was retried already (the first one is free).
    raced: bool,
    /// The next try goes on a new connection (after a stale pooled one failed).
    fresh: bool,
    /// Where the last try went.
    last_endpoint: Option<SocketAddr>,
}

impl<'a> Tries<'a> {
    fn new(route: &'a Route, backend: &'a Backend, plan: &'a Plan, resendable: bool) -> Self {
        let resendable = resendable && route.retry.attempts > 1;
        Tries {
            route,
            backend,
            plan,
            replayable: resendable && plan.idempotent,
            tried: [0; MAX_TRIED],
            n_tried: 0,
            attempt: 0,
            counted: 0,
            failed: Vec::new(),
            last_error: None,
            unsent: false,
            held: false,
            came_back: false,
            raced: false,
            fresh: false,
            last_endpoint: None,
        }
    }

    /// The endpoint of the next try: one this request has not tried; else, when every
    /// endpoint that can take it was tried, one of those again (after a short jittered pause
    /// when the last try may have reached an application); else wait in the hold.
    async fn next_endpoint(&mut self) -> Result<Arc<Endpoint>, ProxyError> {
        if let Some(e) = self.backend.pick_excluding(&self.tried[..self.n_tried]) {
            return Ok(e);
        }
        // Boxed: rarely taken, and its sleeps would make every request's future larger.
        Box::pin(self.wait_for_endpoint()).await
    }

    /// `next_endpoint` when no untried endpoint can take the request now.
    async fn wait_for_endpoint(&mut self) -> Result<Arc<Endpoint>, ProxyError> {
        loop {
            if let Some(e) = self.backend.pick_excluding(&self.tried[..self.n_tried]) {
                return Ok(e);
            }
            let reuse = self.n_tried > 0
                && (std::mem::take(&mut self.came_back) || self.reusable())
                && self.backend.any_usable();
            if reuse {
                if !self.unsent {
                    let pause = Duration::from_millis(10 + random_below(40) as u64);
                    if Instant::now() + pause >= self.plan.deadline {
                        return Err(ProxyError::RequestTimeout);
                    }
                    tokio::time::sleep(pause).await;
                }
                self.n_tried = 0;
                continue;
            }
            // No endpoint can take the request right now: wait for one, with the endpoints
            // already tried still excluded when it ends.
            if self.holds() {
                self.held = true;
                if let Some(released) = self.hold().await {
                    self.came_back = released;
                    continue;
                }
            }
            if self.last_error.is_some() {
                self.failed.pop(); // the last try is reported as the outcome itself
            }
            return Err(self.give_up());
        }
    }

    /// Whether endpoints this request already tried may take it again (every usable one was
    /// tried): after an answer or a reset (within the attempts), or a refused HTTP/2 stream (a
    /// new connection may take it). Not after a failed TLS handshake: the same endpoint would
    /// fail the same way, so the request waits for a change (the hold) or gets the error.
    fn reusable(&self) -> bool {
        !self.unsent || matches!(self.last_error, Some(ProxyError::RefusedStream { .. }))
    }

    fn holds(&self) -> bool {
        !self.backend.config.hold_timeout.is_zero()
    }

    /// Wait in the backend's hold until an endpoint can take the request, or the hold ends
    /// (`None`). Waiting costs the backend nothing: endpoints come back through probes, checks
    /// or discovery, which release the hold (`upstream/hold.rs`). `Some(true)`: released, and
    /// an endpoint can take it (one this request tried may have come back); `Some(false)`: an
    /// endpoint it has not tried can take it.
    async fn hold(&self) -> Option<bool> {
        let tried = &self.tried[..self.n_tried];
        loop {
            match self.backend.hold.wait(self.plan.hold_until).await {
                Woken::Expired => return None,
                Woken::Released if self.backend.any_usable() => return Some(true),
                _ if self.backend.any_usable_except(tried) => return Some(false),
                _ => {}
            }
        }
    }

    /// The answer when no endpoint took the request: without a hold, the last failure itself;
    /// with one, `no_healthy_endpoints` (503: the backend is unavailable, not misbehaving),
    /// naming the last failure or, for a request that tried none, why the endpoints are out.
    fn give_up(&mut self) -> ProxyError {
        let backend = self.backend;
        let last = self.last_error.take().or_else(|| backend.why_unavailable());
        match last {
            None => ProxyError::NoEndpoints {
                backend: backend.name.clone(),
            },
            Some(last) if !self.holds() => last,
            Some(last) => ProxyError::NoHealthyEndpoints {
                backend: backend.name.clone(),
                last: Box::new(last),
            },
        }
    }

    /// Record a try to `endpoint`; how to send it, and whether to keep a copy of the request.
    fn start(&mut self, endpoint: &Arc<Endpoint>) -> (SendOptions, bool) {
        self.attempt += 1;
        self.last_endpoint = Some(endpoint.addr);
        let id = endpoint.id();
        if self.n_tried < MAX_TRIED && !self.tried[..self.n_tried].contains(&id) {
            self.tried[self.n_tried] = id;
            self.n_tried += 1;
        }
        let policy = &self.route.retry;
        let options = SendOptions {
            // Requests that must not be sent twice are sent more carefully (`Pool::checkout`).
            careful: !self.plan.idempotent,
            fresh: std::mem::take(&mut self.fresh),
            // A connect is given up after its patience only when another endpoint may take
            // over.
            patient: policy.attempts <= 1 || !policy.on.connect_failure,
        };
        // A try that sent nothing hands its request back: a copy is for the tries after one
        // that may have reached an application, which the last counted try has none of.
        let last = self.counted + 1 >= policy.attempts;
        (options, policy.attempts > 1 && !last)
    }

    /// When a try started at `now` gives up: the per-try timeout (`backend_request`) or the
    /// request's deadline, whichever comes first; which one decides the cause, so the log
    /// names the setting to change.
    fn limit(&self, now: Instant) -> (Instant, ProxyError) {
        let try_deadline = now + self.route.backend_request_timeout;
        match self.last_endpoint {
            Some(endpoint) if try_deadline < self.plan.deadline => {
                (try_deadline, ProxyError::BackendTimeout { endpoint })
            }
            _ => (self.plan.deadline, ProxyError::RequestTimeout),
        }
    }

    /// An answer came back: record it for passive health; `true` when it is retried (the
    /// route retries on its status, the request can be sent again, a try is left, and the
    /// budget pays).
    fn retries_answer(&mut self, endpoint: &Arc<Endpoint>, status: u16, now: Instant) -> bool {
        self.backend.report(endpoint, Ok(status));
        self.counted += 1;
        let policy = &self.route.retry;
        if self.counted >= policy.attempts || !self.replayable || !policy.on.status(status) {
            return false;
        }
        if !self.backend.budget.withdraw() {
            self.backend.metrics.budget_exhausted.inc();
            return false;
        }
        self.backend.metrics.retry(status_label(status));
        tracing::debug!(route = %self.route.name, endpoint = %endpoint.addr, status, attempt = self.attempt, "retrying after status");
        self.failed.push(FailedTry {
            endpoint: endpoint.addr,
            outcome: TryOutcome::Status(status),
            elapsed: now.elapsed(),
        });
        self.unsent = false;
        self.last_error = None;
        true
    }

    /// A try failed: record it; `Ok(())` to try again, or the error to answer with.
    fn after_failure<T: Transport>(
        &mut self,
        endpoint: &Arc<Endpoint>,
        failure: SendError,
        transport: &T,
        now: Instant,
    ) -> Result<(), ProxyError> {
        self.backend.report(endpoint, Err(&failure.error));
        let class = failure.error.retry_class();
        if class != RetryClass::NotSent {
            self.counted += 1;
        }
        let last = self.counted >= self.route.retry.attempts;
        let again = transport.has_request()
            && match class {
                RetryClass::NotSent => true,
                RetryClass::MaybeSent => self.replayable || failure.unread,
                RetryClass::Never => false,
            };
        let retry = again
            && self.route.retry.attempts > 1
            && wanted(&self.route.retry.on, &failure.error)
            && (self.attempt as usize) < MAX_TRIED
            && (class == RetryClass::NotSent || !last);
        self.failed.push(FailedTry {
            endpoint: endpoint.addr,
            outcome: TryOutcome::Cause(failure.error.cause()),
            elapsed: now.elapsed(),
        });
        let metrics = &self.backend.metrics;
        if retry && class == RetryClass::NotSent {
            // Nothing reached anyone: free (the budget bounds what reaches an application),
            // and the endpoint is out of rotation already if it refused.
            metrics.retry(failure.error.cause());
            self.unsent = true;
            self.last_error = Some(failure.error);
            return Ok(());
        }
        if retry && failure.unread && !(failure.reused && self.raced) {
            // Provably unread: free, as nothing reached an application. A stale pooled
            // connection says nothing about the backend's health and can fail one request
            // only, so the first one of a request is free (a burst of them after an app's
            // keep-alive timeout must not exhaust the budget), and the next try takes a new
            // connection. A new connection closed unread is an app stopping (penalised by
            // `report`).
            let reason = if failure.reused {
                self.raced = true;
                self.fresh = true;
                "stale_connection"
            } else {
                "unread"
            };
            metrics.retry(reason);
            self.unsent = false;
            self.last_error = Some(failure.error);
            return Ok(());
        }
        if retry {
            if self.backend.budget.withdraw() {
                tracing::debug!(route = %self.route.name, endpoint = %endpoint.addr, cause = failure.error.cause(), attempt = self.attempt, "retrying");
                metrics.retry(failure.error.cause());
                self.unsent = false;
                self.last_error = Some(failure.error);
                return Ok(());
            }
            metrics.budget_exhausted.inc();
        }
        self.failed.pop(); // the last try is reported as the outcome itself
        Err(failure.error)
    }

    fn end<A>(self, result: Result<A, ProxyError>) -> Outcome<A> {
        if self.held {
            match &result {
                Ok(_) => self.backend.metrics.held_served.inc(),
                Err(_) => self.backend.metrics.held_expired.inc(),
            };
        }
        let endpoint = match &result {
            Ok(_) => self.last_endpoint,
            Err(e) => e.endpoint().or(self.last_endpoint),
        };
        Outcome {
            result,
            attempts: self.attempt,
            endpoint,
            failed: self.failed,
        }
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
