//! Test harness: real upstream servers on 127.0.0.1:0 (well-behaved and misbehaving), hitless
//! in-process on listeners bound here, hitless as a child process, and plain HTTP clients.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

pub mod kube_api;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use futures_util::{SinkExt, StreamExt};
use hitless::app::{App, Listeners};
use hitless::config::Config;

pub type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A server task that stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 upstream answering with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(listener, handler)
}

pub fn upstream_on<F, Fut>(listener: TcpListener, handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        connections,
        task,
    }
}

/// An upstream that echoes what it received: method, path, version and headers as text lines.
pub async fn echo_upstream() -> Server {
    upstream(|req: Request<Incoming>| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        Response::new(full(text))
    })
    .await
}

/// An upstream that answers a fixed text (to tell several apart).
pub async fn named_upstream(name: &'static str) -> Server {
    upstream(move |_req| async move { Response::new(full(name)) }).await
}

/// Upstreams on one port at several loopback addresses (127.0.0.1, 127.0.0.2...), the way pods
/// of a Service share a port at different IPs. Each answers its own IP; `/slow` answers after
/// 1.5 s. Returns the port and the servers, in the order of `ips`.
pub async fn pods(ips: &[&'static str]) -> (u16, Vec<Server>) {
    'retry: for _ in 0..20 {
        let first = TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry, // the port is taken at that address: another one
            }
        }
        let servers = listeners
            .into_iter()
            .zip(ips.iter().copied())
            .map(|(l, ip)| {
                upstream_on(l, move |req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    Response::new(full(ip))
                })
            })
            .collect();
        return (port, servers);
    }
    panic!("no common free port on {ips:?}");
}

/// A raw TCP server: each accepted connection is handed to `f`.
pub async fn raw_server<F, Fut>(f: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(f(stream));
        }
    });
    Server {
        addr,
        connections,
        task,
    }
}

/// Read a request head (up to the blank line) from a raw stream.
pub async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    buf
}

/// A server that resets every connection as soon as the request head arrived.
pub async fn resetting_upstream() -> Server {
    raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
    })
    .await
}

/// A server that reads the request and never answers.
pub async fn silent_upstream() -> Server {
    raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await
}

/// A server that answers every request with `bytes` verbatim, then closes.
pub async fn scripted_upstream(bytes: &'static [u8]) -> Server {
    raw_server(move |mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// An address where nothing listens: connections are refused.
pub async fn refused_addr() -> SocketAddr {
    // Bound but never listening: connects get a reset, and while the socket stays bound no
    // other test's listener can be given the port (a freed port was, now and then, and the
    // "refused" backend answered). Held for the test binary's life.
    static HELD: std::sync::Mutex<Vec<socket2::Socket>> = std::sync::Mutex::new(Vec::new());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    HELD.lock().unwrap().push(socket);
    addr
}

/// A listener whose accept queue is full and never drained: further SYNs go unanswered, as
/// for a dead pod's IP. Keep the returned value alive for the duration of the test.
pub async fn blackhole() -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    blackhole_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// A black hole on a given address (a port an upstream just left).
pub async fn blackhole_at(
    addr: SocketAddr,
) -> (SocketAddr, Vec<std::net::TcpStream>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(0).unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (backlog 0 admits one or two) with non-blocking connects.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(std::net::TcpStream::from(s));
    }
    // Give the kernel a moment to complete the handshakes it will complete.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (addr, fillers, socket)
}

/// Replace `{name}` placeholders in a YAML template.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// hitless in-process, on listeners bound to 127.0.0.1:0 (the config's own addresses are
/// ignored). Access log off so test output stays readable.
pub async fn start_proxy(yaml: &str) -> App {
    let mut config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config: {e}"));
    config.access_log = false;
    let listeners = Listeners {
        traffic: vec![TcpListener::bind("127.0.0.1:0").await.unwrap()],
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    App::start(&config, listeners).unwrap()
}

/// One-endpoint proxy config in front of `addr`.
pub fn simple_config(addr: SocketAddr) -> String {
    format!("backends:\n  app:\n    endpoints: [\"{addr}\"]\nroutes:\n  - name: app\n    backend: app\n")
}

pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// A pooled HTTP/1.1 client.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn send(client: &Client, request: Request<Body>) -> Answer {
    let response = client.request(request).await.expect("request failed");
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &Client, addr: SocketAddr, host: &str, path: &str) -> Answer {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(full(""))
        .unwrap();
    send(client, request).await
}

/// Fetch an admin path with a fresh client.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Answer {
    get(&client(), addr, "admin", path).await
}

/// The value of a metric line (exact label set as printed) in a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

/// The `hitless` binary as a child process, killed on drop.
pub struct ChildProxy {
    pub child: Child,
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn hitless_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hitless"))
}

pub fn spawn_hitless(args: &[&str]) -> ChildProxy {
    let child = hitless_bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hitless");
    ChildProxy { child }
}

/// A free loopback port (bound then released: only for child processes, which must bind
/// themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `/readyz` until it answers 200 (bounded: 20 s).
pub async fn wait_ready(admin: SocketAddr) {
    for _ in 0..400 {
        if is_ready(admin).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hitless did not become ready on {admin}");
}

/// Whether `/readyz` on `admin` answers 200 (one probe).
pub async fn is_ready(admin: SocketAddr) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(admin)).await
    else {
        return false;
    };
    let _ = s
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    out.starts_with(b"HTTP/1.1 200")
}

/// A `hitless` child ready on its admin port. `start(attempt)` writes its config on fresh
/// ports and returns the arguments and the admin address. A child that exits before it is
/// ready (a port `free_port` gave was taken by a parallel test before the child bound it) is
/// started again on other ports, three times at most; one still not ready after 60 s (CI's 2
/// busy cores) fails the test with what it printed.
pub async fn spawn_ready<T>(
    mut start: impl FnMut(u32) -> (Vec<String>, SocketAddr, T),
) -> (ChildProxy, SocketAddr, T) {
    let mut printed = String::new();
    for attempt in 0..3 {
        let (args, admin, extra) = start(attempt);
        let log = std::env::temp_dir().join(format!(
            "hitless-child-{}-{}.log",
            std::process::id(),
            admin.port()
        ));
        let child = hitless_bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn hitless");
        let mut proxy = ChildProxy { child };
        for _ in 0..1200 {
            if is_ready(admin).await {
                let _ = std::fs::remove_file(&log);
                return (proxy, admin, extra);
            }
            if proxy.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        printed = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if proxy.child.try_wait().ok().flatten().is_none() {
            panic!("hitless did not become ready on {admin} within 60 s; it printed:\n{printed}");
        }
    }
    panic!("hitless exited before it was ready, three times; it printed:\n{printed}");
}

/// Peak and current resident memory of a process, in KiB (Linux `/proc`).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A WebSocket server that echoes every data message.
pub async fn ws_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A certificate authority made in the test (rcgen), and leaf certificates it signs.
pub struct TestCa {
    pub issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names, or IP addresses such as "127.0.0.1"), and its key.
    pub fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert, key)
    }
}

/// The value of `series` on hitless's `/metrics` (0 when absent).
pub async fn metric_at(admin: SocketAddr, series: &str) -> f64 {
    metric(&admin_get(admin, "/metrics").await.body, series).unwrap_or(0.0)
}

/// Poll `/metrics` until `series` reaches `at_least` (bounded: 15 s).
pub async fn wait_metric(admin: SocketAddr, series: &str, at_least: f64) {
    for _ in 0..300 {
        if metric_at(admin, series).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {at_least}");
}
