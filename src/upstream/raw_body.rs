//! A response body read from a raw connection (`h1.rs`) as `http_body` frames, for requests
//! that hyper's engine read (HTTP/2 streams) and the raw transport carried (`proxy/stream.rs`):
//! the bytes after the head, delimited by the head's framing, a chunked body taken apart into
//! its payload and trailers. It holds the endpoint's lease until the body ends; then the
//! connection goes back to the worker's pool when the upstream keeps it, as `UpstreamBody`
//! does for hyper's connections. A body cut short (upstream closed or reset, invalid chunked
//! framing) is an error frame: the client's stream is reset, never ended as if complete.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::h1::{self, ChunkedEnd, Framing, Part, RawConn};
use super::lease::Lease;

/// At most this many bytes of trailer fields (hyper's limit for trailers is the same order).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a raw body ended before its end.
#[derive(Debug)]
pub struct BodyError(&'static str);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyError {}

pub struct RawBody {
    /// The connection, until the body ended (then pooled or closed).
    conn: Option<RawConn>,
    lease: Option<Lease>,
    framing: Framing,
    /// `Framing::Length`: payload bytes still to come.
    left: u64,
    /// `Framing::Chunked`: the scanner, and the trailer section's bytes (boxed: rare).
    chunked: Option<Box<Dechunk>>,
    /// Trailers read with the last data, for the next frame.
    trailers: Option<HeaderMap>,
    /// The upstream keeps the connection after this response.
    keep_alive: bool,
}

#[derive(Default)]
struct Dechunk {
    scanner: ChunkedEnd,
    trailer: Vec<u8>,
}

impl RawBody {
    /// The body that follows a response head whose bytes were consumed from `conn.buf`.
    pub fn new(conn: RawConn, lease: Lease, framing: Framing, keep_alive: bool) -> RawBody {
        let mut body = RawBody {
            conn: Some(conn),
            lease: Some(lease),
            framing,
            left: match framing {
                Framing::Length(n) => n,
                Framing::Empty => 0,
                Framing::Chunked | Framing::Close => u64::MAX,
            },
            chunked: (framing == Framing::Chunked).then(Box::default),
            trailers: None,
            keep_alive,
        };
        if matches!(framing, Framing::Empty | Framing::Length(0)) {
            body.finish(true);
        }
        body
    }

    /// The body ended (`complete`: as its framing said): the connection goes back to the
    /// pool when it can carry another exchange, the lease is released.
    fn finish(&mut self, complete: bool) {
        if let (Some(conn), Some(lease)) = (self.conn.take(), &self.lease) {
            if complete && self.keep_alive {
                // `checkin_raw` refuses a connection with bytes nobody asked for.
                lease.endpoint().pool.local().checkin_raw(conn);
            }
        }
        self.lease = None;
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.finish(false);
        Poll::Ready(Some(Err(BodyError(why))))
    }

    /// Take what the buffer holds of the body: `Some(frame)` when there is payload to pass on
    /// (or the end), `None` to read more.
    fn take(&mut self) -> Option<Result<Frame<Bytes>, BodyError>> {
        let conn = self.conn.as_mut()?;
        match self.framing {
            Framing::Empty => None,
            Framing::Length(_) => {
                let have = conn.buf.len() as u64;
                if have == 0 {
                    return None;
                }
                let take = usize::try_from(have.min(self.left)).unwrap_or(conn.buf.len());
                let data = conn.buf.split_to(take).freeze();
                self.left -= take as u64;
                if self.left == 0 {
                    self.finish(true);
                }
                Some(Ok(Frame::data(data)))
            }
            Framing::Close => {
                if conn.buf.is_empty() {
                    return None;
                }
                Some(Ok(Frame::data(conn.buf.split().freeze())))
            }
            Framing::Chunked => {
                let dechunk = self.chunked.get_or_insert_with(Box::default);
                if conn.buf.is_empty() {
                    return None;
                }
                let buf = &conn.buf;
                // The payload of one chunk (the common case: a read holds one) is split off
                // the buffer without a copy; the pieces of several are copied together.
                let mut first: Option<std::ops::Range<usize>> = None;
                let mut data = BytesMut::new();
                let mut too_large = false;
                let trailer = &mut dechunk.trailer;
                let scanned = dechunk.scanner.scan_with(buf, |part| match part {
                    Part::Data(range) if first.is_none() && data.is_empty() => first = Some(range),
                    Part::Data(range) => {
                        if let Some(f) = first.take() {
                            data.extend_from_slice(buf.get(f).unwrap_or(&[]));
                        }
                        data.extend_from_slice(buf.get(range).unwrap_or(&[]));
                    }
                    Part::Trailer(i) => {
                        if trailer.len() >= MAX_TRAILER_BYTES {
                            too_large = true;
                        } else if let Some(&b) = buf.get(i) {
                            trailer.push(b);
                        }
                    }
                });
                if too_large {
                    return Some(Err(BodyError("response trailers too large")));
                }
                let end = match scanned {
                    Err(why) => return Some(Err(BodyError(why))),
                    Ok(end) => end,
                };
                // What this read gave: `consumed` bytes of the buffer are the body's.
                let consumed = end.unwrap_or(conn.buf.len()).min(conn.buf.len());
                let payload = match first {
                    Some(range) if range.end <= consumed => {
                        conn.buf.advance(range.start);
                        let piece = conn.buf.split_to(range.len()).freeze();
                        conn.buf.advance(consumed - range.end);
                        piece
                    }
                    _ => {
                        conn.buf.advance(consumed);
                        data.freeze()
                    }
                };
                if end.is_none() {
                    return (!payload.is_empty()).then(|| Ok(Frame::data(payload)));
                }
                let trailers = match trailer_fields(&dechunk.trailer) {
                    Ok(fields) => fields,
                    Err(why) => return Some(Err(BodyError(why))),
                };
                self.finish(true);
                if payload.is_empty() {
                    // Nothing more to pass on but the trailers (or the end).
                    return trailers.map(|t| Ok(Frame::trailers(t)));
                }
                self.trailers = trailers;
                Some(Ok(Frame::data(payload)))
            }
        }
    }
}

/// The trailer section's field lines as a map (`None`: there were none), without the fields
/// that HTTP/2 does not carry (connection-specific ones: h2 would refuse the whole trailers).
/// A field that is not valid HTTP fails the body, as hyper's client does: never dropped
/// silently.
fn trailer_fields(bytes: &[u8]) -> Result<Option<HeaderMap>, &'static str> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut section = Vec::with_capacity(bytes.len() + 2);
    section.extend_from_slice(bytes);
    section.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let parsed = httparse::parse_headers(&section, &mut fields);
    let Ok(httparse::Status::Complete((_, fields))) = parsed else {
        return Err("invalid response trailers");
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes());
        let value = HeaderValue::from_bytes(f.value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err("invalid response trailer");
        };
        let hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
        );
        if !hop {
            map.append(name, value);
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

impl Drop for RawBody {
    fn drop(&mut self) {
        // Not read to the end (the client went away): the connection closes with the body.
        self.finish(false);
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        loop {
            match this.take() {
                Some(Err(e)) => return this.fail(e.0),
                Some(Ok(frame)) => return Poll::Ready(Some(Ok(frame))),
                None => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(h1::READ_BUF);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if conn.reset => {
                    return this.fail("upstream reset the connection during the body")
                }
                Ok(0) if this.framing == Framing::Close => {
                    this.finish(true);
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail("upstream closed the connection before the end of the body")
                }
                Ok(_) => {}
                Err(_) => return this.fail("upstream reset the connection during the body"),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(_) => {
                SizeHint::with_exact(if self.conn.is_some() { self.left } else { 0 })
            }
            Framing::Chunked | Framing::Close => SizeHint::default(),
        }
    }
}
