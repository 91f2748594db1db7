//! Protocol mismatch, named instead of guessed: the first bytes an endpoint sends on a
//! connection are kept (8 of them, once per connection), so that a failure to parse its answer
//! can say what it seems to speak and which `protocol:` setting fixes it: TLS records to a
//! plaintext `http` backend, an HTTP/2 SETTINGS/GOAWAY frame to an `http` backend, or an
//! HTTP/1.1 status line to an `h2c` backend.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Protocol;

/// The first bytes received on a connection (set once).
pub type FirstBytes = Arc<OnceLock<Vec<u8>>>;

/// An upstream stream: TCP, or TLS over TCP (`https`, `grpcs`).
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamIo::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            UpstreamIo::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(io) => io.is_write_vectored(),
            UpstreamIo::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}

/// An upstream stream that records the first bytes it reads.
pub struct Sniffed {
    inner: UpstreamIo,
    first: FirstBytes,
}

impl Sniffed {
    pub fn new(inner: UpstreamIo) -> (Sniffed, FirstBytes) {
        let first = FirstBytes::default();
        (
            Sniffed {
                inner,
                first: Arc::clone(&first),
            },
            first,
        )
    }
}

impl AsyncRead for Sniffed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        // One atomic load per read once set; the copy happens once per connection.
        if self.first.get().is_none() && buf.filled().len() > before {
            let got = &buf.filled()[before..];
            let _ = self.first.set(got[..got.len().min(8)].to_vec());
        }
        polled
    }
}

impl AsyncWrite for Sniffed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the endpoint seems to speak, when it is not what `configured` expects:
/// `(what it speaks, the setting that fixes it)`.
pub fn mismatch(configured: Protocol, first: &[u8]) -> Option<(&'static str, &'static str)> {
    // A TLS record: content type alert (21) or handshake (22), version 3.x.
    let tls = first.len() >= 2 && matches!(first[0], 0x15 | 0x16) && first[1] == 0x03;
    // An HTTP/2 frame header: 24-bit length, type SETTINGS (4) or GOAWAY (7).
    let h2 = first.len() >= 4 && first[0] == 0 && matches!(first[3], 0x04 | 0x07);
    let h1 = first.starts_with(b"HTTP/1.");
    match configured {
        _ if tls => Some(("TLS", "protocol: https")),
        Protocol::Http if h2 => Some(("HTTP/2 only", "protocol: h2c")),
        Protocol::H2c | Protocol::Grpc if h1 => Some(("HTTP/1.1", "protocol: http")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_tls_http2_and_http1() {
        let alert = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];
        assert_eq!(
            mismatch(Protocol::Http, &alert),
            Some(("TLS", "protocol: https"))
        );
        let settings = [0, 0, 6, 4, 0, 0, 0, 0];
        assert_eq!(
            mismatch(Protocol::Http, &settings),
            Some(("HTTP/2 only", "protocol: h2c"))
        );
        assert_eq!(mismatch(Protocol::H2c, &settings), None);
        assert_eq!(
            mismatch(Protocol::Grpc, b"HTTP/1.1 400 Bad"),
            Some(("HTTP/1.1", "protocol: http"))
        );
        assert_eq!(mismatch(Protocol::Http, b"HTTP/1.1 200 OK"), None);
    }
}
