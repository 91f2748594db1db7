//! Request smuggling and response desync (issue #13, section 3), on both HTTP/1.1 engines: the
//! direct path (default) and hyper's (`runtime: {direct_path: false}`).
//!
//! **Requests.** Each case is sent on a fresh client connection to a fresh hitless in front of
//! a *recording upstream*: it records every byte per connection and parses it with a strict
//! RFC 9112 reader written here (`parse_request`: CRLF only, no obs-fold, token field names,
//! one `Host`, one `Content-Length` of digits only or `Transfer-Encoding: chunked` alone, strict
//! chunk lines), answering each message `200` with a body naming it. After the case's answer
//! (or 1.5 s), the client sends `GET /innocent` and `GET /last` (`Connection: close`) on the
//! same connection, and reads to the end. A case passes when hitless either rejected it (4xx,
//! or closed) with nothing of it reaching the upstream, or forwarded exactly one message the
//! strict reader accepts, with the expected body; in every case the upstream must see nothing
//! but the case itself, `/innocent` and `/last` (no `/smuggled`, no `GGET`, no leftover bytes),
//! and every 2xx the client got must be the upstream's answer to its own request, in order.
//! "Body": cases marked so are malformed in the chunked body, after a head hitless may already
//! have forwarded: there the upstream may see a message that never completes (aborted), never
//! a complete one.
//!
//! | case | expected | why |
//! |---|---|---|
//! | plain POST with Content-Length (control) | forward `hello` | valid |
//! | plain chunked POST (control) | forward `hello` | valid |
//! | CL.TE: `Content-Length: 6` + TE chunked, `0\r\n\r\nG` | reject, or forward `""` and close | RFC 9112 6.1: MAY reject or process by TE alone; MUST close after; 6.3(3): CL removed before forwarding |
//! | CL.TE: CL covers `0` chunk + `GET /smuggled` | reject, or forward `""` and close | same |
//! | TE.CL: TE chunked + `Content-Length: 4` | reject, or forward the chunk and close | same |
//! | `Transfer-Encoding: xchunked` + CL | reject | 6.3(4): chunked not final: MUST 400 and close |
//! | `Transfer-Encoding : chunked` + CL | reject | 5.1: whitespace before the colon: MUST 400 |
//! | `Transfer-Encoding: chunked, identity` + CL | reject | 6.3(4) |
//! | `Transfer-Encoding:\tchunked` | forward `hello` | HTAB is OWS: plain chunked |
//! | `Transfer-Encoding: chunked` then `Transfer-encoding: identity` | reject | combined value `chunked, identity`: 6.3(4) |
//! | `Transfer-encoding: identity` then `Transfer-Encoding: chunked` | reject (501), or forward `hello` | chunked final; unknown coding: 6.1 SHOULD 501; re-framed it is unambiguous |
//! | `Transfer-Encoding: \x0bchunked` + CL | reject | VT is not OWS: the coding is not `chunked`: 6.3(4) |
//! | `Content-Length: 5` twice | reject, or forward `hello` with one CL | RFC 9110 8.6: MAY reject or use the single value |
//! | `Content-Length: 5` and `Content-Length: 6` | reject | 6.3(5): invalid CL: MUST 400 |
//! | `Content-Length: 5, 5` | reject, or forward `hello` with one CL | RFC 9110 8.6 |
//! | `Content-Length: +5` / `0x5` / 2^64 | reject | CL = 1*DIGIT: 6.3(5) |
//! | obs-fold in `X-Folded` | reject, or forward unfolded | 5.2: MUST reject or replace with SP |
//! | obs-fold continuing `Content-Length` | reject | unfolded value `1 0` is invalid: 6.3(5) |
//! | bare CR in a header line | reject, or forward without it | 2.2: MUST treat as invalid or replace with SP |
//! | bare LF ending a header line (then CL) | reject, or forward `hello` | 2.2: MAY take LF as a line end |
//! | bare LF line endings throughout | reject, or forward | 2.2 |
//! | NUL in a header value | reject, or forward without it | RFC 9110 5.5: MUST reject or replace with SP |
//! | chunk size `ffffffffffffffffff` (body) | reject | overflows any size: the body cannot be delimited |
//! | chunk size `5x` (body) | reject | 7.1: chunk-size = 1*HEXDIG |
//! | chunk-ext ending in bare LF (body) | reject | 7.1: chunk lines end in CRLF (parsers disagree: desync) |
//! | chunk lines ending in bare LF (body) | reject | 7.1 |
//! | chunk data longer than its size (body) | reject | 7.1: CRLF must follow chunk-data |
//! | absolute-form `http://other.example/case`, `Host: x` | forward with `Host: other.example` | 3.2.2: MUST accept; the target's authority replaces Host |
//! | `Host` missing | reject | 3.2: MUST 400 |
//! | two `Host` lines | reject | 3.2: MUST 400 |
//! | HTTP/1.0 + TE chunked + CL, keep-alive | reject | 6.1: MUST treat the framing as faulty and close |
//! | whitespace-preceded line after the request line | reject, or forward by CL alone | 2.2: MUST reject or ignore the line |
//! | GET with a body and Content-Length | forward the body | 6.3(6): the length is the CL, for any method |
//!
//! **Responses.** A crafted upstream whose very first response (on the first connection) is
//! malformed, and every later one `200` with `marker:<path>` naming the request it answers
//! (only the first overall: were every connection's first response bad, B's request on a new
//! connection would get one too). Client A asks `/a` and gets the bad response; then client B
//! (another client connection) asks `/b` on the same single endpoint (hitless runs on the
//! test's runtime: one pool). B must get exactly `marker:/b`, never a byte of A's response,
//! and the malformed response's connection must not have carried another request; a control
//! case shows the connection *is* reused when the first response is valid, so the "not
//! reused" results mean something. A must get an answer (relayed, or a 502 where the
//! response is invalid), not a truncated one.
//!
//! | first response on the connection | expected | why |
//! |---|---|---|
//! | valid `Content-Length: 3` (control) | reused, B gets its marker | |
//! | `Content-Length` + TE chunked, a response after | not reused | RFC 9112 6.3(3): ought to be an error |
//! | `Content-Length: 3` and `Content-Length: 41` | A: 502 (not `bad`), not reused | 6.3(5): proxy MUST close, discard, 502 |
//! | `Content-Length: +3` | A: 502 (not `bad`), not reused | 6.3(5) |
//! | a second response after the Content-Length | not reused | unsolicited bytes |
//! | 204 with `Content-Length` and a body | not reused | 6.3(1): 204 ends at the head |
//! | 304 with `Content-Length` and a body | not reused | 6.3(1) |
//! | chunked, a response after the last chunk | not reused | unsolicited bytes |
//! | HTTP/1.0, TE chunked, keep-alive | not reused | 6.1: MUST treat framing as faulty and close |
//! | status `000` | A: 502 (not `bad`), not reused | RFC 9110 15: status codes are 100..599 |
//! | valid CL / 204 / chunked, then a response arriving late on the idle connection | not reused | unsolicited bytes on an idle connection |
//!
//! Set `SMUGGLING_VERBOSE=1` to print what each engine did with each case, and
//! `SMUGGLING_CASE=text` to run only the cases whose name contains `text`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};

// ---------------------------------------------------------------------------------------------
// Common
// ---------------------------------------------------------------------------------------------

/// Bytes as escaped ASCII, truncated to about 500 bytes.
fn esc(bytes: &[u8]) -> String {
    let s = bytes.escape_ascii().to_string();
    if s.len() > 500 {
        format!("{}...(+{} more)", &s[..500], s.len() - 500)
    } else {
        s
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Direct,
    Hyper,
}

const ENGINES: [Engine; 2] = [Engine::Direct, Engine::Hyper];

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Direct => "direct path",
            Engine::Hyper => "hyper (direct_path: false)",
        }
    }

    fn config(self, upstream: SocketAddr) -> String {
        let runtime = match self {
            Engine::Direct => "runtime: {direct_path: true}\n",
            Engine::Hyper => "runtime: {direct_path: false}\n",
        };
        format!("{runtime}{}", simple_config(upstream))
    }
}

fn verbose() -> bool {
    std::env::var_os("SMUGGLING_VERBOSE").is_some()
}

/// `SMUGGLING_CASE=text`: run only the cases whose name contains it.
fn selected(name: &str) -> bool {
    std::env::var("SMUGGLING_CASE").map_or(true, |only| name.contains(&only))
}

// ---------------------------------------------------------------------------------------------
// The strict reference parser (RFC 9112), for what reaches the upstream
// ---------------------------------------------------------------------------------------------

/// A request message the strict parser accepted.
#[derive(Clone, Debug)]
struct Message {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The target's path (absolute-form: without scheme and authority).
    fn path(&self) -> &str {
        match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => &self.target,
        }
    }

    fn describe(&self) -> String {
        format!("{} {} body={:?}", self.method, self.target, esc(&self.body))
    }
}

#[derive(Debug)]
enum Parsed {
    /// A whole message, and the bytes it took.
    Complete(Message, usize),
    Partial,
    Invalid(String),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field line `name: value` (no obs-fold, no whitespace before the colon, token name,
/// value of VCHAR / obs-text / SP / HTAB), returned with its value trimmed of OWS.
fn field_line(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(format!(
            "obs-fold (a line starting with whitespace): {}",
            esc(line)
        ));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("field line without a colon: {}", esc(line)))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(format!("invalid field name: {}", esc(name)));
    }
    let value = line[colon + 1..].trim_ascii();
    if let Some(b) = value
        .iter()
        .find(|&&b| !(b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80))
    {
        return Err(format!(
            "byte 0x{b:02x} in the value of {}: {}",
            String::from_utf8_lossy(name),
            esc(value)
        ));
    }
    Ok((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
}

/// Parse one request at the start of `buf`, strictly.
fn parse_request(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let head_end = find(buf, b"\r\n\r\n");
    let scan = head_end.map_or(buf.len(), |e| e + 4);
    for i in 0..scan {
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                return Parsed::Invalid(format!("bare LF in the head at byte {i}"))
            }
            b'\r' if i + 1 < scan && buf[i + 1] != b'\n' => {
                return Parsed::Invalid(format!("bare CR in the head at byte {i}"))
            }
            _ => {}
        }
    }
    let Some(end) = head_end else {
        if buf.len() > 64 * 1024 {
            return Parsed::Invalid("head longer than 64 KiB".into());
        }
        return Parsed::Partial;
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.is_empty() {
        return Parsed::Invalid("empty line before the request line".into());
    }
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Parsed::Invalid(format!("request line: {}", esc(request_line)));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Parsed::Invalid(format!("method: {}", esc(method)));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Parsed::Invalid(format!("target: {}", esc(target)));
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Parsed::Invalid(format!("version: {}", esc(version))),
    };
    let mut headers = Vec::new();
    for line in lines {
        match field_line(line) {
            Ok(field) => headers.push(field),
            Err(why) => return Parsed::Invalid(why),
        }
    }
    let named = |n: &str| {
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_slice())
            .collect::<Vec<&[u8]>>()
    };
    let hosts = named("host");
    if hosts.len() > 1 || (http11 && hosts.len() != 1) {
        return Parsed::Invalid(format!("{} Host fields", hosts.len()));
    }
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    if lengths.len() > 1 {
        return Parsed::Invalid(format!("{} Content-Length fields", lengths.len()));
    }
    if codings.len() > 1 {
        return Parsed::Invalid(format!("{} Transfer-Encoding fields", codings.len()));
    }
    if !lengths.is_empty() && !codings.is_empty() {
        return Parsed::Invalid("both Content-Length and Transfer-Encoding".into());
    }
    let message = |body: Vec<u8>| Message {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        headers: headers.clone(),
        body,
    };
    let start = end + 4;
    if let Some(length) = lengths.first() {
        if length.is_empty() || length.len() > 18 || !length.iter().all(u8::is_ascii_digit) {
            return Parsed::Invalid(format!("Content-Length: {}", esc(length)));
        }
        let n: usize = std::str::from_utf8(length).unwrap().parse().unwrap();
        if buf.len() < start + n {
            return Parsed::Partial;
        }
        return Parsed::Complete(message(buf[start..start + n].to_vec()), start + n);
    }
    if let Some(coding) = codings.first() {
        if !http11 {
            return Parsed::Invalid("Transfer-Encoding in HTTP/1.0".into());
        }
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Parsed::Invalid(format!("Transfer-Encoding: {}", esc(coding)));
        }
        return match parse_chunked(buf, start) {
            Ok(Some((body, end))) => Parsed::Complete(message(body), end),
            Ok(None) => Parsed::Partial,
            Err(why) => Parsed::Invalid(why),
        };
    }
    Parsed::Complete(message(Vec::new()), start)
}

/// A line ending in CRLF at `pos`: `Ok(None)` when not complete yet.
fn crlf_line(buf: &[u8], pos: usize) -> Result<Option<&[u8]>, String> {
    let rest = &buf[pos..];
    match find(rest, b"\r\n") {
        Some(eol) => {
            let line = &rest[..eol];
            if line.contains(&b'\n') || line.contains(&b'\r') {
                return Err(format!("bare CR or LF in a chunk line: {}", esc(line)));
            }
            Ok(Some(line))
        }
        None if rest.contains(&b'\n') => Err(format!("bare LF in a chunk line: {}", esc(rest))),
        None if rest.len() > 4096 => Err("chunk line longer than 4 KiB".into()),
        None => Ok(None),
    }
}

/// A chunked body starting at `pos`: its payload and where the message ends.
fn parse_chunked(buf: &[u8], mut pos: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line) = crlf_line(buf, pos)? else {
            return Ok(None);
        };
        let (size, ext) = match line.iter().position(|&b| b == b';') {
            Some(i) => (&line[..i], Some(&line[i..])),
            None => (line, None),
        };
        if size.is_empty() || size.len() > 8 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size line: {}", esc(line)));
        }
        if let Some(ext) = ext {
            if !ext
                .iter()
                .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b))
            {
                return Err(format!("chunk extension: {}", esc(ext)));
            }
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        pos += line.len() + 2;
        if size == 0 {
            loop {
                let Some(line) = crlf_line(buf, pos)? else {
                    return Ok(None);
                };
                pos += line.len() + 2;
                if line.is_empty() {
                    return Ok(Some((body, pos)));
                }
                field_line(line).map_err(|why| format!("trailer: {why}"))?;
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += 2;
    }
}

// ---------------------------------------------------------------------------------------------
// The recording upstream
// ---------------------------------------------------------------------------------------------

/// What one upstream connection received.
#[derive(Clone, Debug, Default)]
struct ConnRecord {
    bytes: Vec<u8>,
    /// Messages the strict parser accepted, with their index across connections.
    requests: Vec<(usize, Message)>,
    /// Why the strict parser rejected what followed (then answered 400 and closed).
    invalid: Option<String>,
    /// Bytes of an incomplete message when the connection ended (or now).
    unparsed: usize,
    closed: bool,
}

impl ConnRecord {
    fn describe(&self) -> String {
        let requests: Vec<String> = self
            .requests
            .iter()
            .map(|(i, m)| format!("#{i} {}", m.describe()))
            .collect();
        format!(
            "received {:?}; requests [{}]{}{}{}",
            esc(&self.bytes),
            requests.join(", "),
            self.invalid
                .as_ref()
                .map(|w| format!("; INVALID: {w}"))
                .unwrap_or_default(),
            if self.unparsed > 0 {
                format!("; {} bytes of an incomplete message", self.unparsed)
            } else {
                String::new()
            },
            if self.closed { "; closed" } else { "; open" },
        )
    }
}

struct Recorder {
    state: Mutex<(Vec<ConnRecord>, usize)>,
    events: watch::Sender<u64>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            state: Mutex::new((Vec::new(), 0)),
            events: watch::channel(0).0,
        })
    }

    fn update<T>(&self, f: impl FnOnce(&mut (Vec<ConnRecord>, usize)) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap());
        self.events.send_modify(|n| *n += 1);
        out
    }

    fn snapshot(&self) -> Vec<ConnRecord> {
        self.state.lock().unwrap().0.clone()
    }

    /// Wait until nothing changed for 100 ms and no open connection holds an incomplete
    /// message (at most 2 s): what hitless wrote has been read and parsed. (Absence of
    /// further bytes cannot be awaited as an event; this is bounded.)
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut events = self.events.subscribe();
        while Instant::now() < deadline {
            if timeout(Duration::from_millis(100), events.changed())
                .await
                .is_err()
            {
                let busy = self.snapshot().iter().any(|c| !c.closed && c.unparsed > 0);
                if !busy {
                    return;
                }
            }
        }
    }
}

fn upstream_answer(index: usize, message: &Message) -> String {
    format!("upstream#{index} {} {}", message.method, message.target)
}

async fn serve_recorded(mut stream: TcpStream, rec: Arc<Recorder>) {
    let id = rec.update(|(conns, _)| {
        conns.push(ConnRecord::default());
        conns.len() - 1
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        loop {
            match parse_request(&buf) {
                Parsed::Complete(message, n) => {
                    buf.drain(..n);
                    let left = buf.len();
                    let body = rec.update(|(conns, next)| {
                        let index = *next;
                        *next += 1;
                        let body = upstream_answer(index, &message);
                        conns[id].requests.push((index, message));
                        conns[id].unparsed = left;
                        body
                    });
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        rec.update(|(conns, _)| conns[id].closed = true);
                        return;
                    }
                }
                Parsed::Partial => break,
                Parsed::Invalid(why) => {
                    let left = buf.len();
                    rec.update(|(conns, _)| {
                        conns[id].invalid = Some(why);
                        conns[id].unparsed = left;
                    });
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\nconnection: close\r\n\r\nbad request")
                        .await;
                    let _ = stream.shutdown().await;
                    rec.update(|(conns, _)| conns[id].closed = true);
                    return;
                }
            }
        }
        let read = timeout(Duration::from_secs(10), stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                let left = buf.len();
                rec.update(|(conns, _)| {
                    conns[id].bytes.extend_from_slice(&chunk[..n]);
                    conns[id].unparsed = left;
                });
            }
            _ => {
                rec.update(|(conns, _)| conns[id].closed = true);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Parse the complete responses at the start of `buf` (the connection ended when `eof`):
/// the responses and the bytes they took.
fn parse_responses(buf: &[u8], eof: bool) -> (Vec<Response>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(&buf[pos..]) else {
            break;
        };
        let status = response.code.unwrap_or(0);
        let value = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let start = pos + head;
        if (100..200).contains(&status) {
            pos = start;
            continue;
        }
        if status == 204 || status == 304 {
            out.push(Response {
                status,
                body: Vec::new(),
            });
            pos = start;
            continue;
        }
        if value("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
            match dechunk(&buf[start..]) {
                Some((body, n)) => {
                    out.push(Response { status, body });
                    pos = start + n;
                    continue;
                }
                None => break,
            }
        }
        if let Some(n) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if buf.len() < start + n {
                break;
            }
            out.push(Response {
                status,
                body: buf[start..start + n].to_vec(),
            });
            pos = start + n;
            continue;
        }
        if !eof {
            break;
        }
        out.push(Response {
            status,
            body: buf[start..].to_vec(),
        });
        pos = buf.len();
    }
    (out, pos)
}

/// A chunked body (lenient: what hitless writes): its payload and its length.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let eol = find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..pos + eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos += eol + 2;
        if size == 0 {
            loop {
                let eol = find(&buf[pos..], b"\r\n")?;
                pos += eol + 2;
                if eol == 0 {
                    return Some((body, pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// How a client's reading ended.
#[derive(Clone, Debug, PartialEq)]
enum End {
    Eof,
    Error(String),
    TimedOut,
    /// Still open after the answers awaited (phase one only).
    Open,
}

/// Read from `stream` into `buf` until the connection ends, `done(buf)` holds, or `limit`.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> End {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 8192];
    loop {
        if done(buf) {
            return End::Open;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return End::TimedOut,
            Ok(Ok(0)) => return End::Eof,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return End::Error(e.kind().to_string()),
        }
    }
}

const FOLLOW_UPS: &[u8] =
    b"GET /innocent HTTP/1.1\r\nHost: x\r\n\r\nGET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// What the client of a request case saw.
struct ClientView {
    bytes: Vec<u8>,
    /// How the wait for the case's own answer ended.
    first: End,
    /// How the whole exchange ended.
    end: End,
}

impl ClientView {
    fn describe(&self) -> String {
        format!(
            "client got {:?} (first answer: {:?}, end: {:?})",
            esc(&self.bytes),
            self.first,
            self.end
        )
    }
}

/// Send `case` on a new connection; after its answer (or 1.5 s) the follow-ups; read to the end.
async fn exchange_case(addr: SocketAddr, case: &[u8]) -> ClientView {
    let mut stream = match timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        other => {
            return ClientView {
                bytes: Vec::new(),
                first: End::Error(format!("connect: {other:?}")),
                end: End::Error("connect".into()),
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let mut bytes = Vec::new();
    if let Err(e) = stream.write_all(case).await {
        let end = End::Error(format!("write: {}", e.kind()));
        return ClientView {
            bytes,
            first: end.clone(),
            end,
        };
    }
    let first = read_until(&mut stream, &mut bytes, Duration::from_millis(1500), |b| {
        !parse_responses(b, false).0.is_empty()
    })
    .await;
    if matches!(first, End::Eof | End::Error(_)) {
        return ClientView {
            bytes,
            end: first.clone(),
            first,
        };
    }
    // The connection is open (or hitless still waits for more of the case): go on.
    let _ = stream.write_all(FOLLOW_UPS).await;
    let end = read_until(&mut stream, &mut bytes, Duration::from_secs(5), |_| false).await;
    ClientView { bytes, first, end }
}

// ---------------------------------------------------------------------------------------------
// Request cases
// ---------------------------------------------------------------------------------------------

/// A request smuggled in a body; it must never reach the upstream as a request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 4xx (or closed), nothing of the case reaches the upstream.
    Reject,
    /// Forwarded once with the case's body; the follow-ups are served.
    Forward,
    /// Either of these.
    Either,
}

struct RequestCase {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// When forwarded: the body the upstream must receive.
    body: Vec<u8>,
    /// When forwarded: the client connection must close after the answer (RFC 9112 6.1).
    close_after: bool,
    /// When forwarded: the Host the upstream must see.
    host: &'static str,
    /// The malformation is in the (chunked) body: the upstream may see an aborted message.
    in_body: bool,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Expect, body: &str) -> RequestCase {
    RequestCase {
        name,
        bytes: bytes.into(),
        expect,
        body: body.as_bytes().to_vec(),
        close_after: false,
        host: "x",
        in_body: false,
    }
}

impl RequestCase {
    fn closing(mut self) -> Self {
        self.close_after = true;
        self
    }

    fn body_level(mut self) -> Self {
        self.in_body = true;
        self
    }

    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }
}

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// `POST /case` with `fields` (each ending in CRLF) and `body`.
fn post(fields: &str, body: &str) -> String {
    format!("POST /case HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}")
}

/// `POST /case` with `fields`, `Content-Length` of `body`, and `body`.
fn post_cl(fields: &str, body: &str) -> String {
    post(&format!("{fields}Content-Length: {}\r\n", body.len()), body)
}

fn request_cases() -> Vec<RequestCase> {
    use Expect::*;
    let zero_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    let hello_chunked = format!("{}0\r\n\r\n", chunk("hello"));
    let smuggled_chunked = format!("{}0\r\n\r\n", chunk(SMUGGLED));
    vec![
        case(
            "control: POST with Content-Length",
            post_cl("", "hello"),
            Forward,
            "hello",
        ),
        case(
            "control: chunked POST",
            post("Transfer-Encoding: chunked\r\n", &hello_chunked),
            Forward,
            "hello",
        ),
        case(
            "CL.TE: Content-Length: 6 + TE chunked, 0-chunk then G",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nG",
            ),
            Either,
            "",
        )
        .closing(),
        case(
            "CL.TE: CL covers the 0-chunk and a whole GET /smuggled",
            post_cl("Transfer-Encoding: chunked\r\n", &zero_then_smuggled),
            Either,
            "",
        )
        .closing(),
        case(
            "TE.CL: TE chunked + Content-Length: 4 (ends inside the chunk)",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &smuggled_chunked,
            ),
            Either,
            SMUGGLED,
        )
        .closing(),
        case(
            "TE.TE: Transfer-Encoding: xchunked + CL",
            post_cl("Transfer-Encoding: xchunked\r\n", &zero_then_smuggled),
            Reject,
            "",
        ),
        case(
            "TE.TE: 'Transfer-Encoding : chunked' (space before colon) + CL",
            post_cl("Transfer-Encoding : chunked\r\n", &zero_then_smuggled),
            Reject,
            "",
        ),
        case(
            "TE.TE: Transfer-Encoding: chunked, identity + CL",
            post_cl(
                "Transfer-Encoding: chunked, identity\r\n",
                &zero_then_smuggled,
            ),
            Reject,
            "",
        ),
        case(
            "TE.TE: Transfer-Encoding:<TAB>chunked (valid OWS)",
            post("Transfer-Encoding:\tchunked\r\n", &hello_chunked),
            Forward,
            "hello",
        ),
        case(
            "TE.TE: TE chunked, then Transfer-encoding: identity",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n",
                &hello_chunked,
            ),
            Reject,
            "",
        ),
        case(
            "TE.TE: Transfer-encoding: identity, then TE chunked",
            post(
                "Transfer-encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                &hello_chunked,
            ),
            Either,
            "hello",
        ),
        case(
            "TE.TE: Transfer-Encoding: <VT>chunked + CL",
            post_cl("Transfer-Encoding: \x0bchunked\r\n", &zero_then_smuggled),
            Reject,
            "",
        ),
        case(
            "duplicate Content-Length, equal (5, 5)",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Either,
            "hello",
        ),
        case(
            "duplicate Content-Length, different (5, 6)",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "helloG"),
            Reject,
            "",
        ),
        case(
            "list-valued Content-Length: 5, 5",
            post("Content-Length: 5, 5\r\n", "hello"),
            Either,
            "hello",
        ),
        case(
            "Content-Length: +5",
            post("Content-Length: +5\r\n", "hello"),
            Reject,
            "",
        ),
        case(
            "Content-Length: 0x5",
            post("Content-Length: 0x5\r\n", "hello"),
            Reject,
            "",
        ),
        case(
            "Content-Length: 18446744073709551616 (2^64)",
            post("Content-Length: 18446744073709551616\r\n", "hello"),
            Reject,
            "",
        ),
        case(
            "obs-fold: X-Folded continued on the next line",
            "GET /case HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            Either,
            "",
        ),
        case(
            "obs-fold: Content-Length: 1 continued by ' 0'",
            post("Content-Length: 1\r\n 0\r\n", "helloworld"),
            Reject,
            "",
        ),
        case(
            "bare CR inside a header line",
            "GET /case HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n",
            Either,
            "",
        ),
        case(
            "bare LF ends the line before Content-Length",
            post("X-A: 1\nContent-Length: 5\r\n", "hello"),
            Either,
            "hello",
        ),
        case(
            "bare LF line endings throughout the head",
            "GET /case HTTP/1.1\nHost: x\n\n",
            Either,
            "",
        ),
        case(
            "NUL in a header value",
            "GET /case HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            Either,
            "",
        ),
        case(
            "over-long chunk size ffffffffffffffffff",
            post(
                "Transfer-Encoding: chunked\r\n",
                "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            Reject,
            "",
        )
        .body_level(),
        case(
            "chunk size with junk (5x)",
            post("Transfer-Encoding: chunked\r\n", "5x\r\nhello\r\n0\r\n\r\n"),
            Reject,
            "",
        )
        .body_level(),
        case(
            "chunk-ext ending in a bare LF",
            post("Transfer-Encoding: chunked\r\n", "5;a\nhello\r\n0\r\n\r\n"),
            Reject,
            "",
        )
        .body_level(),
        case(
            "chunk lines ending in bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
            Reject,
            "",
        )
        .body_level(),
        case(
            "chunk data longer than its size",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX\r\n0\r\n\r\n"),
            Reject,
            "",
        )
        .body_level(),
        case(
            "absolute-form target vs a different Host",
            "GET http://other.example/case HTTP/1.1\r\nHost: x\r\n\r\n",
            Forward,
            "",
        )
        .host("other.example"),
        case(
            "Host missing",
            "GET /case HTTP/1.1\r\nX-A: 1\r\n\r\n",
            Reject,
            "",
        ),
        case(
            "two Host headers",
            "GET /case HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            Reject,
            "",
        ),
        case(
            "HTTP/1.0 + TE chunked + CL, keep-alive",
            format!(
                "POST /case HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{zero_then_smuggled}",
                zero_then_smuggled.len()
            ),
            Reject,
            "",
        ),
        case(
            "whitespace-preceded TE line right after the request line",
            format!(
                "POST /case HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\nContent-Length: {}\r\n\r\n{zero_then_smuggled}",
                zero_then_smuggled.len()
            ),
            Either,
            &zero_then_smuggled,
        ),
        case(
            "GET with a body and Content-Length",
            format!(
                "GET /case HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            Forward,
            SMUGGLED,
        ),
    ]
}

/// One request case on one engine: fresh upstream, fresh hitless.
async fn run_request_case(case: &RequestCase, engine: Engine) -> Result<String, String> {
    let rec = Recorder::new();
    let recorder = Arc::clone(&rec);
    let upstream = raw_server(move |stream| serve_recorded(stream, Arc::clone(&recorder))).await;
    let app = start_proxy(&engine.config(upstream.addr)).await;
    let client = exchange_case(app.traffic_addrs[0], &case.bytes).await;
    app.stop(Duration::from_secs(1)).await;
    rec.settle().await;
    let conns = rec.snapshot();
    let (outcome, problems) = judge_request(case, &client, &conns);
    if problems.is_empty() {
        return Ok(outcome);
    }
    let mut report = format!(
        "[{}] on {}: {outcome}\n  client sent {:?}\n  {}",
        case.name,
        engine.name(),
        esc(&case.bytes),
        client.describe()
    );
    for (i, c) in conns.iter().enumerate() {
        report.push_str(&format!("\n  upstream connection {i}: {}", c.describe()));
    }
    for p in &problems {
        report.push_str(&format!("\n  - {p}"));
    }
    Err(report)
}

/// Check what happened against the case; returns a one-line outcome and the problems.
fn judge_request(
    case: &RequestCase,
    client: &ClientView,
    conns: &[ConnRecord],
) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let mut requests: Vec<&(usize, Message)> =
        conns.iter().flat_map(|c| c.requests.iter()).collect();
    requests.sort_by_key(|(i, _)| *i);

    for (i, c) in conns.iter().enumerate() {
        if let Some(why) = &c.invalid {
            problems.push(format!(
                "upstream connection {i} received bytes the strict parser rejects: {why}"
            ));
        }
        if c.unparsed > 0 && c.invalid.is_none() && !case.in_body {
            problems.push(format!(
                "upstream connection {i} holds {} bytes of an incomplete message",
                c.unparsed
            ));
        }
        if c.unparsed > 0 && c.invalid.is_none() && case.in_body && !c.closed {
            problems.push(format!(
                "upstream connection {i} was left open with {} bytes of an aborted message",
                c.unparsed
            ));
        }
    }
    let ours: Vec<&(usize, Message)> = requests
        .iter()
        .copied()
        .filter(|(_, m)| m.path() == "/case")
        .collect();
    let others: Vec<&(usize, Message)> = requests
        .iter()
        .copied()
        .filter(|(_, m)| m.path() != "/case")
        .collect();
    let forwarded = !ours.is_empty() || conns.iter().any(|c| c.invalid.is_some());
    if ours.len() > 1 {
        problems.push(format!(
            "the case reached the upstream {} times",
            ours.len()
        ));
    }
    let follow_ups: Vec<(&str, &str)> = others
        .iter()
        .map(|(_, m)| (m.method.as_str(), m.target.as_str()))
        .collect();
    let served_follow_ups = match follow_ups[..] {
        [] => false,
        [("GET", "/innocent"), ("GET", "/last")] => true,
        _ => {
            let seen: Vec<String> = others.iter().map(|(_, m)| m.describe()).collect();
            problems.push(format!(
                "SMUGGLED: the upstream saw requests other than the case and the follow-ups \
                 (GET /innocent, GET /last): [{}]",
                seen.join(", ")
            ));
            true
        }
    };
    if let (Some((case_index, _)), Some((after, _))) = (ours.first(), others.first()) {
        if after < case_index {
            problems.push("the follow-ups reached the upstream before the case".into());
        }
    }

    match case.expect {
        Expect::Reject if forwarded => {
            problems.push("forwarded to the upstream; expected a rejection".into())
        }
        Expect::Forward if ours.is_empty() => {
            problems.push("not forwarded; expected it forwarded".into())
        }
        Expect::Forward if !served_follow_ups => problems.push(
            "the follow-up requests on the same connection were not served after a valid request"
                .into(),
        ),
        _ => {}
    }
    if let Some((_, m)) = ours.first() {
        if m.body != case.body {
            problems.push(format!(
                "forwarded with body {:?}; expected {:?}",
                esc(&m.body),
                esc(&case.body)
            ));
        }
        let host = m.header("host").unwrap_or_default();
        if host != case.host.as_bytes() {
            problems.push(format!(
                "forwarded with Host {:?}; expected {:?}",
                esc(host),
                case.host
            ));
        }
        if m.target.contains("://") && m.target != format!("http://{}/case", case.host) {
            problems.push(format!(
                "forwarded target {} names another authority than Host",
                m.target
            ));
        }
        if case.close_after && served_follow_ups {
            problems.push(
                "the client connection stayed open after a request with both Content-Length and \
                 Transfer-Encoding (RFC 9112 6.1: MUST close)"
                    .into(),
            );
        }
    }

    // The client's side: an optional rejection first, then exactly the upstream's answers.
    let eof = client.end == End::Eof;
    let (responses, used) = parse_responses(&client.bytes, eof || client.end != End::TimedOut);
    if used < client.bytes.len() {
        problems.push(format!(
            "the client received bytes that are not a whole response: {:?}",
            esc(&client.bytes[used..])
        ));
    }
    let expected: Vec<String> = requests
        .iter()
        .map(|(i, m)| upstream_answer(*i, m))
        .collect();
    let mut skip = 0;
    let mut rejected_with = None;
    if let Some(first) = responses.first() {
        if !(200..300).contains(&first.status) {
            rejected_with = Some(first.status);
            skip = 1;
            if forwarded && conns.iter().all(|c| c.invalid.is_none()) {
                problems.push(format!(
                    "answered {} although the upstream received the request",
                    first.status
                ));
            } else if !((400..500).contains(&first.status) || first.status == 501) {
                problems.push(format!(
                    "rejected with {}; expected a 4xx (the client's fault)",
                    first.status
                ));
            }
        }
    }
    let answers: Vec<String> = responses[skip..]
        .iter()
        .map(|r| {
            if (200..300).contains(&r.status) {
                String::from_utf8_lossy(&r.body).into_owned()
            } else {
                format!("<status {}>", r.status)
            }
        })
        .collect();
    let reset = matches!(client.end, End::Error(_));
    let prefix = answers.len() <= expected.len() && answers[..] == expected[..answers.len()];
    if !(answers == expected || (reset && prefix)) {
        problems.push(format!(
            "the client's answers {answers:?} are not the upstream's answers {expected:?} in order"
        ));
    }
    if client.end == End::TimedOut {
        problems.push(
            "the client connection was neither closed nor finished within 5 s after the follow-ups"
                .into(),
        );
    }

    let outcome = match (forwarded, rejected_with) {
        (true, _) if !ours.is_empty() => format!(
            "forwarded ({}){}",
            ours[0].1.describe(),
            if served_follow_ups {
                ", connection kept"
            } else {
                ", connection closed"
            }
        ),
        (true, _) => "forwarded (invalid at the upstream)".to_string(),
        (false, Some(status)) => format!(
            "rejected {status}{}{}",
            if served_follow_ups {
                ", connection kept"
            } else {
                ", connection closed"
            },
            if conns.iter().any(|c| c.unparsed > 0) {
                ", upstream saw an aborted message"
            } else {
                ""
            }
        ),
        (false, None) => format!("closed without an answer ({:?})", client.end),
    };
    (outcome, problems)
}

#[tokio::test]
async fn request_smuggling_cases_on_both_engines() {
    let cases = request_cases();
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases.iter().filter(|c| selected(c.name)) {
        for engine in ENGINES {
            runs += 1;
            match run_request_case(case, engine).await {
                Ok(outcome) => {
                    if verbose() {
                        println!("ok   [{}] {}: {outcome}", case.name, engine.name());
                    }
                }
                Err(report) => {
                    if verbose() {
                        println!("FAIL {report}");
                    }
                    failures.push(report);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} request case runs failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Response cases
// ---------------------------------------------------------------------------------------------

/// A whole response that must never reach client B.
const POISON: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\npoison";

struct ResponseCase {
    name: &'static str,
    /// The upstream's first response (on the first connection).
    first: Vec<u8>,
    /// Written on the same connection once client A has its answer.
    late: Option<Vec<u8>>,
    /// The control: the connection must be reused.
    reuse: bool,
    /// The first response is invalid: A must not get its payload (`bad`) as an answer.
    invalid: bool,
}

fn response_case(name: &'static str, first: impl Into<Vec<u8>>) -> ResponseCase {
    ResponseCase {
        name,
        first: first.into(),
        late: None,
        reuse: false,
        invalid: false,
    }
}

impl ResponseCase {
    fn invalid(mut self) -> Self {
        self.invalid = true;
        self
    }

    fn late(mut self, bytes: &str) -> Self {
        self.late = Some(bytes.as_bytes().to_vec());
        self
    }
}

fn response_cases() -> Vec<ResponseCase> {
    let chunked_bad = "3\r\nbad\r\n0\r\n\r\n";
    vec![
        ResponseCase {
            reuse: true,
            ..response_case(
                "control: a valid Content-Length response",
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad",
            )
        },
        response_case(
            "Content-Length and Transfer-Encoding: chunked, a response after",
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{chunked_bad}{POISON}",
                chunked_bad.len() + POISON.len()
            ),
        ),
        response_case(
            "two different Content-Lengths (3 and 3 + a response)",
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: {}\r\n\r\nbad{POISON}",
                3 + POISON.len()
            ),
        )
        .invalid(),
        response_case(
            "Content-Length: +3, a response after",
            format!("HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nbad{POISON}"),
        )
        .invalid(),
        response_case(
            "a second response right after the Content-Length",
            format!("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad{POISON}"),
        ),
        response_case(
            "204 with Content-Length and a body (a response)",
            format!(
                "HTTP/1.1 204 No Content\r\ncontent-length: {}\r\n\r\n{POISON}",
                POISON.len()
            ),
        ),
        response_case(
            "304 with Content-Length and a body (a response)",
            format!(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: {}\r\n\r\n{POISON}",
                POISON.len()
            ),
        ),
        response_case(
            "chunked, a response after the last chunk",
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{chunked_bad}{POISON}"),
        ),
        response_case(
            "HTTP/1.0 with Transfer-Encoding: chunked and keep-alive",
            format!(
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n{chunked_bad}"
            ),
        ),
        response_case(
            "status 000",
            "HTTP/1.1 000 Zero\r\ncontent-length: 3\r\n\r\nbad",
        )
        .invalid(),
        response_case(
            "valid Content-Length, then a response arriving late on the idle connection",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad",
        )
        .late(POISON),
        response_case(
            "valid 204, then a response arriving late on the idle connection",
            "HTTP/1.1 204 No Content\r\n\r\n",
        )
        .late(POISON),
        response_case(
            "valid chunked, then a response arriving late on the idle connection",
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{chunked_bad}"),
        )
        .late(POISON),
    ]
}

#[derive(Debug, Default)]
struct CraftState {
    /// Per connection, the request targets it received.
    conns: Vec<Vec<String>>,
    /// The connection that carried the first response.
    first_conn: Option<usize>,
    first_written: bool,
    late_written: bool,
}

/// The crafted upstream: the very first request gets `first` (and `late` when told to), every
/// other `200 marker:<target>`.
struct Crafted {
    state: Mutex<CraftState>,
    events: watch::Sender<u64>,
    go: Notify,
    first: Vec<u8>,
    late: Option<Vec<u8>>,
}

impl Crafted {
    fn update<T>(&self, f: impl FnOnce(&mut CraftState) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap());
        self.events.send_modify(|n| *n += 1);
        out
    }

    /// Wait (at most 5 s) until `ready` holds.
    async fn wait(&self, ready: impl Fn(&CraftState) -> bool) -> bool {
        let mut events = self.events.subscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if ready(&self.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, events.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

async fn serve_crafted(mut stream: TcpStream, c: Arc<Crafted>) {
    let id = c.update(|s| {
        s.conns.push(Vec::new());
        s.conns.len() - 1
    });
    loop {
        let head = match timeout(Duration::from_secs(10), read_head(&mut stream)).await {
            Ok(head) if !head.is_empty() => head,
            _ => return,
        };
        let target = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .unwrap_or("?")
            .to_string();
        let first = c.update(|s| {
            s.conns[id].push(target.clone());
            let first = s.first_conn.is_none();
            if first {
                s.first_conn = Some(id);
            }
            first
        });
        if first {
            if stream.write_all(&c.first).await.is_err() {
                return;
            }
            c.update(|s| s.first_written = true);
            if let Some(late) = &c.late {
                if timeout(Duration::from_secs(10), c.go.notified())
                    .await
                    .is_err()
                    || stream.write_all(late).await.is_err()
                {
                    return;
                }
                c.update(|s| s.late_written = true);
            }
        } else {
            let body = format!("marker:{target}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Send one request (`Connection: close`) on a new connection and read to the end (5 s).
async fn exchange_close(addr: SocketAddr, path: &str) -> (Vec<u8>, End) {
    let mut stream = match timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        other => return (Vec::new(), End::Error(format!("connect: {other:?}"))),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return (Vec::new(), End::Error(format!("write: {}", e.kind())));
    }
    let mut bytes = Vec::new();
    let end = read_until(&mut stream, &mut bytes, Duration::from_secs(5), |_| false).await;
    (bytes, end)
}

async fn run_response_case(case: &ResponseCase, engine: Engine) -> Result<String, String> {
    let crafted = Arc::new(Crafted {
        state: Mutex::default(),
        events: watch::channel(0).0,
        go: Notify::new(),
        first: case.first.clone(),
        late: case.late.clone(),
    });
    let c = Arc::clone(&crafted);
    let upstream = raw_server(move |stream| serve_crafted(stream, Arc::clone(&c))).await;
    let app = start_proxy(&engine.config(upstream.addr)).await;
    let addr = app.traffic_addrs[0];
    let mut problems = Vec::new();

    let (a, a_end) = exchange_close(addr, "/a").await;
    if !crafted.wait(|s| s.first_written).await {
        problems.push("the upstream never wrote the first response".to_string());
    }
    if case.late.is_some() {
        crafted.go.notify_one();
        if !crafted.wait(|s| s.late_written).await {
            problems.push("the upstream never wrote the late bytes".to_string());
        }
    }
    let (b, b_end) = exchange_close(addr, "/b").await;
    app.stop(Duration::from_secs(1)).await;
    let state = crafted.state.lock().unwrap();

    let (a_responses, _) = parse_responses(&a, a_end == End::Eof);
    let (b_responses, b_used) = parse_responses(&b, b_end == End::Eof);
    let a_summary = match a_responses.first() {
        Some(r) => format!("A got {} {:?}", r.status, esc(&r.body)),
        None if a.is_empty() => format!("A got no answer ({a_end:?})"),
        None => format!("A got a truncated answer ({a_end:?})"),
    };
    if a_end == End::TimedOut {
        problems.push("client A's exchange did not finish within 5 s".into());
    }
    if a_responses.is_empty() && a.is_empty() {
        problems.push(format!(
            "client A got no answer at all (end: {a_end:?}); expected the answer or a 502"
        ));
    } else if a_responses.is_empty() {
        problems.push(format!(
            "client A's answer is truncated: its head announces more body than came before the \
             close (end: {a_end:?}); A gets a broken response instead of the answer or a 502"
        ));
    }
    if case.invalid && a_responses.iter().any(|r| r.body == b"bad") {
        problems.push(
            "A got the invalid response's payload; a proxy MUST discard it and answer 502 \
             (RFC 9112 6.3(5), RFC 9110 15)"
                .into(),
        );
    }
    match &b_responses[..] {
        [r] if r.status == 200 && r.body == b"marker:/b" && b_used == b.len() => {}
        _ => problems.push(format!(
            "B did not get exactly its own answer (200 marker:/b); end: {b_end:?}"
        )),
    }
    if contains(&b, b"poison") || contains(&b, b"bad") || contains(&b, b"marker:/a") {
        problems.push("DESYNC: B received bytes of the previous response".into());
    }
    let first_conn = state.first_conn.unwrap_or(0);
    let on_first = state.conns.get(first_conn).cloned().unwrap_or_default();
    if case.reuse {
        if on_first != ["/a", "/b"] {
            problems.push(format!(
                "control: B's request was expected on the first connection (reused); it carried \
                 {on_first:?}"
            ));
        }
    } else if on_first.len() > 1 {
        problems.push(format!(
            "the connection of the malformed response was reused: it carried {on_first:?}"
        ));
    }
    let outcome = format!(
        "{a_summary}; B got {}; first connection carried {on_first:?}; {} upstream connections",
        b_responses
            .first()
            .map(|r| format!("{} {:?}", r.status, esc(&r.body)))
            .unwrap_or_else(|| "nothing".into()),
        state.conns.len()
    );
    if problems.is_empty() {
        return Ok(outcome);
    }
    let mut report = format!(
        "[{}] on {}: {outcome}\n  upstream's first response {:?}{}\n  A received {:?} (end {a_end:?})\n  B received {:?} (end {b_end:?})\n  upstream connections (targets): {:?}",
        case.name,
        engine.name(),
        esc(&case.first),
        case.late
            .as_ref()
            .map(|l| format!(", then late {:?}", esc(l)))
            .unwrap_or_default(),
        esc(&a),
        esc(&b),
        state.conns
    );
    for p in &problems {
        report.push_str(&format!("\n  - {p}"));
    }
    Err(report)
}

#[tokio::test]
async fn response_desync_cases_on_both_engines() {
    let cases = response_cases();
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases.iter().filter(|c| selected(c.name)) {
        for engine in ENGINES {
            runs += 1;
            match run_response_case(case, engine).await {
                Ok(outcome) => {
                    if verbose() {
                        println!("ok   [{}] {}: {outcome}", case.name, engine.name());
                    }
                }
                Err(report) => {
                    if verbose() {
                        println!("FAIL {report}");
                    }
                    failures.push(report);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} response case runs failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The reference parser itself
// ---------------------------------------------------------------------------------------------

#[test]
fn the_reference_parser_is_strict() {
    let complete = |bytes: &str| match parse_request(bytes.as_bytes()) {
        Parsed::Complete(m, n) => (m, n),
        other => panic!("{bytes:?}: {other:?}"),
    };
    let invalid = |bytes: &[u8]| {
        assert!(
            matches!(parse_request(bytes), Parsed::Invalid(_)),
            "{:?}: {:?}",
            esc(bytes),
            parse_request(bytes)
        )
    };
    let two = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET";
    let (m, n) = complete(two);
    assert_eq!((m.body.as_slice(), n), (&b"hello"[..], two.len() - 3));
    let (m, _) = complete(
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    );
    assert_eq!(m.body, b"hello");
    let (m, _) = complete("GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(m.path(), "/p?q");
    assert!(matches!(
        parse_request(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel"),
        Parsed::Partial
    ));
    for bad in [
        &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        invalid(bad);
    }
}

#[test]
fn the_judge_catches_smuggling() {
    let message = |method: &str, target: &str, body: &str| Message {
        method: method.into(),
        target: target.into(),
        headers: vec![("Host".into(), b"x".to_vec())],
        body: body.as_bytes().to_vec(),
    };
    let conn = |requests: Vec<Message>| ConnRecord {
        requests: requests.into_iter().enumerate().collect(),
        closed: true,
        ..ConnRecord::default()
    };
    let answered = |conn: &ConnRecord| {
        let answers: String = conn
            .requests
            .iter()
            .map(|(i, m)| {
                let body = upstream_answer(*i, m);
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            })
            .collect();
        ClientView {
            bytes: answers.into_bytes(),
            first: End::Open,
            end: End::Eof,
        }
    };
    let named = |prefix: &str| {
        request_cases()
            .into_iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap()
    };
    let judge = |case: &RequestCase, conns: &[ConnRecord], client: &ClientView| {
        judge_request(case, client, conns).1.join("; ")
    };
    let innocent = || message("GET", "/innocent", "");
    let last = || message("GET", "/last", "");

    let control = named("control: POST");
    let clean = conn(vec![message("POST", "/case", "hello"), innocent(), last()]);
    assert_eq!(
        judge(&control, std::slice::from_ref(&clean), &answered(&clean)),
        ""
    );

    let smuggled = conn(vec![
        message("POST", "/case", "hello"),
        message("GET", "/smuggled", ""),
        innocent(),
        last(),
    ]);
    let found = judge(
        &control,
        std::slice::from_ref(&smuggled),
        &answered(&smuggled),
    );
    assert!(found.contains("SMUGGLED"), "{found}");

    let cl_te = named("CL.TE: Content-Length: 6");
    let poisoned = conn(vec![
        message("POST", "/case", ""),
        message("GGET", "/innocent", ""),
        last(),
    ]);
    let found = judge(
        &cl_te,
        std::slice::from_ref(&poisoned),
        &answered(&poisoned),
    );
    assert!(found.contains("SMUGGLED"), "{found}");
    let kept = conn(vec![message("POST", "/case", ""), innocent(), last()]);
    let found = judge(&cl_te, std::slice::from_ref(&kept), &answered(&kept));
    assert!(found.contains("MUST close"), "{found}");

    let rejected = named("TE.TE: Transfer-Encoding: xchunked");
    let invalid = ConnRecord {
        invalid: Some("both Content-Length and Transfer-Encoding".into()),
        closed: true,
        ..ConnRecord::default()
    };
    let found = judge(&rejected, &[invalid], &answered(&ConnRecord::default()));
    assert!(found.contains("expected a rejection"), "{found}");

    // The client got another request's answer.
    let mut swapped = answered(&clean);
    swapped.bytes = String::from_utf8(swapped.bytes)
        .unwrap()
        .replace("/innocent", "/lastxxxx")
        .into_bytes();
    let found = judge(&control, &[clean], &swapped);
    assert!(found.contains("not the upstream's answers"), "{found}");
}
