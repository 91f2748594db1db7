//! Issue #13: framing and input defects, on real sockets. Clients write exact bytes and read
//! the answer with a time limit; upstreams are raw servers that record exactly what reached
//! them. Each case runs on both HTTP/1.1 engines (the direct path, and hyper's with
//! `runtime.direct_path: false`): a fix must hold on both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{admin_get, metric, metric_at, start_proxy, TestCa};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a client waits for an answer before calling it a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Engines

/// The two HTTP/1.1 engines of hitless.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// The direct path (the default).
    Direct,
    /// Everything through hyper (`runtime: {direct_path: false}`).
    Hyper,
}

impl Engine {
    /// `yaml` with this engine's runtime setting.
    fn yaml(self, yaml: &str) -> String {
        match self {
            Engine::Direct => yaml.to_string(),
            Engine::Hyper => format!("runtime: {{direct_path: false}}\n{yaml}"),
        }
    }

    /// One route to one backend `app` at `addr`.
    fn simple(self, addr: SocketAddr) -> String {
        self.yaml(&format!(
            "backends:\n  app:\n    endpoints: [\"{addr}\"]\nroutes:\n  - name: app\n    backend: app\n"
        ))
    }
}

/// `mod $name { direct, hyper }`: the async fn `$name(Engine)` as one test per engine.
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn direct() {
                super::$name(super::Engine::Direct).await
            }

            #[tokio::test]
            async fn hyper() {
                super::$name(super::Engine::Hyper).await
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// A recording upstream

/// One request as it reached the upstream: its head, its body bytes as sent (framing
/// included), and the upstream connection it came on.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    /// Values of the header fields named `name` (any case), in order.
    fn header(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    /// Names of every header field, as sent.
    fn names(&self) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
            .collect()
    }
}

/// What the upstream does with a request.
struct Answer {
    bytes: Vec<u8>,
    /// Wait this long before answering.
    delay: Duration,
    /// Close the connection after answering.
    close: bool,
    /// Reset the connection after answering (SO_LINGER 0: a crash as the proxy sees it).
    reset: bool,
}

fn answer(bytes: impl Into<Vec<u8>>) -> Answer {
    Answer {
        bytes: bytes.into(),
        delay: Duration::ZERO,
        close: false,
        reset: false,
    }
}

/// `f(request, earlier requests on the same connection)`.
type Script = dyn Fn(&Seen, &[Seen]) -> Answer + Send + Sync;

/// An HTTP/1.1 upstream on raw sockets: keeps connections open between requests (unless an
/// answer says close), records every request, counts connections accepted and still open,
/// and can close all its connections at once (a restart as the proxy sees it).
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    kill: Arc<tokio::sync::watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
        self.kill.send_modify(|n| *n += 1);
    }
}

/// Counts a connection open while it lives.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Upstream {
    async fn start(script: impl Fn(&Seen, &[Seen]) -> Answer + Send + Sync + 'static) -> Upstream {
        Upstream::start_with(Duration::from_secs(30), script).await
    }

    /// `idle_close`: a connection with no new request for this long is closed.
    async fn start_with(
        idle_close: Duration,
        script: impl Fn(&Seen, &[Seen]) -> Answer + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let live: Arc<AtomicUsize> = Arc::default();
        let kill = Arc::new(tokio::sync::watch::channel(0u64).0);
        let script: Arc<Script> = Arc::new(script);
        let task = {
            let (seen, accepted, live, kill) = (
                Arc::clone(&seen),
                Arc::clone(&accepted),
                Arc::clone(&live),
                Arc::clone(&kill),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let id = accepted.fetch_add(1, Ordering::SeqCst);
                    live.fetch_add(1, Ordering::SeqCst);
                    let guard = LiveGuard(Arc::clone(&live));
                    tokio::spawn(upstream_conn(
                        stream,
                        id,
                        guard,
                        Arc::clone(&seen),
                        Arc::clone(&script),
                        kill.subscribe(),
                        idle_close,
                    ));
                }
            })
        };
        Upstream {
            addr,
            seen,
            accepted,
            live,
            kill,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Close every open connection (the upstream restarts; it keeps listening).
    fn close_all(&self) {
        self.kill.send_modify(|n| *n += 1);
    }

    /// Wait (bounded) until `n` requests have arrived.
    async fn wait_requests(&self, n: usize) {
        let until = Instant::now() + ANSWER_WITHIN;
        while self.seen.lock().unwrap().len() < n {
            assert!(
                Instant::now() < until,
                "the upstream received {} requests, expected {n}",
                self.seen.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Assert that no request reached this upstream.
    fn assert_untouched(&self, context: &str) {
        let seen = self.seen();
        assert!(
            seen.is_empty(),
            "{context}: nothing may reach the upstream, it received {seen:?}"
        );
    }
}

async fn upstream_conn(
    mut stream: TcpStream,
    id: usize,
    _live: LiveGuard,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
    mut kill: tokio::sync::watch::Receiver<u64>,
    idle_close: Duration,
) {
    let mut buf = Vec::new();
    loop {
        let request = tokio::select! {
            r = read_request(&mut stream, &mut buf) => r,
            _ = kill.changed() => return,
            _ = tokio::time::sleep(idle_close) => return,
        };
        let Some((head, body)) = request else {
            return;
        };
        let request = Seen {
            conn: id,
            head,
            body,
        };
        let answer = {
            let mut all = seen.lock().unwrap();
            let earlier: Vec<Seen> = all.iter().filter(|s| s.conn == id).cloned().collect();
            let answer = script(&request, &earlier);
            all.push(request);
            answer
        };
        if !answer.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(answer.delay) => {}
                _ = kill.changed() => return,
            }
        }
        if stream.write_all(&answer.bytes).await.is_err() {
            return;
        }
        if answer.reset {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return;
        }
        if answer.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Read one request (head, and its body by Content-Length or chunked) from `stream`; bytes
/// past it stay in `buf`. `None` when the connection ends first.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        buf.reserve(16 * 1024);
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let chunked = header_values(&head, "transfer-encoding")
        .last()
        .is_some_and(|v| v.to_ascii_lowercase().trim_end().ends_with("chunked"));
    let body_len = loop {
        let body = &buf[head_end..];
        if chunked {
            match parse_chunked(body) {
                Chunks::Done { len, .. } => break len,
                Chunks::Invalid(_) => break body.len(),
                Chunks::More => {}
            }
        } else if body.len() >= length {
            break length;
        }
        buf.reserve(16 * 1024);
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let body = buf[head_end..head_end + body_len].to_vec();
    buf.drain(..head_end + body_len);
    Some((head, body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Values of the header fields `name` (any case) in a head given as text.
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A strict chunked decoder (RFC 9112 section 7.1)

#[derive(Debug)]
enum Chunks {
    More,
    Done {
        /// Bytes of the chunked body, last CRLF included.
        len: usize,
        data: Vec<u8>,
    },
    Invalid(String),
}

/// A line ending in CRLF at `from`: its content and where the next line starts.
fn crlf_line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[from..];
    match rest.iter().position(|&b| b == b'\n') {
        None => match rest.iter().position(|&b| b == b'\r') {
            Some(p) if p + 1 < rest.len() => Err(format!("bare CR in {:?}", lossy(rest))),
            _ => Ok(None),
        },
        Some(p) => {
            if p == 0 || rest[p - 1] != b'\r' {
                return Err(format!("bare LF after {:?}", lossy(&rest[..p])));
            }
            let content = &rest[..p - 1];
            if content.contains(&b'\r') {
                return Err(format!("bare CR in {:?}", lossy(content)));
            }
            Ok(Some((content, from + p + 1)))
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_tchar(b)).count()
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
fn chunk_ext(mut s: &[u8]) -> Result<(), String> {
    let whole = s;
    let bad = || format!("invalid chunk extension {:?}", lossy(whole));
    loop {
        s = skip_ws(s);
        if s.is_empty() {
            return Ok(());
        }
        if s[0] != b';' {
            return Err(bad());
        }
        s = skip_ws(&s[1..]);
        let n = token_len(s);
        if n == 0 {
            return Err(bad());
        }
        s = skip_ws(&s[n..]);
        if s.first() == Some(&b'=') {
            s = skip_ws(&s[1..]);
            if s.first() == Some(&b'"') {
                let mut i = 1;
                loop {
                    match s.get(i) {
                        None => return Err(bad()),
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(&b) if b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f) => i += 1,
                        Some(_) => return Err(bad()),
                    }
                }
                s = &s[i + 1..];
            } else {
                let n = token_len(s);
                if n == 0 {
                    return Err(bad());
                }
                s = &s[n..];
            }
        }
    }
}

/// `field-line = field-name ":" OWS field-value OWS`, no obs-fold.
fn field_line(line: &[u8]) -> Result<(), String> {
    let n = token_len(line);
    let value_ok = |v: &[u8]| {
        v.iter()
            .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
    };
    if n == 0 || line.get(n) != Some(&b':') || !value_ok(&line[n + 1..]) {
        return Err(format!("invalid trailer field line {:?}", lossy(line)));
    }
    Ok(())
}

/// Decode a chunked body at the start of `buf`, rejecting anything RFC 9112 does not allow.
fn parse_chunked(buf: &[u8]) -> Chunks {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let (line, next) = match crlf_line(buf, at) {
            Err(e) => return Chunks::Invalid(e),
            Ok(None) => return Chunks::More,
            Ok(Some(found)) => found,
        };
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let significant = line[..digits]
            .iter()
            .skip_while(|&&b| b == b'0')
            .copied()
            .collect::<Vec<u8>>();
        if digits == 0 || significant.len() > 8 {
            return Chunks::Invalid(format!("invalid chunk size line {:?}", lossy(line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&significant).unwrap_or("0"), 16)
            .unwrap_or(0);
        if let Err(e) = chunk_ext(&line[digits..]) {
            return Chunks::Invalid(e);
        }
        at = next;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            if buf.len() > at + size && buf[at + size] != b'\r' {
                return Chunks::Invalid("chunk data not followed by CRLF".into());
            }
            return Chunks::More;
        }
        data.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Chunks::Invalid("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
    loop {
        let (line, next) = match crlf_line(buf, at) {
            Err(e) => return Chunks::Invalid(e),
            Ok(None) => return Chunks::More,
            Ok(Some(found)) => found,
        };
        at = next;
        if line.is_empty() {
            return Chunks::Done { len: at, data };
        }
        if let Err(e) = field_line(line) {
            return Chunks::Invalid(e);
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A raw client

/// One response as the client read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    /// The payload (chunked bodies decoded).
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    fn body(&self) -> String {
        lossy(&self.body)
    }
}

/// What a client got when it waited for a response.
// The bytes are read through `Debug`, in failure messages.
#[allow(dead_code)]
#[derive(Debug)]
enum Outcome {
    /// A whole, well-framed response.
    Response(Reply),
    /// The connection closed (or was reset) before a whole response: the bytes that came.
    Closed(String),
    /// Nothing more came within the time limit: the bytes that came.
    Hung(String),
    /// Bytes that are not a valid HTTP/1.1 response: why, and the bytes.
    Invalid(String, String),
}

impl Outcome {
    /// The response, or a failure that says what came instead.
    #[track_caller]
    fn reply(self, context: &str) -> Reply {
        match self {
            Outcome::Response(reply) => reply,
            other => panic!("{context}: expected a whole response, got {other:?}"),
        }
    }
}

enum More {
    Data,
    Eof,
    Timeout,
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Write `bytes`; false when the proxy had closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    async fn read_more(&mut self, deadline: Instant) -> More {
        self.buf.reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => More::Timeout,
            Ok(Ok(0)) | Ok(Err(_)) => More::Eof,
            Ok(Ok(_)) => More::Data,
        }
    }

    /// Read one response to a request with `method`.
    async fn response(&mut self, method: &str) -> Outcome {
        self.response_within(method, ANSWER_WITHIN).await
    }

    async fn response_within(&mut self, method: &str, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        let (status, head_len, head) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = response.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        self.buf.drain(..n);
                        continue;
                    }
                    let head = lossy(&self.buf[..n]);
                    break (status, n, head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Outcome::Invalid(format!("response head: {e}"), lossy(&self.buf)),
            }
            match self.read_more(deadline).await {
                More::Data => {}
                More::Eof => return Outcome::Closed(lossy(&self.buf)),
                More::Timeout => return Outcome::Hung(lossy(&self.buf)),
            }
        };
        enum Framing {
            None,
            Length(usize),
            Chunked,
            Close,
        }
        let te = header_values(&head, "transfer-encoding");
        let lengths = header_values(&head, "content-length");
        let framing = if method == "HEAD"
            || status == 204
            || status == 304
            || (method == "CONNECT" && (200..300).contains(&status))
        {
            Framing::None
        } else if let Some(last) = te.last() {
            if last.to_ascii_lowercase().trim().ends_with("chunked") {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else if let Some(first) = lengths.first() {
            let digits = |v: &String| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            if !lengths.iter().all(|v| digits(v) && v == first) {
                return Outcome::Invalid(
                    format!("invalid Content-Length {lengths:?}"),
                    lossy(&self.buf),
                );
            }
            Framing::Length(first.parse().unwrap_or(usize::MAX))
        } else {
            Framing::Close
        };
        let (body, len) = loop {
            let rest = &self.buf[head_len..];
            match framing {
                Framing::None => break (Vec::new(), 0),
                Framing::Length(n) if rest.len() >= n => break (rest[..n].to_vec(), n),
                Framing::Chunked => match parse_chunked(rest) {
                    Chunks::Done { len, data } => break (data, len),
                    Chunks::Invalid(why) => {
                        return Outcome::Invalid(why, lossy(&self.buf));
                    }
                    Chunks::More => {}
                },
                _ => {}
            }
            match self.read_more(deadline).await {
                More::Data => {}
                More::Eof => {
                    if let Framing::Close = framing {
                        let body = self.buf[head_len..].to_vec();
                        break (body.clone(), body.len());
                    }
                    return Outcome::Closed(lossy(&self.buf));
                }
                More::Timeout => return Outcome::Hung(lossy(&self.buf)),
            }
        };
        self.buf.drain(..head_len + len);
        Outcome::Response(Reply { status, head, body })
    }
}

/// One request on a new connection; its response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Outcome {
    let mut client = Client::connect(addr).await;
    let _ = client.send(request).await;
    let method = lossy(request.split(|&b| b == b' ').next().unwrap_or(b""));
    client.response(&method).await
}

/// Read from `stream` until it closes or `within` passes: the bytes, and whether it closed.
async fn read_until_close<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Poll `series` until it equals `want` (bounded); fails with the last value.
async fn wait_gauge(admin: SocketAddr, series: &str, want: f64, context: &str) {
    let until = Instant::now() + ANSWER_WITHIN;
    loop {
        let value = metric_at(admin, series).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "{context}: {series} stayed at {value}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of `hitless_proxy_errors_total` over every cause.
async fn proxy_errors(admin: SocketAddr) -> f64 {
    admin_get(admin, "/metrics")
        .await
        .body
        .lines()
        .filter(|l| l.starts_with("hitless_proxy_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

fn path_of(seen: &Seen) -> &str {
    seen.request_line().split(' ').nth(1).unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Direct path, upstream side

/// Issue #13, defect 1: a `Keep-Alive: timeout=` too large to be a duration must not panic
/// the connection: the response passes, and the connection gauge returns to its baseline.
async fn keepalive_timeout_too_large_still_answers_and_counts_the_connection(engine: Engine) {
    let upstream = Upstream::start(|_, _| {
        answer(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=18446744073709551615\r\n\r\nhello"[..],
        )
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let gauge = "hitless_downstream_connections_open";
    let baseline = metric_at(app.admin_addr, gauge).await;
    let mut client = Client::connect(app.traffic_addrs[0]).await;
    client.send(GET).await;
    let reply = client
        .response("GET")
        .await
        .reply("Keep-Alive timeout=u64::MAX");
    assert_eq!((reply.status, reply.body().as_str()), (200, "hello"));
    drop(client);
    wait_gauge(
        app.admin_addr,
        gauge,
        baseline,
        "after the client closed its connection",
    )
    .await;
}
on_both_engines!(keepalive_timeout_too_large_still_answers_and_counts_the_connection);

/// Issue #13, defect 2: `Connection: content-length` from a backend must not leave the client
/// with an unframed response on a kept-alive connection (a hang): a framed response (and the
/// connection goes on), or a 502.
async fn connection_naming_content_length_never_leaves_the_response_unframed(engine: Engine) {
    let upstream = Upstream::start(|_, _| {
        answer(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello"[..],
        )
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut client = Client::connect(app.traffic_addrs[0]).await;
    for n in 1..=2 {
        client.send(GET).await;
        let reply = match client.response("GET").await {
            Outcome::Response(reply) => reply,
            Outcome::Hung(bytes) => {
                panic!("request {n}: the client hangs on an unframed response: {bytes:?}")
            }
            other => panic!("request {n}: {other:?}"),
        };
        if reply.status == 502 {
            return;
        }
        assert_eq!(
            (reply.status, reply.body().as_str()),
            (200, "hello"),
            "request {n}: {reply:?}"
        );
    }
}
on_both_engines!(connection_naming_content_length_never_leaves_the_response_unframed);

/// Issue #13, defects 3 and 14: a 2xx answer to CONNECT makes the upstream connection a
/// tunnel (RFC 9112 section 6.3); the next request, from another client, must never be
/// written onto it.
async fn request_after_a_connect_never_lands_on_the_tunneled_connection(engine: Engine) {
    let upstream = Upstream::start(|request, earlier| {
        if request.request_line().starts_with("CONNECT ") {
            // A sloppy backend: 200 with a length, as if the connection stayed HTTP.
            answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..])
        } else if earlier
            .iter()
            .any(|s| s.request_line().starts_with("CONNECT "))
        {
            answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ntunnel"[..])
        } else {
            answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"[..])
        }
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let addr = app.traffic_addrs[0];
    let connects: [&[u8]; 2] = [
        b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
        b"CONNECT / HTTP/1.1\r\nHost: app.test\r\n\r\n",
    ];
    let mut tunnels = Vec::new();
    for connect in connects {
        // The CONNECT's own answer is defect 14's; here only what follows matters. The
        // client stays connected, as a tunnel's would.
        let mut first = Client::connect(addr).await;
        first.send(connect).await;
        let _ = first
            .response_within("CONNECT", Duration::from_millis(500))
            .await;
        tunnels.push(first);
        let next = exchange(addr, &get("/next")).await.reply(&format!(
            "GET from another client after {:?}",
            lossy(connect)
        ));
        assert_eq!(
            (next.status, next.body().as_str()),
            (200, "fresh"),
            "after {:?}: the next request went into the tunnel",
            lossy(connect)
        );
    }
    let seen = upstream.seen();
    for (i, s) in seen.iter().enumerate() {
        let tunneled = seen[..i]
            .iter()
            .any(|c| c.conn == s.conn && c.request_line().starts_with("CONNECT "));
        assert!(
            !tunneled,
            "{:?} was written onto a connection that had carried a CONNECT: {seen:?}",
            s.request_line()
        );
    }
}
on_both_engines!(request_after_a_connect_never_lands_on_the_tunneled_connection);

/// Chunked bodies from an upstream that RFC 9112 section 7.1 does not allow, by path.
const BAD_CHUNKED: [(&str, &[u8]); 4] = [
    ("/bare-lf", b"5\nhello\n0\n\n"),
    ("/bare-cr", b"5\rX\r\nhello\r\n0\r\n\r\n"),
    ("/bad-ext", b"5;e=<x>\r\nhello\r\n0\r\n\r\n"),
    ("/bad-trailer", b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n"),
];

/// Issue #13, defect 4: a chunked body with bare LF or CR line ends, an invalid chunk
/// extension or a malformed trailer line must not reach the client as it came: re-framed,
/// or a 502 before the head, or the connection closed after it.
async fn malformed_chunked_bodies_are_reframed_or_refused(engine: Engine) {
    let upstream = Upstream::start(|request, _| {
        let body = BAD_CHUNKED
            .iter()
            .find(|(path, _)| *path == path_of(request))
            .map(|(_, body)| *body)
            .unwrap_or(b"0\r\n\r\n");
        let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        answer(bytes)
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut failures = Vec::new();
    for (path, body) in BAD_CHUNKED {
        match exchange(app.traffic_addrs[0], &get(path)).await {
            Outcome::Response(reply) if reply.status == 502 => {}
            Outcome::Response(reply) if reply.status == 200 && reply.body() == "hello" => {}
            // Closed part way: nothing invalid had come (the decoder would have said so).
            Outcome::Closed(_) => {}
            other => failures.push(format!("{path} ({:?}): {other:?}", lossy(body))),
        }
    }
    assert!(
        failures.is_empty(),
        "malformed chunked bodies reached the client:\n{}",
        failures.join("\n")
    );
}
on_both_engines!(malformed_chunked_bodies_are_reframed_or_refused);

/// Issue #13, defect 5: `Content-Length: +5` is not a length (RFC 9110 section 8.6: digits
/// only): 502.
async fn content_length_with_a_sign_is_a_bad_gateway(engine: Engine) {
    let upstream =
        Upstream::start(|_, _| answer(&b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..]))
            .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(app.traffic_addrs[0], GET)
        .await
        .reply("Content-Length: +5");
    assert_eq!(reply.status, 502, "{reply:?}");
}
on_both_engines!(content_length_with_a_sign_is_a_bad_gateway);

/// A request head of `size` bytes whose header fields (not its target) make it large.
fn large_head(size: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    let mut n = 0;
    while head.len() + 4 < size {
        let room = size - head.len() - 4;
        let value = "v".repeat(room.saturating_sub(16).clamp(1, 4000));
        head.extend_from_slice(format!("X-Big-{n}: {value}\r\n").as_bytes());
        n += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Issue #13, defect 6: the request-head limit (64 KiB) holds however the head arrives: a
/// 110 KB head sent in two writes gets 431, and nothing reaches the upstream. The first
/// write ends just under the limit (the direct path's buffer then grows past it, and the
/// second write completes the head in one read).
async fn request_head_over_the_limit_in_two_writes_gets_431(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let head = large_head(110 * 1000);
    for first in [64_600, 65_000, 65_400] {
        let mut client = Client::connect(app.traffic_addrs[0]).await;
        // A client sending slowly: most of the limit, a pause, then the rest.
        client.send(&head[..first]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.send(&head[first..]).await;
        let reply = client
            .response("GET")
            .await
            .reply(&format!("110 KB head, {first} bytes then the rest"));
        assert_eq!(
            reply.status, 431,
            "{first} bytes then the rest: {}",
            reply.head
        );
    }
    upstream.assert_untouched("a head over the limit");
}
on_both_engines!(request_head_over_the_limit_in_two_writes_gets_431);

/// Issue #13, defect 7: an HTTP/1.0 response with `Transfer-Encoding` has faulty framing
/// (RFC 9112 section 6.1): the upstream connection is closed after it, never reused; the
/// client gets the body (read until close) or a 502.
async fn http10_response_with_transfer_encoding_is_not_reused(engine: Engine) {
    let upstream = Upstream::start_with(Duration::from_millis(500), |_, _| {
        answer(
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        )
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    for n in 1..=2 {
        let reply = exchange(app.traffic_addrs[0], GET)
            .await
            .reply(&format!("request {n}"));
        assert!(
            reply.status == 502 || (reply.status == 200 && reply.body().contains("hello")),
            "request {n}: {reply:?}"
        );
    }
    let seen = upstream.seen();
    for s in &seen {
        let on_conn = seen.iter().filter(|c| c.conn == s.conn).count();
        assert_eq!(
            on_conn,
            1,
            "an upstream connection carried {on_conn} requests after an HTTP/1.0 chunked answer ({} connections for {} requests)",
            upstream.accepted(),
            seen.len()
        );
    }
}
on_both_engines!(http10_response_with_transfer_encoding_is_not_reused);

/// A body the upstream's close delimits (no length, not chunked) reaches an HTTP/1.1 client
/// framed: whole, and its connection serves the next request.
async fn close_delimited_body_arrives_whole_and_framed(engine: Engine) {
    let upstream = Upstream::start(|_, _| Answer {
        close: true,
        ..answer(&b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world"[..])
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut client = Client::connect(app.traffic_addrs[0]).await;
    for n in 1..=2 {
        assert!(client.send(GET).await, "request {n}: the connection closed");
        let reply = client.response("GET").await.reply(&format!("request {n}"));
        assert_eq!(
            (reply.status, reply.body()),
            (200, "hello world".to_string()),
            "request {n}: {}",
            reply.head
        );
    }
}
on_both_engines!(close_delimited_body_arrives_whole_and_framed);

/// A body the upstream's close delimits, cut by a reset (the application crashed part way):
/// the client sees a cut body, never a whole response ending where the reset struck.
async fn close_delimited_body_cut_by_a_reset_is_seen_cut(engine: Engine) {
    let upstream = Upstream::start(|_, _| Answer {
        reset: true,
        ..answer(&b"HTTP/1.1 200 OK\r\n\r\npart of the"[..])
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    for n in 1..=5 {
        match exchange(app.traffic_addrs[0], GET).await {
            Outcome::Closed(_) => {}
            Outcome::Response(reply) if reply.status == 502 => {}
            other => panic!("request {n}: a cut body passed as whole: {other:?}"),
        }
    }
}
on_both_engines!(close_delimited_body_cut_by_a_reset_is_seen_cut);

/// Issue #13, defect 8: a 204 carries no `Content-Length` to the client; a 304 is followed
/// by no body bytes and the connection stays usable.
async fn no_content_and_not_modified_are_bodiless_and_keep_the_connection(engine: Engine) {
    let upstream = Upstream::start(|request, _| match path_of(request) {
        "/204" => answer(&b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..]),
        "/304" => {
            answer(&b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n"[..])
        }
        _ => answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..]),
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut client = Client::connect(app.traffic_addrs[0]).await;
    client.send(&get("/204")).await;
    let reply = client.response("GET").await.reply("204");
    assert_eq!(reply.status, 204);
    assert!(
        reply.header("content-length").is_empty() && reply.header("transfer-encoding").is_empty(),
        "a 204 must not carry Content-Length: {}",
        reply.head
    );
    client.send(&get("/304")).await;
    let reply = client.response("GET").await.reply("304");
    assert_eq!(reply.status, 304);
    client.send(&get("/ok")).await;
    let reply = client
        .response("GET")
        .await
        .reply("the request after a 304, on the same connection");
    assert_eq!((reply.status, reply.body().as_str()), (200, "ok"));
}
on_both_engines!(no_content_and_not_modified_are_bodiless_and_keep_the_connection);

/// Issue #13, defect 9: a status code below 100 is not HTTP: hitless answers its own 502
/// (with `Proxy-Status`), and nothing of the upstream's answer reaches the client.
async fn status_below_100_is_a_bad_gateway_of_our_own(engine: Engine) {
    let upstream = Upstream::start(|request, _| {
        let code = path_of(request).trim_start_matches('/').to_string();
        answer(format!(
            "HTTP/1.1 {code} Odd\r\nX-Upstream: leaked\r\nContent-Length: 6\r\n\r\nleaked"
        ))
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let errors_before = proxy_errors(app.admin_addr).await;
    for code in ["000", "099"] {
        let reply = exchange(app.traffic_addrs[0], &get(&format!("/{code}")))
            .await
            .reply(code);
        assert_eq!(reply.status, 502, "status {code}: {reply:?}");
        let proxy_status = reply.header("proxy-status").join(", ");
        assert!(
            proxy_status.contains("protocol_error"),
            "status {code}: hitless's 502 names the cause in Proxy-Status: {}",
            reply.head
        );
        assert!(
            reply.header("x-upstream").is_empty() && !reply.body().contains("leaked"),
            "status {code}: the upstream's headers and body must not pass: {reply:?}"
        );
    }
    let errors = proxy_errors(app.admin_addr).await - errors_before;
    assert!(
        errors >= 2.0,
        "each is counted in hitless_proxy_errors_total ({errors})"
    );
}
on_both_engines!(status_below_100_is_a_bad_gateway_of_our_own);

/// Issue #13, defect 10: a chunk size with leading zeros is valid: the body passes.
async fn chunk_size_with_leading_zeros_passes(engine: Engine) {
    let upstream = Upstream::start(|_, _| {
        answer(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n"[..],
        )
    })
    .await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut client = Client::connect(app.traffic_addrs[0]).await;
    for n in 1..=2 {
        client.send(GET).await;
        let reply = client
            .response("GET")
            .await
            .reply(&format!("request {n}: chunk size 0000000000000005"));
        assert_eq!((reply.status, reply.body().as_str()), (200, "hello"));
    }
}
on_both_engines!(chunk_size_with_leading_zeros_passes);

// ---------------------------------------------------------------------------------------------
// Requests hyper's path is handed (tested on both engines)

async fn ok_upstream() -> Upstream {
    Upstream::start(|_, _| answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..])).await
}

/// Issue #13, defect 11: an HTTP/1.1 request without `Host` is a 400 (RFC 9112 section
/// 3.2), and nothing is forwarded.
async fn request_without_host_is_a_bad_request(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(app.traffic_addrs[0], b"GET / HTTP/1.1\r\n\r\n")
        .await
        .reply("no Host");
    assert_eq!(reply.status, 400, "{reply:?}");
    upstream.assert_untouched("a request without Host");
}
on_both_engines!(request_without_host_is_a_bad_request);

/// Issue #13, defect 12: two `Host` fields are a 400, and nothing is forwarded.
async fn request_with_two_hosts_is_a_bad_request(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(
        app.traffic_addrs[0],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    )
    .await
    .reply("two Host fields");
    assert_eq!(reply.status, 400, "{reply:?}");
    upstream.assert_untouched("a request with two Host fields");
}
on_both_engines!(request_with_two_hosts_is_a_bad_request);

/// Issue #13, defect 13: with an absolute-form target the target's authority wins over
/// `Host` (RFC 9112 section 3.2.2): routed by it, and sent upstream as `Host`.
async fn absolute_form_target_routes_and_forwards_by_its_authority(engine: Engine) {
    let a =
        Upstream::start(|_, _| answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"[..])).await;
    let b =
        Upstream::start(|_, _| answer(&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"[..])).await;
    let app = start_proxy(&engine.yaml(&format!(
        "backends:\n  a: {{endpoints: [\"{}\"]}}\n  b: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{name: a, match: {{host: a.test}}, backend: a}}\n  - {{name: b, match: {{host: b.test}}, backend: b}}\n",
        a.addr, b.addr
    )))
    .await;
    let reply = exchange(
        app.traffic_addrs[0],
        b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await
    .reply("absolute-form target");
    assert_eq!(
        (reply.status, reply.body().as_str()),
        (200, "b"),
        "routed by the target's authority b.test"
    );
    a.assert_untouched("the route of the Host field a.test");
    let seen = b.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("host"),
        vec!["b.test".to_string()],
        "the backend gets the target's authority as Host: {}",
        seen[0].head
    );
}
on_both_engines!(absolute_form_target_routes_and_forwards_by_its_authority);

/// Issue #13, defect 14: CONNECT is not forwarded (as `CONNECT /`, or at all): hitless
/// answers 405 or 501 with `Proxy-Status`, and nothing reaches the upstream.
async fn connect_is_refused_with_a_cause(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(
        app.traffic_addrs[0],
        b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
    )
    .await
    .reply("CONNECT b.test:443");
    assert!(
        reply.status == 405 || reply.status == 501,
        "CONNECT gets 405 or 501: {reply:?}"
    );
    assert!(
        !reply.header("proxy-status").is_empty(),
        "with a Proxy-Status: {}",
        reply.head
    );
    upstream.assert_untouched("CONNECT");
}
on_both_engines!(connect_is_refused_with_a_cause);

/// Issue #13, defect 15: header names with `_` (which many backends read as `-`) are not
/// forwarded by default.
async fn header_names_with_underscores_are_dropped(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(
        app.traffic_addrs[0],
        b"GET / HTTP/1.1\r\nHost: app.test\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\n\r\n",
    )
    .await
    .reply("underscored header names");
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let underscored: Vec<String> = seen[0]
        .names()
        .into_iter()
        .filter(|n| n.contains('_'))
        .collect();
    assert!(
        underscored.is_empty(),
        "forwarded: {underscored:?}\n{}",
        seen[0].head
    );
}
on_both_engines!(header_names_with_underscores_are_dropped);

/// Issue #13, defect 16: a request with `Transfer-Encoding: gzip, chunked` keeps its gzip
/// coding upstream (and its body chunked), or is refused with a 4xx/501; it is never sent
/// on as plain chunked.
async fn transfer_coding_before_chunked_is_kept_or_refused(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let payload: &[u8] = b"\x1f\x8b\x08\x00gzdata";
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            .to_vec();
    request.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
    request.extend_from_slice(payload);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = exchange(app.traffic_addrs[0], &request)
        .await
        .reply("Transfer-Encoding: gzip, chunked");
    if (400..500).contains(&reply.status) || reply.status == 501 {
        upstream.assert_untouched("a refused transfer coding");
        return;
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let codings = seen[0]
        .header("transfer-encoding")
        .join(",")
        .to_ascii_lowercase()
        .replace([' ', '\t'], "");
    assert_eq!(
        codings, "gzip,chunked",
        "the gzip coding is kept: {}",
        seen[0].head
    );
    match parse_chunked(&seen[0].body) {
        Chunks::Done { data, .. } => assert_eq!(data, payload, "the coded bytes, unchanged"),
        other => panic!("the body is chunked: {other:?} {:?}", lossy(&seen[0].body)),
    }
}
on_both_engines!(transfer_coding_before_chunked_is_kept_or_refused);

// ---------------------------------------------------------------------------------------------
// Both engines, from third-party suites

/// Whether `bytes` are whole HTTP/2 frames that include a GOAWAY (type 0x7).
fn h2_frames_with_goaway(bytes: &[u8]) -> bool {
    let mut at = 0;
    let mut goaway = false;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        goaway |= bytes[at + 3] == 0x7;
        at += 9 + len;
    }
    goaway && at == bytes.len()
}

const BAD_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n\x00\x00\x00\x04\x00garbage garbage";

/// What came back after an invalid preface: no HTTP/1.1 answer, but a GOAWAY or a close.
fn assert_preface_refused_as_http2(bytes: &[u8], closed: bool, context: &str) {
    assert!(
        find(bytes, b"HTTP/1.1").is_none(),
        "{context}: an invalid HTTP/2 preface is answered in HTTP/1.1: {:?}",
        lossy(bytes)
    );
    assert!(
        closed || h2_frames_with_goaway(bytes),
        "{context}: expected GOAWAY or a close within {ANSWER_WITHIN:?}, got {:?}",
        lossy(bytes)
    );
}

/// Issue #13, defect 17: an invalid HTTP/2 connection preface (h2c prior knowledge) is
/// answered with GOAWAY or a close, never with `HTTP/1.1 400` (h2spec 3.5 #2).
async fn invalid_h2c_preface_gets_goaway_or_close(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let mut stream = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    let _ = stream.write_all(BAD_PREFACE).await;
    let (bytes, closed) = read_until_close(&mut stream, ANSWER_WITHIN).await;
    assert_preface_refused_as_http2(&bytes, closed, "h2c");
    upstream.assert_untouched("an invalid preface");
}
on_both_engines!(invalid_h2c_preface_gets_goaway_or_close);

/// Issue #13, defect 17, TLS: the same after ALPN chose h2.
async fn invalid_h2_preface_after_alpn_h2_gets_goaway_or_close(engine: Engine) {
    let upstream = ok_upstream().await;
    let dir =
        std::env::temp_dir().join(format!("hitless-framing-{}-{engine:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["a.test"]);
    std::fs::write(dir.join("a.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("a.key"), key.serialize_pem()).unwrap();
    let app = start_proxy(&engine.yaml(&format!(
        "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{cert: \"{}\", key: \"{}\", server_names: [a.test]}}\nbackends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - backend: app\n",
        dir.join("a.crt").display(),
        dir.join("a.key").display(),
        upstream.addr
    )))
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("a.test").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake with ALPN h2");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let _ = tls.write_all(BAD_PREFACE).await;
    let _ = tls.flush().await;
    let (bytes, closed) = read_until_close(&mut tls, ANSWER_WITHIN).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_preface_refused_as_http2(&bytes, closed, "TLS with ALPN h2");
    upstream.assert_untouched("an invalid preface");
}
on_both_engines!(invalid_h2_preface_after_alpn_h2_gets_goaway_or_close);

/// A request whose request line alone is over the 64 KiB limit.
fn long_target_request() -> Vec<u8> {
    format!(
        "GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n",
        "a".repeat(70 * 1024)
    )
    .into_bytes()
}

/// Issue #13, defect 18: a request line over the limit is a URI too long: 414 (RFC 9110
/// section 15.5.15), not 431; nothing reaches the upstream.
async fn request_target_over_the_limit_gets_414(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let reply = exchange(app.traffic_addrs[0], &long_target_request())
        .await
        .reply("a 70 KiB request target");
    assert_eq!(reply.status, 414, "{}", reply.head);
    upstream.assert_untouched("a request target over the limit");
}
on_both_engines!(request_target_over_the_limit_gets_414);

/// Issue #13, defect 19: the 400, 414 and 431 answers hitless writes itself carry a
/// `Proxy-Status` naming the cause, as every answer of its own does.
async fn own_client_error_answers_carry_proxy_status(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.simple(upstream.addr)).await;
    let cases: [(&str, Vec<u8>, &[u16]); 3] = [
        (
            "malformed head",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "request target over the limit",
            long_target_request(),
            &[414, 431],
        ),
        (
            "header fields over the limit",
            large_head(100 * 1024),
            &[431],
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, statuses) in cases {
        let reply = exchange(app.traffic_addrs[0], &request).await.reply(what);
        if !statuses.contains(&reply.status) {
            failures.push(format!("{what}: status {} not {statuses:?}", reply.status));
        } else if reply.header("proxy-status").is_empty() {
            failures.push(format!("{what}: {} without Proxy-Status", reply.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    upstream.assert_untouched("requests hitless answers itself");
}
on_both_engines!(own_client_error_answers_carry_proxy_status);

/// Issue #13, defect 20: every response carries `Date` (RFC 9110 section 6.6.1): relayed
/// from a backend that sent none, a route's fixed answer, and an error of hitless's own.
async fn every_response_carries_a_date(engine: Engine) {
    let upstream = ok_upstream().await;
    let app = start_proxy(&engine.yaml(&format!(
        "backends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{name: app, match: {{host: app.test}}, backend: app}}\n  - {{name: fixed, match: {{host: fixed.test}}, respond: {{status: 200, body: \"fixed\"}}}}\n",
        upstream.addr
    )))
    .await;
    let mut failures = Vec::new();
    for (what, host, status) in [
        ("relayed from a backend without Date", "app.test", 200),
        ("a route's fixed answer", "fixed.test", 200),
        ("hitless's own error (no route)", "none.test", 404),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let reply = exchange(app.traffic_addrs[0], request.as_bytes())
            .await
            .reply(what);
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        if reply.header("date").iter().all(|d| d.is_empty()) {
            failures.push(format!("{what}: no Date in {:?}", reply.head));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
on_both_engines!(every_response_carries_a_date);

// ---------------------------------------------------------------------------------------------
// Pool bookkeeping

const OPEN: &str = "hitless_upstream_connections_open{backend=\"app\"}";
const IDLE: &str = "hitless_upstream_connections_idle{backend=\"app\"}";
const DOWNSTREAM: &str = "hitless_downstream_connections_open";

/// `/slow` answers after 300 ms, anything else at once.
async fn pool_upstream(name: &'static str) -> Upstream {
    Upstream::start(move |request, _| {
        let mut a = answer(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        ));
        if path_of(request) == "/slow" {
            a.delay = Duration::from_millis(300);
        }
        a
    })
    .await
}

fn pool_config(engine: Engine, addr: SocketAddr) -> String {
    engine.yaml(&format!(
        "backends:\n  app:\n    endpoints: [\"{addr}\"]\n    pool: {{idle_timeout: 300ms}}\nroutes:\n  - name: app\n    backend: app\n"
    ))
}

/// `n` clients each with a request in flight at once (on its own connection).
async fn concurrent(addr: SocketAddr, n: usize, path: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = Client::connect(addr).await;
        client.send(&get(path)).await;
        clients.push(client);
    }
    clients
}

/// Read every client's answer and check it.
async fn answered(clients: &mut [Client], body: &str, context: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client
            .response("GET")
            .await
            .reply(&format!("{context}, client {i}"));
        assert_eq!(
            (reply.status, reply.body().as_str()),
            (200, body),
            "{context}, client {i}"
        );
    }
}

/// Wait (bounded) until every gauge is back to zero and the upstreams hold no connection
/// from hitless: what the kernel has. Fails with the values that stayed.
async fn wait_all_closed(admin: SocketAddr, upstreams: &[&Upstream], context: &str) {
    let until = Instant::now() + ANSWER_WITHIN;
    loop {
        let page = admin_get(admin, "/metrics").await.body;
        let value = |s: &str| metric(&page, s).unwrap_or(0.0);
        let live: Vec<usize> = upstreams.iter().map(|u| u.live()).collect();
        let state = (value(OPEN), value(IDLE), value(DOWNSTREAM), live.clone());
        if state == (0.0, 0.0, 0.0, vec![0; upstreams.len()]) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{context}: (upstream open, upstream idle, downstream open, connections the upstreams still have) stayed at {state:?}, expected all 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (bounded) until `hitless_upstream_connections_open` equals the connections the
/// upstream has, and idle ones are at most as many.
async fn wait_gauges_match_upstream(admin: SocketAddr, upstream: &Upstream, context: &str) {
    let until = Instant::now() + ANSWER_WITHIN;
    loop {
        let page = admin_get(admin, "/metrics").await.body;
        let open = metric(&page, OPEN).unwrap_or(0.0);
        let idle = metric(&page, IDLE).unwrap_or(0.0);
        let live = upstream.live() as f64;
        if open == live && idle <= open {
            return;
        }
        assert!(
            Instant::now() < until,
            "{context}: open {open}, idle {idle}, the upstream has {live}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue #13, defect 21: connections handed back by requests in flight to an endpoint a
/// reload removed are closed and uncounted: every gauge returns to zero once the load stops.
async fn gauges_return_to_zero_after_a_reload_removes_a_busy_endpoint(engine: Engine) {
    let old = pool_upstream("old").await;
    let new = pool_upstream("new").await;
    let app = start_proxy(&pool_config(engine, old.addr)).await;
    let addr = app.traffic_addrs[0];
    let mut in_flight = concurrent(addr, 2, "/slow").await;
    old.wait_requests(2).await;
    let mut config = hitless::config::Config::from_yaml(&pool_config(engine, new.addr)).unwrap();
    config.access_log = false;
    app.reload(&config).unwrap();
    answered(&mut in_flight, "old", "in flight during the reload").await;
    let mut after = concurrent(addr, 2, "/").await;
    answered(&mut after, "new", "after the reload").await;
    drop((in_flight, after));
    wait_all_closed(
        app.admin_addr,
        &[&old, &new],
        "after a reload removed a busy endpoint",
    )
    .await;
}
on_both_engines!(gauges_return_to_zero_after_a_reload_removes_a_busy_endpoint);

/// Issue #13, defect 21: after a burst that opens many connections, and after the upstream
/// closes them all (a restart), the gauges match the upstream's connections and return to
/// zero once idle.
async fn gauges_return_to_zero_after_bursts_and_an_upstream_restart(engine: Engine) {
    let upstream = pool_upstream("app").await;
    let app = start_proxy(&pool_config(engine, upstream.addr)).await;
    let addr = app.traffic_addrs[0];

    let mut burst = concurrent(addr, 8, "/slow").await;
    answered(&mut burst, "app", "burst").await;
    wait_gauges_match_upstream(app.admin_addr, &upstream, "after a burst").await;
    drop(burst);
    wait_all_closed(app.admin_addr, &[&upstream], "idle after a burst").await;

    let mut burst = concurrent(addr, 8, "/slow").await;
    answered(&mut burst, "app", "second burst").await;
    upstream.close_all();
    wait_gauges_match_upstream(app.admin_addr, &upstream, "after the upstream restarted").await;
    let mut again = concurrent(addr, 2, "/").await;
    answered(&mut again, "app", "after the upstream restarted").await;
    drop((burst, again));
    wait_all_closed(app.admin_addr, &[&upstream], "idle after a restart").await;
}
on_both_engines!(gauges_return_to_zero_after_bursts_and_an_upstream_restart);
