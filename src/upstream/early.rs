//! An answer that came before the request was written is the answer, not a 502.
//!
//! An application that rejects an upload early (a 413 for its body limit, a 401 for an expired
//! token) writes its answer after reading the head only, and closes: its kernel resets the
//! connection, since the body was left unread. The proxy's next write of the body then fails
//! with a reset, and hyper's client gives up on that write error, while the answer is there to
//! read (Linux keeps what was received before a reset readable). The client would see a 502
//! in place of the application's 413: a 502 hitless would have made up.
//!
//! So on an upstream connection a write that fails with a reset is taken as written (the
//! bytes are dropped, and so are all later ones), and the read side tells what happened: the
//! answer the application wrote, if any, then the end of the connection, which is reported
//! as the write's reset so that what a failure proves (`proven_unread`) does not change. The
//! read side reports the reset at once, so no body is pumped into the void for long.
//!
//! Only until the reads have ended: once they reported the end of the connection (or an
//! error), a write's reset is the error it is. A tunnel whose backend closed (an upgrade:
//! the read side saw its end first) must end when the client's next bytes meet the reset,
//! not write them into the void for as long as the client sends. And a write that was taken
//! as written marks the connection (`Seen::met_reset`), so it is never pooled again.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether `e` says the peer reset or closed the connection under a write.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// What a connection's reads and writes tell those who hold it while hyper drives it.
#[derive(Debug, Default)]
pub struct Seen {
    /// A write met a reset and was taken as written: the connection is done, and the pool
    /// must not hand it out again (`pool.rs`).
    met_reset: AtomicBool,
    /// Bytes read so far: whether anything of an answer came back before a failure
    /// (`proven_unread`'s `nothing_back`).
    bytes_read: AtomicU64,
}

impl Seen {
    pub fn met_reset(&self) -> bool {
        self.met_reset.load(Ordering::Relaxed)
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// An upstream stream whose writes survive a reset until the reads have told it.
pub struct EarlyAnswer<T> {
    inner: T,
    /// The kind of the write error taken as written, once one was.
    reset: Option<io::ErrorKind>,
    /// The reads reported the end of the connection or an error: writes fail as they come.
    read_ended: bool,
    seen: Arc<Seen>,
}

impl<T> EarlyAnswer<T> {
    pub fn new(inner: T) -> EarlyAnswer<T> {
        EarlyAnswer {
            inner,
            reset: None,
            read_ended: false,
            seen: Arc::default(),
        }
    }

    /// What this connection's reads and writes tell, shared.
    pub fn seen(&self) -> Arc<Seen> {
        Arc::clone(&self.seen)
    }

    /// What a write does once one met a reset: nothing, until the reads have told it.
    fn after_reset(&self, len: usize) -> Option<Poll<io::Result<usize>>> {
        let kind = self.reset?;
        Some(Poll::Ready(if self.read_ended {
            Err(kind.into())
        } else {
            Ok(len)
        }))
    }

    /// A write's outcome: a reset before the reads ended becomes "all written", remembered.
    fn written(&mut self, polled: Poll<io::Result<usize>>, len: usize) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Err(e)) if is_reset(&e) && !self.read_ended => {
                self.reset = Some(e.kind());
                self.seen.met_reset.store(true, Ordering::Relaxed);
                Poll::Ready(Ok(len))
            }
            other => other,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EarlyAnswer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.seen
                .bytes_read
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        let end = match &polled {
            Poll::Ready(Ok(())) => room && read == 0,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if !end {
            return polled;
        }
        self.read_ended = true;
        match self.reset {
            // The end after a reset a write met (an end of stream, or TLS's error for one):
            // that reset is what the reader is told.
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => polled,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EarlyAnswer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(done) = self.after_reset(buf.len()) {
            return done;
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(polled, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if let Some(done) = self.after_reset(len) {
            return done;
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(polled, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(done) = self.after_reset(0) {
            return done.map_ok(|_| ());
        }
        let polled = Pin::new(&mut self.inner).poll_flush(cx).map_ok(|()| 0);
        self.written(polled, 0).map_ok(|_| ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn an_answer_before_a_reset_is_read_and_the_end_is_the_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 16];
            s.read_exact(&mut head).await.unwrap();
            s.write_all(b"HTTP/1.1 413 Too Large\r\n\r\n")
                .await
                .unwrap();
            // Closed: our next bytes meet a reset.
        });
        let mut up = EarlyAnswer::new(TcpStream::connect(addr).await.unwrap());
        up.write_all(b"POST / HTTP/1.1\r").await.unwrap();
        server.await.unwrap();
        // Writes go on "succeeding" once the reset arrived; without this wrapper one fails.
        for _ in 0..64 {
            up.write_all(&[b'x'; 65536]).await.unwrap();
        }
        assert!(up.reset.is_some());
        let mut answer = Vec::new();
        let end = up.read_to_end(&mut answer).await;
        assert_eq!(answer, b"HTTP/1.1 413 Too Large\r\n\r\n");
        let end = end.unwrap_err().kind();
        assert!(
            matches!(
                end,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{end:?}"
        );
        assert!(up.seen().met_reset());
        assert_eq!(up.seen().bytes_read(), answer.len() as u64);
        // The reads told it: writes fail from now on.
        assert!(up.write_all(b"more").await.is_err());
    }

    /// A tunnel whose backend closed: the reads saw the end first, so the client's next bytes
    /// end the tunnel with the reset instead of vanishing.
    #[tokio::test]
    async fn after_the_reads_ended_a_reset_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = listener.accept().await.unwrap();
        });
        let mut up = EarlyAnswer::new(TcpStream::connect(addr).await.unwrap());
        server.await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(up.read_to_end(&mut rest).await.unwrap(), 0);
        let mut failed = false;
        for _ in 0..64 {
            if up.write_all(&[b'x'; 65536]).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writes after the end went into the void");
        assert!(!up.seen().met_reset());
    }
}
