//! HTTP/1.1 Upgrade (WebSocket and any other token): after the backend's `101 Switching
//! Protocols`, the client's and the backend's connections are spliced both ways until either
//! side closes (a half-close is passed on: `copy_bidirectional` shuts down the write side of
//! one when the other reaches EOF) or nothing moves for `timeouts.tunnel_idle`.
//!
//! Tunnels run on the proxy's `TaskTracker`, so a drain waits for them (up to `drain.timeout`)
//! like for in-flight requests; they are counted in `hitless_tunnels_open` and their bytes in
//! `hitless_tunnel_bytes_total`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::runtime::clock::now_ms;
use crate::runtime::metrics::Metrics;

/// The `Upgrade` token of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade`).
pub fn requested(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let asked = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
            .unwrap_or(false)
    });
    asked.then(|| upgrade.clone())
}

/// Put back the two hop-by-hop headers that an upgrade needs on the next hop.
pub fn restore_headers(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Splice the two sides once both upgrades complete.
pub async fn splice(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, metrics: Arc<Metrics>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let last = Arc::new(AtomicU64::new(now_ms()));
    let mut client = Watched {
        inner: TokioIo::new(client),
        last: Arc::clone(&last),
    };
    let mut upstream = Watched {
        inner: TokioIo::new(upstream),
        last: Arc::clone(&last),
    };
    metrics.tunnels_open.inc();
    let idle_ms = idle.as_millis() as u64;
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            done = copy.as_mut() => {
                if let Ok((up, down)) = done {
                    metrics.tunnel_bytes_up.inc_by(up);
                    metrics.tunnel_bytes_down.inc_by(down);
                }
                break;
            }
            _ = tick.tick() => {
                if now_ms().saturating_sub(last.load(Ordering::Relaxed)) > idle_ms {
                    tracing::debug!("tunnel idle timeout: closing");
                    break;
                }
            }
        }
    }
    metrics.tunnels_open.dec();
}

/// An upgraded stream that notes when bytes last moved.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.touch();
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
