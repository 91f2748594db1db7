//! What every client connection is served with (`Server`: the proxy, the client-side
//! timeouts, hyper's builder), and the one timer model both engines (`h1.rs`, `hyper.rs`)
//! follow: when a connection must close, and why.
//!
//! Why our own timeouts: hyper's HTTP/1 `header_read_timeout` starts as soon as the connection
//! waits for the next request, so it is also the keep-alive idle timeout; one setting cannot be
//! both 10 s (slow-loris guard) and 60 s (longer than the load balancer's keep-alive in front).
//! As Go's net/http does, the header-read clock starts at the first byte of a request head, and
//! the idle clock runs while no request is in flight. While draining, an idle HTTP/1.1
//! connection closes after `CLOSING_IDLE` of silence (closing it the moment a client writes a
//! request on it would fail that request), a busy one after its response (`Connection: close`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::time::Instant;

use super::limit::ConnectionLimit;
use crate::config::Downstream;
use crate::proxy::body::{now_ms, ClientConn};
use crate::proxy::Proxy;

/// While draining, an idle HTTP/1.1 connection is closed after this much silence...
pub(super) const CLOSING_IDLE: Duration = Duration::from_millis(500);
/// ...checked this often (hyper's engine, which has no timer of its own per read).
pub(super) const CLOSING_TICK: Duration = Duration::from_millis(50);

/// Settings and shared state for serving client connections.
pub struct Server {
    pub(super) builder: auto::Builder<TokioExecutor>,
    /// The same, HTTP/2 only: for connections whose ALPN chose h2.
    pub(super) h2_builder: auto::Builder<TokioExecutor>,
    pub(super) proxy: Arc<Proxy>,
    pub(super) idle: Duration,
    pub(super) header_read: Duration,
    pub(super) max_header_bytes: usize,
    /// HTTP/1.1 connections start in the direct HTTP/1.1 loop (`h1.rs`).
    pub(super) direct: bool,
    /// Client connections open at once (`limits.max_connections`).
    pub(super) limit: Arc<ConnectionLimit>,
}

impl Server {
    pub fn new(proxy: Arc<Proxy>, downstream: &Downstream, direct: bool) -> Server {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            // The read buffer bounds the request head: beyond it hyper answers 431.
            .max_buf_size(downstream.max_request_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            // WebSocket over HTTP/2 (RFC 8441): see proxy/tunnel.rs.
            .enable_connect_protocol()
            .max_header_list_size(downstream.max_request_header_bytes as u32);
        let h2_builder = builder.clone().http2_only();
        Server {
            builder,
            h2_builder,
            proxy,
            idle: downstream.idle,
            header_read: downstream.header_read,
            max_header_bytes: downstream.max_request_header_bytes,
            direct,
            limit: Arc::new(ConnectionLimit::new(downstream.max_connections)),
        }
    }
}

/// Why a connection with nothing in flight must close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// A request head started arriving and is not complete within `header_read`.
    HeaderRead,
    /// Nothing for `timeouts.idle`.
    Idle,
    /// Draining: nothing for `CLOSING_IDLE`.
    Closing,
}

impl Server {
    /// When `activity`'s connection must close if nothing happens, and why. `None` while a
    /// request is in flight (its response decides). The one rule for both engines.
    pub(super) fn due(&self, activity: &ClientConn, closing: bool) -> Option<(Instant, Due)> {
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = now_ms();
        let head = activity.head_started_ms.load(Ordering::Relaxed);
        let (since, quiet, why) = if head != 0 {
            (head - 1, self.header_read, Due::HeaderRead)
        } else if closing {
            (
                activity.last_active_ms.load(Ordering::Relaxed),
                CLOSING_IDLE,
                Due::Closing,
            )
        } else {
            (
                activity.last_active_ms.load(Ordering::Relaxed),
                self.idle,
                Due::Idle,
            )
        };
        let elapsed = Duration::from_millis(now.saturating_sub(since));
        Some((Instant::now() + quiet.saturating_sub(elapsed), why))
    }
}
