//! The buffers of client connections belong to the worker, not to the connection: an idle
//! keep-alive connection holds none (nginx and HAProxy keep idle connections under 1.2 KiB; a
//! gateway holds thousands). A connection waiting for a request reads its first bytes into the
//! worker's scratch buffer, and takes a buffer from the worker's free list only when bytes
//! arrive; when an exchange ends with nothing pending, it gives its buffers back. Free lists
//! are bounded (count and capacity), so an idle worker keeps a few buffers, not a burst's.
//!
//! Worker threads run one single-threaded runtime each, so thread-locals are the worker's and
//! nothing here is shared between threads; the scratch buffer is only borrowed inside one
//! synchronous `poll_read`, never across an await.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// A read buffer's size when taken (it grows for larger heads).
pub const READ_BUF: usize = 8 * 1024;
/// Buffers kept per worker and kind.
const KEPT: usize = 64;
/// Buffers that grew beyond this are freed, not kept.
const KEPT_CAPACITY: usize = 32 * 1024;

thread_local! {
    static READS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer from the worker's free list (or a new one).
pub fn take_read() -> BytesMut {
    READS
        .with(|r| r.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUF))
}

/// A write buffer from the worker's free list (or a new one).
pub fn take_write() -> Vec<u8> {
    WRITES
        .with(|w| w.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(4096))
}

/// Give a read buffer back (emptied); the connection holds none from now.
pub fn give_read(buf: &mut BytesMut) {
    let mut buf = std::mem::take(buf);
    if buf.capacity() == 0 || buf.capacity() > KEPT_CAPACITY {
        return;
    }
    buf.clear();
    READS.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() < KEPT {
            r.push(buf);
        }
    });
}

/// Give a write buffer back (emptied); the connection holds none from now.
pub fn give_write(buf: &mut Vec<u8>) {
    let mut buf = std::mem::take(buf);
    if buf.capacity() == 0 || buf.capacity() > KEPT_CAPACITY {
        return;
    }
    buf.clear();
    WRITES.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() < KEPT {
            w.push(buf);
        }
    });
}

/// Read into `buf`; when `buf` holds no allocation yet (an idle connection), read into the
/// worker's scratch buffer first and take a buffer only if bytes came.
pub fn poll_read<T: AsyncRead + Unpin>(
    stream: &mut T,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() > buf.len() {
        return tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf);
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < READ_BUF {
            scratch.resize(READ_BUF, 0);
        }
        let mut read = ReadBuf::new(&mut scratch[..]);
        match Pin::new(stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let filled = read.filled();
                if !filled.is_empty() {
                    if buf.capacity() == 0 {
                        *buf = take_read();
                    }
                    buf.extend_from_slice(filled);
                }
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}
