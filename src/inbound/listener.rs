//! The accept loop: take connections from a bound listener and serve each on its own task,
//! with the engine that fits it: the direct HTTP/1.1 loop (`h1.rs`; it hands anything
//! unusual to hyper) or hyper (`hyper.rs`: HTTP/2, or everything when `direct_path` is off).
//!
//! Listeners are bound by the composition root (`app.rs`) before anything is served, so a
//! config error or a taken port is reported before the process claims to be ready, and tests
//! can bind `127.0.0.1:0` themselves and hand the listener over.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::net::SocketAddr;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use super::server::Server;
use crate::proxy::body::ClientConn;
use crate::runtime::metrics::Metrics;

pub async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    tls: Option<TlsAcceptor>,
) {
    let tls = tls.map(Arc::new);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                let server = Arc::clone(&server);
                let shutdown = shutdown.clone();
                let gauge = metrics.downstream_connections().clone();
                let tls = tls.clone();
                tracker.spawn(async move {
                    // Counted down when the task ends however it ends (a panic included).
                    let _open = Open::count(gauge);
                    serve(&server, stream, client, shutdown, tls.as_deref()).await;
                });
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one accepted connection until it closes, times out, or `shutdown` fires.
async fn serve(
    server: &Server,
    stream: TcpStream,
    client: SocketAddr,
    shutdown: CancellationToken,
    tls: Option<&TlsAcceptor>,
) {
    let Some(tls) = tls else {
        // The direct loop reads the first bytes either way (it tells HTTP/2's preface from a
        // broken one), and hands everything to hyper when `direct_path` is off.
        let activity = Arc::new(ClientConn::new(client, "http"));
        return super::h1::serve(server, stream, activity, shutdown).await;
    };
    // The handshake is part of reading the first request head: same timeout.
    match tokio::time::timeout(server.header_read, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            let activity = Arc::new(ClientConn::new(client, "https"));
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                // ALPN chose HTTP/2: hyper's HTTP/2 server only (a broken preface is an
                // HTTP/2 error, never an HTTP/1.1 answer).
                return server.serve_h2(stream, activity, shutdown).await;
            }
            super::h1::serve(server, stream, activity, shutdown).await
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}

/// An open client connection, counted in `hitless_downstream_connections_open` until dropped.
struct Open(Gauge);

impl Open {
    fn count(gauge: Gauge) -> Open {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
