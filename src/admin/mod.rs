//! The admin listener: `/healthz` (the process is alive), `/readyz` (listeners bound, config
//! loaded and every discovered backend's first endpoint set in; 503 otherwise) and `/metrics`
//! (Prometheus text). HTTP/1.1 only, on its own port (default 127.0.0.1:9901), separate from
//! traffic so that probes and scrapes never queue behind client requests.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::drain::{Drain, Phase};
use crate::runtime::metrics::Metrics;
use crate::upstream::Backend;

/// What the admin endpoints report on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    pub drain: Arc<Drain>,
    /// Backends with discovered endpoints at start: not ready until each has its first set
    /// (a reload adding one later does not make a serving proxy unready).
    pub discovered: Vec<Weak<Backend>>,
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn answer(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.drain.phase() != Phase::Serving {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !state
                .discovered
                .iter()
                .all(|b| b.upgrade().is_none_or(|b| b.synced.load(Ordering::Relaxed)))
            {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: endpoint discovery incomplete\n",
                )
            } else if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&state, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
