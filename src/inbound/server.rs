//! One client connection: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on the same port through
//! hyper-util's auto builder, with hitless's own idle and header-read timeouts.
//!
//! Why our own timeouts: hyper's HTTP/1 `header_read_timeout` starts as soon as the connection
//! waits for the next request, so it is also the keep-alive idle timeout; one setting cannot be
//! both 10 s (slow-loris guard) and 60 s (longer than the load balancer's keep-alive in front).
//! As Go's net/http does, the header-read clock starts at the first byte of a request head
//! (seen by `WatchedIo`), and the idle clock runs while no request is in flight. A watchdog in
//! the connection task checks both a few times per timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Downstream;
use crate::proxy::body::{now_ms, ClientConn};
use crate::proxy::Proxy;

/// While draining, an idle HTTP/1.1 connection is closed after this much silence...
pub(super) const CLOSING_IDLE: Duration = Duration::from_millis(500);
/// ...checked this often.
const CLOSING_TICK: Duration = Duration::from_millis(50);

/// Settings and shared state for serving client connections.
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    pub(super) proxy: Arc<Proxy>,
    pub(super) idle: Duration,
    pub(super) header_read: Duration,
    pub(super) max_header_bytes: usize,
    /// HTTP/1.1 connections start in the direct HTTP/1.1 loop (`h1.rs`).
    direct: bool,
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
        Server {
            builder,
            proxy,
            idle: downstream.idle,
            header_read: downstream.header_read,
            max_header_bytes: downstream.max_request_header_bytes,
            direct,
        }
    }

    /// Serve one accepted connection until it closes, times out, or `shutdown` fires.
    pub async fn serve(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        shutdown: CancellationToken,
        tls: Option<&TlsAcceptor>,
    ) {
        let Some(tls) = tls else {
            let activity = Arc::new(ClientConn::new(client, "http"));
            if self.direct {
                return super::h1::serve(self, stream, activity, shutdown).await;
            }
            return self
                .serve_io(stream, Bytes::new(), activity, shutdown)
                .await;
        };
        // The handshake is part of reading the first request head: same timeout.
        match tokio::time::timeout(self.header_read, tls.accept(stream)).await {
            Ok(Ok(stream)) => {
                let activity = Arc::new(ClientConn::new(client, "https"));
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if self.direct && !h2 {
                    return super::h1::serve(self, stream, activity, shutdown).await;
                }
                self.serve_io(stream, Bytes::new(), activity, shutdown)
                    .await
            }
            Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        }
    }

    /// Serve `stream` with hyper; `prefix`: bytes already read from it (`h1.rs` hands a
    /// connection over after reading a request it does not take).
    pub(super) async fn serve_io<T>(
        &self,
        stream: T,
        prefix: Bytes,
        activity: Arc<ClientConn>,
        shutdown: CancellationToken,
    ) where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = activity.addr;
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            prefix,
            activity: Arc::clone(&activity),
        });
        let proxy = Arc::clone(&self.proxy);
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let proxy = Arc::clone(&proxy);
            let activity = Arc::clone(&service_activity);
            let h2 = request.version() == http::Version::HTTP_2;
            if h2 {
                activity.h2.store(true, Ordering::Relaxed);
            }
            async move {
                let mut response = proxy.handle(request, Arc::clone(&activity)).await;
                if !h2 && activity.closing.load(Ordering::Relaxed) {
                    // Draining: this answer is the connection's last (the client reconnects
                    // elsewhere); hyper closes the connection after writing it.
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);

        let idle_ms = self.idle.as_millis() as u64;
        let header_ms = self.header_read.as_millis() as u64;
        let tick = (self.idle.min(self.header_read) / 4).max(Duration::from_millis(25));
        let mut watchdog = tokio::time::interval(tick);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watchdog.tick().await; // the first tick is immediate
                               // `graceful_shutdown` was called (the connection ends after what is in flight).
        let mut closing = false;
        loop {
            tokio::select! {
                // The connection is what wakes this task nearly every time: poll it first.
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%client, error = %e, "client connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled(), if !activity.closing.load(Ordering::Relaxed) => {
                    // Drain, closing phase. HTTP/2: GOAWAY now, in-flight streams finish.
                    // HTTP/1.1: the next response says `Connection: close`; an idle connection
                    // is closed only after `CLOSING_IDLE` of silence, because closing it the
                    // moment a client writes a request on it would fail that request.
                    activity.closing.store(true, Ordering::Relaxed);
                    if activity.h2.load(Ordering::Relaxed) && !closing {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    watchdog = tokio::time::interval(CLOSING_TICK);
                }
                _ = watchdog.tick() => {
                    if activity.in_flight.load(Ordering::Relaxed) > 0 {
                        continue;
                    }
                    let now = now_ms();
                    if activity.closing.load(Ordering::Relaxed) && !closing {
                        let last = activity.last_active_ms.load(Ordering::Relaxed);
                        let head = activity.head_started_ms.load(Ordering::Relaxed);
                        if head == 0 && now.saturating_sub(last) >= CLOSING_IDLE.as_millis() as u64 {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        continue;
                    }
                    let head = activity.head_started_ms.load(Ordering::Relaxed);
                    if head != 0 && now.saturating_sub(head - 1) > header_ms {
                        tracing::debug!(%client, "header read timeout: closing connection");
                        return;
                    }
                    let last = activity.last_active_ms.load(Ordering::Relaxed);
                    if head == 0 && !closing && now.saturating_sub(last) > idle_ms {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The client socket, noting when bytes of a new request head start to arrive on an idle
/// connection. Two relaxed atomic loads per read; the clock is read only on idle connections.
/// Bytes already read from the socket (`prefix`) are read first.
struct WatchedIo<T> {
    inner: T,
    prefix: Bytes,
    activity: Arc<ClientConn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let a = &self.activity;
            if buf.filled().len() > before
                && a.in_flight.load(Ordering::Relaxed) == 0
                && a.head_started_ms.load(Ordering::Relaxed) == 0
            {
                a.head_started_ms.store(now_ms() + 1, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
