//! HTTP/1.1 Upgrade (WebSocket and any other token): after the backend's `101 Switching
//! Protocols`, the client's and the backend's connections are spliced both ways until either
//! side closes (a half-close is passed on: `copy_bidirectional` shuts down the write side of
//! one when the other reaches EOF) or nothing moves for `timeouts.tunnel_idle`.
//!
//! WebSocket over HTTP/2 (RFC 8441): an HTTP/2 client opens the tunnel with an extended
//! CONNECT (`:protocol: websocket`; hitless advertises SETTINGS_ENABLE_CONNECT_PROTOCOL). The
//! backend gets the HTTP/1.1 handshake it expects (GET, `Upgrade: websocket`, a fresh
//! `Sec-WebSocket-Key`); its `101` becomes the client's `200`, and the HTTP/2 stream is spliced
//! with the backend's connection. WebSocket frames are the same bytes on both sides.
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

/// A tunnel the client asks for.
pub enum Upgrade {
    /// HTTP/1.1 `Connection: upgrade` with this `Upgrade` token.
    Http1(HeaderValue),
    /// HTTP/2 extended CONNECT with `:protocol: websocket` (RFC 8441).
    H2WebSocket,
}

/// The tunnel a request asks for, if any.
pub fn requested(parts: &http::request::Parts) -> Option<Upgrade> {
    match parts.version {
        http::Version::HTTP_11 => http1_token(&parts.headers).map(Upgrade::Http1),
        http::Version::HTTP_2 if parts.method == http::Method::CONNECT => parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .filter(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            .map(|_| Upgrade::H2WebSocket),
        _ => None,
    }
}

/// Turn an RFC 8441 CONNECT into the HTTP/1.1 WebSocket handshake a backend expects. The
/// WebSocket headers the client sent (version, subprotocols, extensions) stay as they are.
pub fn h2_websocket_to_http1(parts: &mut http::request::Parts, request_id: &HeaderValue) {
    parts.method = http::Method::GET;
    parts.extensions.remove::<hyper::ext::Protocol>();
    restore_headers(&mut parts.headers, HeaderValue::from_static("websocket"));
    parts
        .headers
        .insert("sec-websocket-key", websocket_key(request_id.as_bytes()));
    parts
        .headers
        .entry("sec-websocket-version")
        .or_insert(HeaderValue::from_static("13"));
}

/// The backend's `101` as the HTTP/2 client's `200` (RFC 8441 section 5): the HTTP/1.1-only
/// handshake headers go, subprotocol and extension choices stay.
pub fn http1_switch_to_h2(head: &mut http::response::Parts) {
    head.status = http::StatusCode::OK;
    for name in ["upgrade", "connection", "sec-websocket-accept"] {
        head.headers.remove(name);
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes, base64 (RFC 6455 4.1). Taken from the request id, which
/// is unique per request; the key only has to differ between handshakes, not be secret.
fn websocket_key(seed: &[u8]) -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 16];
    for (i, b) in seed.iter().enumerate() {
        bytes[i % 16] = bytes[i % 16].rotate_left(3) ^ b;
    }
    let mut out = Vec::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The `Upgrade` token of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade`).
fn http1_token(headers: &HeaderMap) -> Option<HeaderValue> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        let a = websocket_key(b"0123456789abcdef0123456789abcdef");
        let b = websocket_key(b"0123456789abcdef0123456789abcdee");
        assert_eq!(a.len(), 24);
        assert!(a.to_str().is_ok_and(|k| k.ends_with("==")));
        assert_ne!(a, b);
    }
}
