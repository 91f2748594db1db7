//! Raw HTTP/1.1 connections for the direct path (`proxy/direct.rs`): a socket and its read
//! buffer, pooled per endpoint and worker beside the hyper connections, and the parsing that
//! path needs (response heads, body framing, the end of a chunked body).
//!
//! Why a second kind of connection: hyper's client hands each request to a connection task
//! through channels and re-parses every head into a `HeaderMap`; for the plain request that
//! is most of the traffic, hitless reads and writes the bytes itself (as nginx does), which
//! halves its CPU per request. Nothing here is used for TLS or HTTP/2 backends.
//!
//! No task watches an idle raw connection: a close that arrived while it was idle is found at
//! checkout (the runtime's readiness, or a `MSG_PEEK` for requests that must not be sent
//! twice), and one that arrives as the request goes out is the keep-alive race, which
//! `proxy/direct.rs` recognises as `Backend::send` does.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::runtime::metrics::{BackendMetrics, CloseReason};

/// Read buffer of a raw connection (grown for larger response heads, up to the limit).
pub const READ_BUF: usize = 16 * 1024;
/// At most this many response header fields (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// One raw upstream connection.
pub struct RawConn {
    pub stream: TcpStream,
    /// Bytes read and not consumed yet.
    pub buf: BytesMut,
    pub counted: Counted,
    /// A reset met the request's write (`send_raw`): the end the reads find is that reset
    /// (Linux reports it once, to the write), not the end of a body delimited by the close.
    pub reset: bool,
}

/// A connection counted open: dropping it counts the close, and why (`reason`).
pub struct Counted {
    pub reason: CloseReason,
    pub(super) metrics: Option<BackendMetrics>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.conns_open.dec();
            metrics.conn_closed(self.reason);
        }
    }
}

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

impl Framing {
    /// Whether a response's `Content-Length` still delimits its body on the client's side:
    /// only when a length framed it (or it has none), never on a 204 (RFC 9110 8.6). Both raw
    /// transports drop it otherwise and frame the body anew.
    pub fn keeps_length(self, status: u16) -> bool {
        matches!(self, Framing::Length(_) | Framing::Empty) && status != 204
    }
}

/// Finds the end of a chunked body in the bytes that pass through, without changing them, and
/// rejects what RFC 9112 7.1 does not allow (so that what is relayed is framed exactly one
/// way): a size line of hex digits (leading zeros allowed) and optional extensions of visible
/// characters, every line ended by CRLF (no bare CR or LF), each chunk's data followed by
/// CRLF, trailer lines `name: value`.
#[derive(Debug, Default)]
pub struct ChunkedEnd {
    state: ChunkState,
    size: u64,
    /// Significant hex digits of the size (leading zeros do not count).
    digits: u8,
    /// Whether the size line has a digit at all.
    sized: bool,
    /// Payload bytes seen (for the access log).
    pub data: u64,
    /// Chunk extension bytes seen (bounded: they carry nothing a client gets).
    extensions: usize,
}

/// At most this many bytes of chunk extensions in one body (hyper's limit too): a backend
/// could otherwise keep a stream busy without sending a byte of payload.
const MAX_EXTENSION_BYTES: usize = 16 * 1024;

/// What `ChunkedEnd::scan_with` found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// These bytes are payload.
    Data(std::ops::Range<usize>),
    /// The byte at this index belongs to the trailer section (a field line, CRLF included).
    Trailer(usize),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: whitespace, then `;` or the CR.
    AfterSize,
    /// After a `;`: whitespace, then an extension's name.
    ExtStart,
    ExtName,
    /// After an extension's name: whitespace, then `=`, `;` or the CR.
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValStart,
    ExtValToken,
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedEscape,
    /// After a value: whitespace, then `;` or the CR.
    ExtAfterVal,
    /// After the CR of a size line.
    SizeLf,
    Data,
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field's name.
    TrailerName,
    Trailer,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    LastLf,
    Done,
}

impl ChunkState {
    fn in_extension(self) -> bool {
        matches!(
            self,
            ChunkState::ExtStart
                | ChunkState::ExtName
                | ChunkState::ExtAfterName
                | ChunkState::ExtValStart
                | ChunkState::ExtValToken
                | ChunkState::ExtQuoted
                | ChunkState::ExtQuotedEscape
                | ChunkState::ExtAfterVal
        )
    }
}

/// A byte allowed in chunk extensions and trailer values: visible, space, tab, obs-text.
fn text(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

/// A byte of a token (a field name).
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ChunkedEnd {
    /// Scan `bytes`; `Ok(Some(n))`: the body ends after the first `n` of them.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        self.scan_with(bytes, |_| {})
    }

    /// `scan`, telling `on_part` where the payload and the trailer section's bytes are (for
    /// a reader that takes the body apart instead of relaying it as it is).
    pub fn scan_with(
        &mut self,
        bytes: &[u8],
        mut on_part: impl FnMut(Part),
    ) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if self.state.in_extension() {
                self.extensions += 1;
                if self.extensions > MAX_EXTENSION_BYTES {
                    return Err("chunk extensions too long");
                }
            }
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                        if self.digits > 0 || d > 0 {
                            self.digits += 1;
                        }
                        if self.digits > 15 {
                            return Err("chunk size too large");
                        }
                        self.sized = true;
                        self.size = (self.size << 4) | d;
                    }
                    b';' if self.sized => self.state = ChunkState::ExtStart,
                    b' ' | b'\t' if self.sized => self.state = ChunkState::AfterSize,
                    b'\r' if self.sized => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk size line"),
                },
                // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
                ChunkState::AfterSize | ChunkState::ExtAfterVal => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::ExtStart,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtStart => match b {
                    b' ' | b'\t' => {}
                    b if token(b) => self.state = ChunkState::ExtName,
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtName | ChunkState::ExtAfterName => match b {
                    b if token(b) && self.state == ChunkState::ExtName => {}
                    b' ' | b'\t' => self.state = ChunkState::ExtAfterName,
                    b'=' => self.state = ChunkState::ExtValStart,
                    b';' => self.state = ChunkState::ExtStart,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtValStart => match b {
                    b' ' | b'\t' => {}
                    b'"' => self.state = ChunkState::ExtQuoted,
                    b if token(b) => self.state = ChunkState::ExtValToken,
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtValToken => match b {
                    b if token(b) => {}
                    b' ' | b'\t' => self.state = ChunkState::ExtAfterVal,
                    b';' => self.state = ChunkState::ExtStart,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtQuoted => match b {
                    b'"' => self.state = ChunkState::ExtAfterVal,
                    b'\\' => self.state = ChunkState::ExtQuotedEscape,
                    b if text(b) => {}
                    _ => return Err("invalid chunk extension"),
                },
                ChunkState::ExtQuotedEscape => {
                    if !text(b) {
                        return Err("invalid chunk extension");
                    }
                    self.state = ChunkState::ExtQuoted;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err("bare CR in a chunk size line");
                    }
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let left = bytes.len() - i;
                    let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                    self.size -= take as u64;
                    self.data += take as u64;
                    if take > 0 {
                        on_part(Part::Data(i..i + take));
                    }
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data not ended by CRLF");
                    }
                    self.state = ChunkState::Size;
                    self.digits = 0;
                    self.sized = false;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::LastLf,
                    b if token(b) => {
                        self.state = ChunkState::TrailerName;
                        on_part(Part::Trailer(i));
                    }
                    _ => return Err("invalid trailer line"),
                },
                ChunkState::TrailerName => match b {
                    b':' => {
                        self.state = ChunkState::Trailer;
                        on_part(Part::Trailer(i));
                    }
                    b if token(b) => on_part(Part::Trailer(i)),
                    _ => return Err("invalid trailer field name"),
                },
                ChunkState::Trailer => match b {
                    b'\r' => {
                        self.state = ChunkState::TrailerLf;
                        on_part(Part::Trailer(i));
                    }
                    b if text(b) => on_part(Part::Trailer(i)),
                    _ => return Err("invalid trailer field value"),
                },
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err("bare CR in a trailer");
                    }
                    self.state = ChunkState::TrailerStart;
                    on_part(Part::Trailer(i));
                }
                ChunkState::LastLf => {
                    if b != b'\n' {
                        return Err("invalid end of chunked body");
                    }
                    self.state = ChunkState::Done;
                    return Ok(Some(i + 1));
                }
                ChunkState::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }
}

/// What the direct path needs from a response head; the head itself stays in the buffer.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the head (status line to the empty line).
    pub len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open after this response (and its framing leaves
    /// no doubt where the next one starts).
    pub keep_alive: bool,
}

/// Why a response head could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x (or a malformed or ambiguous head).
    Invalid(&'static str),
    TooLarge,
}

/// A `Content-Length` value: digits only (RFC 9110 8.6: no sign, no spaces inside), or a list
/// of identical such values.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Parse the response head at the start of `buf`: `Ok(None)` when it is not complete yet.
/// Interim (1xx) responses other than 101 are skipped (removed from `buf`) as hyper does.
/// `on_head` sees the final head's status, framing and fields, once (the direct path writes the
/// client's head from them, without a second pass).
///
/// Framing follows RFC 9112 6.3, strictly: a response to HEAD, a 204 or a 304 has no body; a
/// `Transfer-Encoding` whose last coding is chunked is chunked (and overrides a
/// `Content-Length`, but the connection is not reused after such a message); any other
/// transfer coding is read until the close, and one in an HTTP/1.0 response is faulty
/// framing (an error); otherwise a valid
/// `Content-Length` (digits only; several must agree), else until the close. A status below
/// 100 is not HTTP.
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    max_bytes: usize,
    on_head: impl FnOnce(u16, Framing, &[httparse::Header<'_>]),
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
                return Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Invalid(parse_error(e))),
        };
        if parsed > max_bytes {
            return Err(HeadError::TooLarge);
        }
        let status = response.code.unwrap_or(0);
        if status < 100 {
            return Err(HeadError::Invalid("response status below 100"));
        }
        if (100..200).contains(&status) && status != 101 {
            let _ = buf.split_to(parsed);
            continue;
        }
        if status == 101 {
            return Err(HeadError::Invalid(
                "101 Switching Protocols to a request without Upgrade",
            ));
        }
        let http11 = response.version == Some(1);
        let mut keep_alive = http11;
        let mut length: Option<u64> = None;
        let mut chunked = None;
        for h in response.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n =
                    content_length(h.value).ok_or(HeadError::Invalid("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Invalid("conflicting Content-Length values"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only the last coding decides; anything else than chunked ends with the close.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive |= !http11;
                    }
                }
            }
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::Empty
        } else {
            match (chunked, length) {
                (Some(_), _) if !http11 => {
                    // RFC 9112 6.1: faulty framing; until the close would hang on a server
                    // that keeps the connection.
                    return Err(HeadError::Invalid(
                        "Transfer-Encoding in an HTTP/1.0 response",
                    ));
                }
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) => Framing::Close,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::Close,
            }
        };
        if framing == Framing::Close || (chunked.is_some() && length.is_some()) {
            // Read until the close, or framing a smuggler would have chosen: never reused.
            keep_alive = false;
        }
        on_head(status, framing, response.headers);
        return Ok(Some(ResponseHead {
            status,
            len: parsed,
            framing,
            keep_alive,
        }));
    }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid response header name",
        httparse::Error::HeaderValue => "invalid response header value",
        httparse::Error::NewLine => "invalid line ending in response head",
        httparse::Error::Status => "invalid response status",
        httparse::Error::Token => "invalid token in response head",
        httparse::Error::TooManyHeaders => "too many response headers",
        httparse::Error::Version => "not an HTTP/1.x response",
    }
}

/// A seeded xorshift for the parsers' robustness tests: `next(n)` is in `0..n`.
#[cfg(test)]
pub(crate) fn test_rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(input: &[u8]) -> Result<Option<usize>, &'static str> {
        ChunkedEnd::default().scan(input)
    }

    #[test]
    fn chunked_end_is_found_in_one_piece_or_split_anywhere() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(ends(body), Ok(Some(end)));
        for split in 0..body.len() {
            let mut scanner = ChunkedEnd::default();
            let first = scanner.scan(&body[..split]);
            match first {
                Ok(Some(n)) => assert_eq!(n, end),
                Ok(None) => {
                    let rest = scanner.scan(&body[split..]);
                    assert_eq!(rest, Ok(Some(end - split)), "split at {split}");
                }
                Err(e) => panic!("split at {split}: {e}"),
            }
            assert_eq!(scanner.data, 11, "split at {split}");
        }
        assert_eq!(ends(b"0\r\n\r\n"), Ok(Some(5)));
        assert!(ends(b"0\n\n").is_err(), "bare LF refused");
        assert_eq!(ends(b"5\r\nhel"), Ok(None));
        assert_eq!(
            ends(b"0000000000000000000005\r\nhello\r\n0\r\n\r\n"),
            Ok(Some(36)),
            "leading zeros are not digits of the size"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut next = test_rng(0x2545_f491_4f6c_dd1d);
        let alphabet = b"0123456789abcdefABCDEF;\r\n \t:xz";
        for _ in 0..20_000 {
            let input: Vec<u8> = (0..next(40))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let mut scanner = ChunkedEnd::default();
            let split = next(input.len() + 1);
            if let Ok(None) = scanner.scan(&input[..split]) {
                if let Ok(Some(end)) = scanner.scan(&input[split..]) {
                    assert!(end <= input.len() - split);
                }
            }
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            head.extend_from_slice(&input);
            let mut buf = BytesMut::from(&head[..]);
            let _ = parse_response(&mut buf, false, 8192, |_, _, _| {});
        }
    }

    #[test]
    fn chunked_errors() {
        assert!(ends(b"zz\r\n").is_err());
        assert!(ends(b"\r\n").is_err(), "no size digits");
        assert!(ends(b"1\r\nab\r\n").is_err(), "data longer than its size");
        assert!(ends(b"ffffffffffffffffff\r\n").is_err(), "size overflow");
        assert!(ends(b"5\rhello\r\n").is_err(), "bare CR");
        assert!(ends(b"5;a\x00b\r\n").is_err(), "NUL in an extension");
        assert!(ends(b"5;e=<x>\r\n").is_err(), "not a token");
        assert_eq!(
            ends(b"5 ; a=1 ;b; c=\"x;\\\"y\"\r\nhello\r\n0\r\n\r\n").map(|e| e.is_some()),
            Ok(true)
        );
        assert!(ends(b"5;a\nhello").is_err(), "bare LF ends an extension");
        assert!(
            ends(b"0\r\nbad trailer\r\n\r\n").is_err(),
            "a trailer without a colon"
        );
        assert!(ends(b"0\r\nx: 1\n\r\n").is_err(), "bare LF in a trailer");
        // Chunk extensions are bounded per body (16 KiB), split or not.
        let mut long = b"1;e=".to_vec();
        long.extend(std::iter::repeat_n(b'x', 16 * 1024));
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(ends(&long), Err("chunk extensions too long"));
        let mut scanner = ChunkedEnd::default();
        let mut many = Vec::new();
        for _ in 0..2000 {
            many.extend_from_slice(b"1;ext=value\r\na\r\n");
        }
        let verdicts: Vec<_> = many.chunks(1000).map(|p| scanner.scan(p)).collect();
        assert!(verdicts.contains(&Err("chunk extensions too long")));
        let mut fine = b"1;e=".to_vec();
        fine.extend(std::iter::repeat_n(b'x', 1000));
        fine.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(ends(&fine), Ok(Some(fine.len())));
    }

    #[test]
    fn scan_with_reports_payload_and_trailer_bytes() {
        let body = b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n";
        // Split anywhere, the pieces give the same payload and trailer section.
        for split in 0..body.len() {
            let mut scanner = ChunkedEnd::default();
            let (mut data, mut trailer) = (Vec::new(), Vec::new());
            let mut end = None;
            for (piece, offset) in [(&body[..split], 0), (&body[split..], split)] {
                if end.is_some() {
                    break;
                }
                let found = scanner
                    .scan_with(piece, |part| match part {
                        Part::Data(r) => data.extend_from_slice(&piece[r]),
                        Part::Trailer(i) => trailer.push(piece[i]),
                    })
                    .unwrap();
                end = found.map(|n| n + offset);
            }
            assert_eq!(end, Some(body.len()), "split at {split}");
            assert_eq!(data, b"hello world", "split at {split}");
            assert_eq!(trailer, b"x-a: 1\r\nx-b: 2\r\n", "split at {split}");
        }
    }

    fn head(raw: &[u8], head_request: bool) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(raw);
        parse_response(&mut buf, head_request, 8192, |_, _, _| {})
    }

    #[test]
    fn response_framing() {
        let h = |raw: &[u8]| head(raw, false).unwrap().unwrap();
        let r = h(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(5), true)
        );
        assert_eq!(r.len, 38);
        let r = h(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.framing, Framing::Chunked, "chunked wins over a length");
        let r = h(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Close, false));
        let r = h(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Close, false));
        let r = h(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Empty, true));
        let r = h(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(0), false));
        let r = h(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            (r.framing, r.keep_alive),
            (Framing::Chunked, false),
            "never reused"
        );
        let r = h(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(r.framing, Framing::Length(5));
        let r = h(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.keep_alive, "HTTP/1.0 closes by default");
        let r = h(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(r.keep_alive);
        let r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty, "the answer to HEAD has no body");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
        let r = parse_response(&mut buf, false, 8192, |_, _, _| {})
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.len), (200, buf.len()));
    }

    #[test]
    fn response_errors() {
        assert_eq!(
            head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .unwrap_err(),
            HeadError::Invalid("conflicting Content-Length values")
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, false), Err(HeadError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            head(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(HeadError::Invalid(_))
        ));
        assert!(matches!(
            head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(HeadError::Invalid(_))
        ));
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(head(&big, false).unwrap_err(), HeadError::TooLarge);
        assert!(head(b"HTTP/1.1 200 OK\r\nA: b\r\n", false)
            .unwrap()
            .is_none());
    }
}
