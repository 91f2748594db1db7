//! Out-of-band probes of an endpoint, never a client's request: the reachability probe (a
//! refused or unanswered connect took the endpoint out of rotation, `reach.rs`; one TCP
//! connect every `PROBE_INTERVAL` brings it back the moment it accepts again, its passive
//! record forgotten) and one active health check (`check`, for `checks.rs`).
//!
//! Who writes: `Backend::report` calls `mark_down` (the first failure starts the one probe
//! task of the endpoint); the probe marks it up; `Endpoints::publish` forgets an endpoint that
//! left the set (its probe then ends).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::endpoints::Endpoint;
use super::hold::Hold;
use super::reach::{Cause, ConnectTime};
use super::sniff::UpstreamIo;
use crate::config::{HealthCheckConfig, Protocol};
use crate::error::ProxyError;
use crate::runtime::metrics::BackendMetrics;

/// How often a down endpoint is probed: a restarted pod is back in rotation within this.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What a probe needs from its backend.
pub struct ProbeContext {
    pub connect_timeout: Duration,
    pub connect_time: Arc<ConnectTime>,
    pub hold: Arc<Hold>,
    pub metrics: BackendMetrics,
    pub backend: Arc<str>,
}

/// A connect to `endpoint` was refused or went unanswered: out of rotation now, and probed
/// until it accepts. Only the first caller starts the probe.
pub fn mark_down(endpoint: &Arc<Endpoint>, why: &ProxyError, context: ProbeContext) {
    let cause = Cause::of(why);
    if !endpoint.reach.set_down(cause) {
        return;
    }
    context.metrics.unreachable.inc();
    tracing::warn!(backend = %context.backend, endpoint = %endpoint.addr, cause = why.cause(), "endpoint does not accept connections: out of rotation until a probe connects");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime (not on a request path): nothing could probe; leave it in rotation.
        endpoint.reach.forget(&context.metrics);
        return;
    };
    runtime.spawn(probe(Arc::downgrade(endpoint), context));
}

/// Connect every `PROBE_INTERVAL` until one succeeds (the endpoint is back) or the endpoint
/// left the set.
async fn probe(endpoint: Weak<Endpoint>, context: ProbeContext) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(e) = endpoint.upgrade() else { return };
        if !e.reach.is_down() {
            return; // forgotten: it left the set
        }
        let addr = e.addr;
        let started = Instant::now();
        let connected = tokio::time::timeout(context.connect_timeout, TcpStream::connect(addr));
        let ok = matches!(connected.await, Ok(Ok(_)));
        context.metrics.probe(ok);
        if !ok {
            continue;
        }
        context.connect_time.observe(started.elapsed());
        e.health.recovered(&context.metrics);
        if e.reach.set_up() {
            context.metrics.unreachable.dec();
        }
        tracing::info!(backend = %context.backend, endpoint = %addr, "endpoint accepts connections again: back in rotation");
        context.hold.release();
        return;
    }
}

/// One check over a new connection made the way requests make them (TCP, or TLS for
/// `https`/`grpcs`): an HTTP GET of `path` (2xx/3xx passes; over HTTP/2 for `h2c`), or for
/// `grpc`/`grpcs` backends the gRPC health protocol (`grpc.health.v1.Health/Check` of
/// `grpc_service`, with tonic-health's client: SERVING passes).
pub(super) async fn check(
    e: &Endpoint,
    protocol: Protocol,
    config: &HealthCheckConfig,
) -> Result<(), String> {
    let addr = e.addr;
    let exchange = async {
        let io = e
            .pool
            .local()
            .open_for_check(addr)
            .await
            .map_err(|e| e.to_string())?;
        // An `https` backend may have chosen HTTP/2 by ALPN.
        let h2 = protocol.is_h2()
            || matches!(&io, UpstreamIo::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2"));
        let io = TokioIo::new(io);
        let scheme = if protocol.is_tls() { "https" } else { "http" };
        if matches!(protocol, Protocol::Grpc | Protocol::Grpcs) {
            return grpc_check(io, scheme, addr, &config.grpc_service).await;
        }
        let uri = if h2 {
            format!("{scheme}://{addr}{}", config.path)
        } else {
            config.path.clone()
        };
        let request = Request::get(uri)
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("status {}", status.as_u16()))
        }
    };
    tokio::time::timeout(config.timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(config.timeout)
            ))
        })
}

/// `grpc.health.v1.Health/Check` of `service` over a new HTTP/2 connection, with
/// tonic-health's generated client: SERVING passes.
async fn grpc_check(
    io: TokioIo<UpstreamIo>,
    scheme: &str,
    addr: std::net::SocketAddr,
    service: &str,
) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let origin: http::Uri = format!("{scheme}://{addr}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let mut client = HealthClient::with_origin(H2Channel(sender), origin);
    let answer = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|status| format!("grpc-status {} {}", status.code() as i32, status.message()))?;
    let status = answer.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("not SERVING ({status})"))
    }
}

/// A hyper HTTP/2 connection as the service tonic's generated clients call.
#[derive(Clone)]
struct H2Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<Self::Response, hyper::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
