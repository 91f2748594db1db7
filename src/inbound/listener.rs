//! The accept loop: take connections from a bound listener and serve each on its own task.
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

use super::server::Server;
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
                    gauge.inc();
                    server.serve(stream, client, shutdown, tls.as_deref()).await;
                    gauge.dec();
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
