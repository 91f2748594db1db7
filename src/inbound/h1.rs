//! The direct HTTP/1.1 connection loop: client connections start here (plain text, and TLS
//! unless ALPN chose HTTP/2). Request
//! heads are read and parsed in place, and plain requests go the direct way
//! (`proxy/direct.rs`). The first request that is not plain (a body that is large, chunked
//! or not read yet, an upgrade, HTTP/2's preface, a malformed or oversized head...) hands the
//! connection, with the bytes read so
//! far, to hyper (`Server::serve_io`), which serves it from then on: everything hyper does
//! stays the answer to anything unusual.
//!
//! Timeouts and drain follow the one timer model of `server.rs` (`Server::due`), as hyper's
//! connections do: the idle timeout runs while no request is in flight, the header-read
//! timeout from the first byte of an incomplete head, and while draining an idle connection
//! closes after `CLOSING_IDLE` of silence, a busy one after its response (`Connection:
//! close`). One timer per connection, re-armed only when it fires early or a head arrives in
//! pieces.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buffers;
use super::server::{Due, Server};
use crate::proxy::body::{now_ms, ClientConn};
use crate::proxy::direct::{self, Parsed, Step};

pub(super) async fn serve<T>(
    server: &Server,
    mut stream: T,
    activity: Arc<ClientConn>,
    shutdown: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // No buffer until bytes arrive (`buffers.rs`): an idle connection holds none.
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut upstream = Vec::new();
    let timer = tokio::time::sleep(server.idle);
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        let request = loop {
            if !buf.is_empty() {
                if buf.len() < 4 && b"PRI ".starts_with(&buf) {
                    // Too short to tell HTTP/2's preface from a request: read on.
                } else if buf.starts_with(b"PRI ") {
                    // HTTP/2 prior knowledge (or the start of it): hyper's, when the whole
                    // preface is right; otherwise a GOAWAY (PROTOCOL_ERROR) and a close, as
                    // an HTTP/2 server would answer (RFC 9113 3.4), not an HTTP/1.1 400.
                    match h2_preface(&buf) {
                        Some(true) => {
                            return hand_off(server, stream, buf, activity, shutdown).await
                        }
                        Some(false) => {
                            let _ = Box::pin(stream.write_all(&GOAWAY_PROTOCOL_ERROR)).await;
                            return;
                        }
                        None => {}
                    }
                } else {
                    if upstream.capacity() == 0 {
                        upstream = buffers::take_write();
                    }
                    match direct::parse(
                        &server.proxy,
                        &buf,
                        &activity,
                        &mut upstream,
                        server.max_header_bytes,
                    ) {
                        // `runtime.direct_path: false`: every request through hyper (a head
                        // refused above is still answered here, with its cause).
                        Parsed::Ready(_) | Parsed::HandOff if !server.direct => {
                            return hand_off(server, stream, buf, activity, shutdown).await
                        }
                        Parsed::Ready(request) => break request,
                        Parsed::HandOff => {
                            return hand_off(server, stream, buf, activity, shutdown).await
                        }
                        Parsed::Refused(error) => {
                            Box::pin(server.proxy.refuse_direct(
                                &mut stream,
                                &mut out,
                                error,
                                &activity,
                            ))
                            .await;
                            return;
                        }
                        Parsed::Partial => {
                            if activity.head_started_ms.load(Ordering::Relaxed) == 0 {
                                activity
                                    .head_started_ms
                                    .store(now_ms() + 1, Ordering::Relaxed);
                                if let Some((at, _)) = server.due(&activity, closing) {
                                    if at < timer.deadline() {
                                        timer.as_mut().reset(at);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if buf.capacity() != 0 && buf.capacity() - buf.len() < 1024 {
                buf.reserve(buffers::READ_BUF);
            }
            tokio::select! {
                biased;
                read = std::future::poll_fn(|cx| buffers::poll_read(&mut stream, cx, &mut buf)) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = &mut timer => {
                    let Some((at, why)) = server.due(&activity, closing) else {
                        // Not reached: nothing is in flight while a head is awaited.
                        return;
                    };
                    if at <= Instant::now() {
                        if why == Due::HeaderRead {
                            tracing::debug!(client = %activity.addr, "header read timeout: closing connection");
                        }
                        return;
                    }
                    timer.as_mut().reset(at);
                }
                _ = shutdown.cancelled(), if !closing => {
                    closing = true;
                    activity.closing.store(true, Ordering::Relaxed);
                    if let Some((at, _)) = server.due(&activity, closing) {
                        timer.as_mut().reset(at);
                    }
                }
            }
        };
        let len = request.len;
        if out.capacity() == 0 {
            out = buffers::take_write();
        }
        // Boxed: the request's future lives while it is served, not in every idle
        // connection's task.
        let step = Box::pin(server.proxy.serve_direct(
            &mut stream,
            &mut out,
            &upstream,
            request,
            &activity,
            closing || shutdown.is_cancelled(),
        ))
        .await;
        if step == Step::Close {
            return;
        }
        buf.advance(len);
        if buf.is_empty() {
            // Nothing pending: the buffers go back to the worker until the next request.
            buffers::give_read(&mut buf);
            buffers::give_write(&mut out);
            buffers::give_write(&mut upstream);
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A GOAWAY frame: last stream 0, PROTOCOL_ERROR.
const GOAWAY_PROTOCOL_ERROR: [u8; 17] = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Whether `buf` (starting like the preface) is the HTTP/2 preface: `None` until it can tell.
fn h2_preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Some(false);
    }
    (n == PREFACE.len()).then_some(true)
}

async fn hand_off<T>(
    server: &Server,
    stream: T,
    buf: BytesMut,
    activity: Arc<ClientConn>,
    shutdown: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: hyper's connection state is large, and inline it would be in every direct
    // connection's task, idle ones included.
    Box::pin(server.serve_io(stream, buf.freeze(), activity, shutdown)).await
}
