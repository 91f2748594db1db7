//! One request and its answer on a connection the doctor opened, and the wait for that
//! connection's end. HTTP/1.1 is written and read as bytes here (httparse for the head, our own
//! reading of `Content-Length`, chunked and close-delimited bodies), because the checks need
//! what a client library hides: the head's exact size, whether the body ended by a close, and
//! the moment the server closes an idle connection. HTTP/2 (h2c and ALPN h2) goes through
//! hyper's client, whose connection task ends when the server closes.
//!
//! The server is not trusted: every read has a deadline ([`ANSWER_TIMEOUT`] per answer), a head
//! is read up to [`HEAD_CAP`] and a body up to [`BODY_CAP`], and nothing here indexes or
//! unwraps what came from the network.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::human;
use super::targets::Settings;

/// A byte stream to an endpoint: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(crate) type Stream = Box<dyn Io>;

/// The longest wait for one answer (head and body), and for a handshake.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// A response head is read up to this size (to measure heads beyond any sensible limit).
pub const HEAD_CAP: usize = 1 << 20;
/// A response body is read (and discarded) up to this size.
const BODY_CAP: u64 = 16 << 20;
/// A chunk-size or trailer line is at most this long.
const LINE_CAP: usize = 4096;

/// Why an exchange got no (whole) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout(Duration),
    /// The server closed the connection (or reset it) before the answer was complete.
    Closed(String),
    /// Bytes that are not the answer of the protocol spoken, or a local error.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(limit) => write!(f, "no answer within {}", human(*limit)),
            Failure::Closed(how) => write!(f, "the connection was {how} before an answer"),
            Failure::Other(what) => f.write_str(what),
        }
    }
}

fn io_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            Failure::Closed(format!("closed ({e})"))
        }
        _ => Failure::Other(e.to_string()),
    }
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `GET` of the probe path.
    Get,
    /// `grpc.health.v1.Health/Check` of the configured service.
    GrpcHealth,
    /// An HTTP/1.1 WebSocket handshake on `path` with this `Sec-WebSocket-Key`.
    WebSocket { path: String, key: String },
}

/// The parts of an answer the checks look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub status: u16,
    /// Status line and header fields with their line ends (over HTTP/2: the same text as
    /// HTTP/1.1 would carry it).
    pub head_bytes: usize,
    pub keep_alive: Option<String>,
    /// The server ends the connection after this answer (`Connection: close`, HTTP/1.0
    /// without keep-alive, or a body delimited by the close).
    pub closes: bool,
    /// From the request's first byte to the answer's last.
    pub elapsed: Duration,
    pub upgrade: Option<String>,
    pub websocket_accept: Option<String>,
    pub grpc: Option<GrpcAnswer>,
}

/// A gRPC health answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GrpcAnswer {
    /// `grpc-status` (trailers, or the head of a trailers-only answer).
    pub status: Option<String>,
    pub message: Option<String>,
    /// `HealthCheckResponse.status` (0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN).
    pub serving: Option<u64>,
}

/// An open connection, HTTP/1.1 or HTTP/2.
pub(crate) enum Conn {
    H1(H1),
    H2(H2),
}

impl Conn {
    pub async fn ask(
        &mut self,
        settings: &Settings,
        addr: SocketAddr,
        ask: &Ask,
    ) -> Result<Answer, Failure> {
        match self {
            Conn::H1(h1) => h1.ask(settings, addr, ask).await,
            Conn::H2(h2) => h2.ask(settings, addr, ask).await,
        }
    }

    /// Wait up to `limit` for the server to close the connection: `Some(after how long)`.
    pub async fn wait_close(&mut self, limit: Duration) -> Option<Duration> {
        match self {
            Conn::H1(h1) => h1.wait_close(limit).await,
            Conn::H2(h2) => h2.wait_close(limit).await,
        }
    }
}

/// An HTTP/1.1 connection read and written as bytes.
pub(crate) struct H1 {
    io: Stream,
    buf: Vec<u8>,
}

/// A parsed response head.
struct Head {
    status: u16,
    len: usize,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

impl H1 {
    pub fn new(io: Stream) -> H1 {
        H1 {
            io,
            buf: Vec::new(),
        }
    }

    fn request(settings: &Settings, addr: SocketAddr, ask: &Ask) -> Vec<u8> {
        let host = settings.authority(addr);
        match ask {
            Ask::Get | Ask::GrpcHealth => format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hitless-doctor\r\nAccept: */*\r\n\r\n",
                settings.path
            ),
            Ask::WebSocket { path, key } => format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hitless-doctor\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: {key}\r\n\r\n"
            ),
        }
        .into_bytes()
    }

    async fn ask(
        &mut self,
        settings: &Settings,
        addr: SocketAddr,
        ask: &Ask,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let deadline = started + ANSWER_TIMEOUT;
        let request = H1::request(settings, addr, ask);
        match tokio::time::timeout_at(deadline, self.io.write_all(&request)).await {
            Err(_) => return Err(Failure::Timeout(ANSWER_TIMEOUT)),
            Ok(Err(e)) => return Err(io_failure(&e)),
            Ok(Ok(())) => {}
        }
        let _ = tokio::time::timeout_at(deadline, self.io.flush()).await;
        let head = loop {
            let head = self.read_head(deadline).await?;
            // Interim answers (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            break head;
        };
        let mut answer = Answer {
            status: head.status,
            head_bytes: head.len,
            keep_alive: head.get("keep-alive").map(str::to_string),
            closes: head.has_token("connection", "close")
                || (head.http10 && !head.has_token("connection", "keep-alive")),
            upgrade: head.get("upgrade").map(str::to_string),
            websocket_accept: head.get("sec-websocket-accept").map(str::to_string),
            ..Answer::default()
        };
        if head.status == 101 {
            answer.elapsed = started.elapsed();
            return Ok(answer);
        }
        let bodiless = head.status == 204 || head.status == 304;
        if !bodiless {
            if head.has_token("transfer-encoding", "chunked") {
                self.skip_chunked(deadline).await?;
            } else if let Some(length) = head.get("content-length") {
                let length: u64 = length
                    .split(',')
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| Failure::Other(format!("bad Content-Length {length:?}")))?;
                if length > BODY_CAP {
                    return Err(Failure::Other(format!(
                        "a body of {length} bytes: more than the doctor reads"
                    )));
                }
                self.skip(length, deadline).await?;
            } else {
                self.skip_to_close(deadline).await?;
                answer.closes = true;
            }
        }
        answer.elapsed = started.elapsed();
        Ok(answer)
    }

    /// Read more bytes into `buf`: how many (0 at the end of the stream).
    async fn fill(&mut self, deadline: Instant) -> Result<usize, Failure> {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
            Err(_) => Err(Failure::Timeout(ANSWER_TIMEOUT)),
            Ok(Err(e)) => Err(io_failure(&e)),
            Ok(Ok(n)) => {
                self.buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                Ok(n)
            }
        }
    }

    async fn read_head(&mut self, deadline: Instant) -> Result<Head, Failure> {
        loop {
            if !self.buf.is_empty() {
                let mut fields = vec![httparse::EMPTY_HEADER; 1024];
                let mut response = httparse::Response::new(&mut fields);
                match response.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = Head {
                            status: response.code.unwrap_or(0),
                            len,
                            http10: response.version == Some(0),
                            headers: response
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_string(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect(),
                        };
                        self.buf.drain(..len.min(self.buf.len()));
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(Failure::Other(format!(
                            "not an HTTP/1.1 answer ({e}; first bytes {})",
                            printable(&self.buf)
                        )))
                    }
                }
                if self.buf.len() > HEAD_CAP {
                    return Err(Failure::Other(format!(
                        "a response head over {HEAD_CAP} bytes"
                    )));
                }
            }
            if self.fill(deadline).await? == 0 {
                return Err(Failure::Closed("closed".into()));
            }
        }
    }

    /// Consume `n` body bytes.
    async fn skip(&mut self, mut n: u64, deadline: Instant) -> Result<(), Failure> {
        loop {
            let take = n.min(self.buf.len() as u64) as usize;
            self.buf.drain(..take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            if self.fill(deadline).await? == 0 {
                return Err(Failure::Closed("closed mid-body".into()));
            }
        }
    }

    /// One line (without its CRLF).
    async fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return Ok(line);
            }
            if self.buf.len() > LINE_CAP {
                return Err(Failure::Other("a chunked body line too long".into()));
            }
            if self.fill(deadline).await? == 0 {
                return Err(Failure::Closed("closed mid-body".into()));
            }
        }
    }

    async fn skip_chunked(&mut self, deadline: Instant) -> Result<(), Failure> {
        let mut total = 0u64;
        loop {
            let line = self.line(deadline).await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| Failure::Other(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line(deadline).await?.is_empty() {}
                return Ok(());
            }
            total = total.saturating_add(size);
            if total > BODY_CAP {
                return Err(Failure::Other(
                    "a chunked body larger than the doctor reads".into(),
                ));
            }
            self.skip(size + 2, deadline).await?;
        }
    }

    async fn skip_to_close(&mut self, deadline: Instant) -> Result<(), Failure> {
        let mut total = 0u64;
        loop {
            total += self.buf.len() as u64;
            self.buf.clear();
            if total > BODY_CAP {
                return Err(Failure::Other("a body larger than the doctor reads".into()));
            }
            match self.fill(deadline).await {
                Ok(0) | Err(Failure::Closed(_)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_close(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + limit;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                // Unasked bytes (a 408 before the close, say): the close is what counts.
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// An HTTP/2 connection (hyper's client); `closed` fires when its connection task ends.
pub(crate) struct H2 {
    sender: http2::SendRequest<Full<Bytes>>,
    closed: oneshot::Receiver<()>,
    scheme: &'static str,
}

impl H2 {
    pub async fn handshake(io: Stream, tls: bool) -> Result<H2, Failure> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.max_header_list_size(HEAD_CAP as u32);
        let (sender, connection) =
            match tokio::time::timeout(ANSWER_TIMEOUT, builder.handshake(TokioIo::new(io))).await {
                Err(_) => return Err(Failure::Timeout(ANSWER_TIMEOUT)),
                Ok(Err(e)) => return Err(Failure::Other(format!("HTTP/2 handshake: {e}"))),
                Ok(Ok(pair)) => pair,
            };
        let (tx, closed) = oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = tx.send(());
        });
        Ok(H2 {
            sender,
            closed,
            scheme: if tls { "https" } else { "http" },
        })
    }

    async fn ask(
        &mut self,
        settings: &Settings,
        addr: SocketAddr,
        ask: &Ask,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let authority = settings.authority(addr);
        let request = match ask {
            Ask::GrpcHealth => {
                let service = settings.grpc_service.as_bytes();
                let mut message = Vec::new();
                if !service.is_empty() {
                    message.push(0x0a); // field 1, length-delimited
                    varint(service.len() as u64, &mut message);
                    message.extend_from_slice(service);
                }
                let mut body = vec![0u8];
                body.extend_from_slice(&(message.len() as u32).to_be_bytes());
                body.extend_from_slice(&message);
                http::Request::post(format!(
                    "{}://{authority}/grpc.health.v1.Health/Check",
                    self.scheme
                ))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .header(http::header::USER_AGENT, "hitless-doctor")
                .body(Full::new(Bytes::from(body)))
            }
            Ask::Get | Ask::WebSocket { .. } => {
                http::Request::get(format!("{}://{authority}{}", self.scheme, settings.path))
                    .header(http::header::USER_AGENT, "hitless-doctor")
                    .body(Full::new(Bytes::new()))
            }
        }
        .map_err(|e| Failure::Other(format!("cannot build the request: {e}")))?;
        let exchange = async {
            self.sender.ready().await.map_err(hyper_failure)?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(hyper_failure)?;
            let (parts, body) = response.into_parts();
            let head_bytes = format!("HTTP/2 {}\r\n", parts.status.as_u16()).len()
                + parts
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
                    .sum::<usize>()
                + 2;
            let collected = Limited::new(body, BODY_CAP as usize)
                .collect()
                .await
                .map_err(|e| Failure::Other(format!("reading the body: {e}")))?;
            let trailers = collected.trailers().cloned();
            let bytes = collected.to_bytes();
            let grpc = matches!(ask, Ask::GrpcHealth).then(|| {
                let field = |name: &str| {
                    trailers
                        .as_ref()
                        .and_then(|t| t.get(name))
                        .or_else(|| parts.headers.get(name))
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                GrpcAnswer {
                    status: field("grpc-status"),
                    message: field("grpc-message").map(|m| percent_decoded(&m)),
                    serving: health_status(&bytes),
                }
            });
            Ok(Answer {
                status: parts.status.as_u16(),
                head_bytes,
                elapsed: started.elapsed(),
                grpc,
                ..Answer::default()
            })
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout(ANSWER_TIMEOUT)))
    }

    async fn wait_close(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        match tokio::time::timeout(limit, &mut self.closed).await {
            Err(_) => None,
            Ok(_) => Some(start.elapsed()),
        }
    }
}

fn hyper_failure(e: hyper::Error) -> Failure {
    if e.is_closed() || e.is_canceled() || e.is_incomplete_message() {
        Failure::Closed(format!("closed ({e})"))
    } else {
        Failure::Other(e.to_string())
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2); a bad escape is kept as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `HealthCheckResponse.status` from a gRPC message (5-byte prefix, then protobuf): field 1
/// as a varint; absent (proto3 default) means 0, UNKNOWN. `None`: not such a message.
fn health_status(message: &[u8]) -> Option<u64> {
    let (&compressed, rest) = message.split_first()?;
    if compressed != 0 {
        return None;
    }
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let mut fields = rest.get(4..4 + len)?;
    let mut status = 0;
    while let Some((&tag, rest)) = fields.split_first() {
        let (value, rest) = read_varint(rest)?;
        match tag {
            0x08 => status = value,
            _ => return None, // HealthCheckResponse has one varint field
        }
        fields = rest;
    }
    Some(status)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// Bytes for a message: printable ASCII as is, the rest escaped; at most 16.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(16) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages() {
        assert_eq!(health_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(health_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(health_status(&[0, 0, 0, 0, 9, 0x08]), None, "short");
        assert_eq!(health_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(health_status(&[]), None);
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(read_varint(&v), Some((300, &[][..])));
        assert_eq!(
            percent_decoded("service%20not%20registered"),
            "service not registered"
        );
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
    }
}
