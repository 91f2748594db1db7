//! The accept loop: take connections from a bound listener and serve each on its own task,
//! with the engine that fits it: the direct HTTP/1.1 loop (`h1.rs`; it hands anything
//! unusual to hyper) or hyper (`hyper.rs`: HTTP/2, or everything when `direct_path` is off).
//!
//! Listeners are bound by the composition root (`app.rs`) before anything is served, so a
//! config error or a taken port is reported before the process claims to be ready, and tests
//! can bind `127.0.0.1:0` themselves and hand the listener over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limit::Open;
use super::server::Server;
use crate::proxy::body::ClientConn;
use crate::runtime::metrics::Metrics;

/// Connections taken per wakeup of the accept loop before the worker serves others: a burst
/// leaves the kernel's queue quickly, and a flood cannot starve the connections already open.
const ACCEPT_BATCH: usize = 64;

/// What a listener is to its clients: TLS or plain text, and the port they reach it on
/// (`public_port`: routes may serve some listeners only).
#[derive(Clone)]
pub struct Entry {
    pub tls: Option<TlsAcceptor>,
    pub port: u16,
}

pub async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    entry: Entry,
) {
    let Entry { tls, port } = entry;
    let tls = tls.map(Arc::new);
    let limit = Arc::clone(&server.limit);
    metrics
        .max_connections
        .set(i64::try_from(limit.max()).unwrap_or(i64::MAX));
    loop {
        let room = tokio::select! {
            _ = shutdown.cancelled() => return,
            room = limit.room(&metrics, ACCEPT_BATCH) => room,
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = std::future::poll_fn(|cx| accept_batch(&listener, cx, room)) => accepted,
        };
        let (batch, error) = accepted;
        for (stream, client) in batch {
            let _ = stream.set_nodelay(true);
            let server = Arc::clone(&server);
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            // Counted from here, down when the task ends however it ends (a panic included).
            // Another worker may have taken the last place since `room`: wait for one.
            let open = loop {
                if let Some(open) = Open::take(metrics.downstream_connections(), &limit) {
                    break open;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = limit.room(&metrics, 1) => {}
                }
            };
            tracker.spawn(async move {
                let at = Accepted { client, port, open };
                serve(&server, stream, at, shutdown, tls.as_deref()).await;
            });
        }
        if let Some(e) = error {
            // EMFILE/ENFILE and friends: back off instead of spinning; the listener stays.
            metrics.accept_errors.inc();
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Connections accepted in one go, and the error that ended the batch, if one did.
type Batch = (Vec<(TcpStream, SocketAddr)>, Option<std::io::Error>);

/// Up to `max` connections that are ready now (at least one, or an error).
fn accept_batch(listener: &TcpListener, cx: &mut Context<'_>, max: usize) -> Poll<Batch> {
    let mut batch = Vec::new();
    while batch.len() < max {
        match listener.poll_accept(cx) {
            Poll::Ready(Ok(accepted)) => batch.push(accepted),
            Poll::Ready(Err(e)) => return Poll::Ready((batch, Some(e))),
            Poll::Pending => break,
        }
    }
    if batch.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready((batch, None))
    }
}

/// One accepted connection: who from, on which public port, and its place in the count.
struct Accepted {
    client: SocketAddr,
    port: u16,
    open: Open,
}

/// Serve one accepted connection until it closes, times out, or `shutdown` fires.
async fn serve(
    server: &Server,
    stream: TcpStream,
    at: Accepted,
    shutdown: CancellationToken,
    tls: Option<&TlsAcceptor>,
) {
    let Some(tls) = tls else {
        // The direct loop reads the first bytes either way (it tells HTTP/2's preface from a
        // broken one), and hands everything to hyper when `direct_path` is off.
        let activity = Arc::new(ClientConn::new(at.client, "http", at.port));
        activity.hold(Box::new(at.open));
        return super::h1::serve(server, stream, activity, shutdown).await;
    };
    // The handshake is part of reading the first request head: same timeout.
    // Boxed: the handshake's and the TLS engines' futures are large, and inline they would be
    // in every plain-text connection's task too.
    Box::pin(serve_tls(server, tls, stream, at, shutdown)).await
}

/// A TLS connection: handshake (within the header-read timeout), then the engine ALPN chose.
async fn serve_tls(
    server: &Server,
    tls: &TlsAcceptor,
    stream: TcpStream,
    at: Accepted,
    shutdown: CancellationToken,
) {
    let client = at.client;
    match tokio::time::timeout(server.header_read, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            let activity = Arc::new(ClientConn::new(client, "https", at.port));
            activity.hold(Box::new(at.open));
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
