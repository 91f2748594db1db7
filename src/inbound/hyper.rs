//! hyper serving one client connection: HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN
//! h2 over TLS) through hyper-util's auto builder, for everything the direct loop (`h1.rs`)
//! does not take, with the client-side timer model of `server.rs` checked by a watchdog
//! (hyper reads the socket itself; `WatchedIo` notes when a request head starts) and the drain:
//! HTTP/2 GOAWAY at once, HTTP/1.1 `Connection: close` on the next answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::server::{Due, Server, CLOSING_TICK};
use crate::proxy::body::{now_ms, ClientConn};
use crate::proxy::fault;

impl Server {
    /// Serve a TLS connection whose ALPN chose HTTP/2 with hyper's HTTP/2 server only.
    pub(super) async fn serve_h2<T>(
        &self,
        stream: T,
        activity: Arc<ClientConn>,
        shutdown: CancellationToken,
    ) where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_with(true, stream, Bytes::new(), activity, shutdown)
            .await
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
        self.serve_with(false, stream, prefix, activity, shutdown)
            .await
    }

    async fn serve_with<T>(
        &self,
        h2_only: bool,
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
            linger: None,
        });
        let proxy = Arc::clone(&self.proxy);
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let proxy = Arc::clone(&proxy);
            let activity = Arc::clone(&service_activity);
            let h2 = request.version() == http::Version::HTTP_2;
            if h2 {
                activity.h2.store(true, Ordering::Relaxed);
            } else {
                let body = !hyper::body::Body::is_end_stream(request.body());
                activity.request_body.store(body, Ordering::Relaxed);
            }
            // Boxed: hyper moves each HTTP/2 stream's future into a task of its own, and a
            // pointer moves for less than the whole request's state.
            Box::pin(async move {
                let mut response = proxy.handle(request, Arc::clone(&activity)).await;
                if response.extensions().get::<fault::Reset>().is_some() {
                    // An injected reset: hyper drops the connection (HTTP/2: resets the
                    // stream) instead of answering.
                    return Err(std::io::Error::other("fault injected: reset"));
                }
                if !h2 && activity.closing.load(Ordering::Relaxed) {
                    // Draining: this answer is the connection's last (the client reconnects
                    // elsewhere); hyper closes the connection after writing it.
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::io::Error>(response)
            })
        });
        // HTTP/2 only (ALPN h2): `serve_connection`, as hyper-util's HTTP/2-only mode does not
        // apply to `serve_connection_with_upgrades` (HTTP/2's own upgrades, RFC 8441's
        // extended CONNECT, work without it).
        type Error = Box<dyn std::error::Error + Send + Sync>;
        let mut conn: Pin<
            Box<dyn GracefulConnection<Error = Error, Output = Result<(), Error>> + Send + '_>,
        > = if h2_only {
            Box::pin(self.h2_builder.serve_connection(io, service))
        } else {
            Box::pin(self.builder.serve_connection_with_upgrades(io, service))
        };

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
                    let draining = activity.closing.load(Ordering::Relaxed);
                    let Some((at, why)) = self.due(&activity, draining) else {
                        continue;
                    };
                    if at > tokio::time::Instant::now() || (closing && why != Due::HeaderRead) {
                        continue;
                    }
                    if why == Due::HeaderRead {
                        tracing::debug!(%client, "header read timeout: closing connection");
                        return;
                    }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
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
    /// Closing: until when the client's last bytes are read and dropped (`poll_shutdown`).
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
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
            if self.prefix.is_empty() {
                // Release the buffer it came from (the direct loop's): the connection may
                // stay open and idle for long.
                self.prefix = Bytes::new();
            }
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

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
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

    /// hyper closes an HTTP/1.1 connection: the answer is complete once the write side is shut
    /// down. A client may still be sending then (an upload the answer did not need: an
    /// application's early 413 or 401, passed on), and a close would reset the connection
    /// under its next write: many clients then fail before they read the answer. So when
    /// the close follows an answer to a request with a body (`LINGER_AFTER`), or bytes wait
    /// unread, what the client sends is read and dropped until it closes, for `LINGER` at
    /// most (nginx's lingering close). Otherwise (an idle connection closed, a bodiless
    /// request's `Connection: close`) the close is at once. Not for HTTP/2 (GOAWAY says it)
    /// nor a tunnel (an upgrade's half-close is passed on as is).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let a = &self.activity;
        if a.h2.load(Ordering::Relaxed) || a.upgraded.load(Ordering::Relaxed) {
            return Pin::new(&mut self.inner).poll_shutdown(cx);
        }
        let this = &mut *self;
        let mut scratch = [0u8; 4096];
        let deadline = match &mut this.linger {
            Some(deadline) => deadline,
            None => {
                std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                let a = &this.activity;
                let since = now_ms().saturating_sub(a.last_active_ms.load(Ordering::Relaxed));
                let after_body = a.request_body.load(Ordering::Relaxed) && since < LINGER_AFTER;
                if !after_body {
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                        // Nothing unread, or the client is gone: close.
                        _ => return Poll::Ready(Ok(())),
                    }
                }
                this.linger.insert(Box::pin(tokio::time::sleep(LINGER)))
            }
        };
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        // A bounded number of reads per wake-up: a fast sender must not hold the worker.
        for _ in 0..LINGER_READS {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                // The client closed (or reset): nothing left to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How long a closing HTTP/1.1 connection reads and drops what the client still sends.
const LINGER: Duration = Duration::from_secs(5);

/// A close this soon (ms) after the answer to a request with a body lingers: hyper closes
/// right after such an answer when the body was not read to its end.
const LINGER_AFTER: u64 = 1000;

/// Reads of up to 4 KiB per wake-up while lingering.
const LINGER_READS: usize = 16;
