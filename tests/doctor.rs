//! `hitless doctor` against real servers on 127.0.0.1: a plain HTTP/1.1 app (hyper), an h2c
//! app, TLS apps with rcgen certificates (valid, expired, for another name), raw apps that
//! close idle connections after 2 s, close after each response, close after 5 requests, send
//! a 70 KB head, accept WebSocket upgrades; an address that refuses, one that black-holes
//! SYNs (a full accept queue), a tonic gRPC server with tonic-health, and DNS discovery
//! through a DNS responder written here. Each case asserts the exact (check, verdict) lines of
//! each endpoint, in order: a finding appears where it should and nowhere else. Runs go through
//! the library API (`hitless::doctor::run`); the last test runs the real binary for the exit
//! status, the text and `--json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hitless::config::Config;
use hitless::doctor::{self, Options, Report, Verdict};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use Verdict::{Fail, Ok as Pass, Warn};

/// Long enough to see the 2 s keep-alive app close, and above the default pool idle (1.5 s).
const IDLE_PROBE: Duration = Duration::from_secs(3);
/// Where keep-alive is not the point: still above the pool idle, so "kept open" is ok.
const SHORT_PROBE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Running the doctor and reading its report

async fn url(url: String, idle_probe: Duration, tweak: impl FnOnce(&mut Options)) -> Report {
    let mut options = Options::url(&url);
    options.idle_probe = idle_probe;
    tweak(&mut options);
    let r = doctor::run(options).await.expect("usable options");
    eprintln!("{}", r.text());
    r
}

async fn config(yaml: &str, idle_probe: Duration) -> Report {
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
    let mut options = Options::config(config, None);
    options.idle_probe = idle_probe;
    let r = doctor::run(options).await.expect("usable options");
    eprintln!("{}", r.text());
    r
}

/// The (check, verdict) lines of one endpoint, in order.
fn lines(report: &Report, endpoint: SocketAddr) -> Vec<(&'static str, Verdict)> {
    let endpoint = endpoint.to_string();
    let group = report
        .groups
        .iter()
        .find(|g| g.endpoint.as_deref() == Some(endpoint.as_str()))
        .unwrap_or_else(|| panic!("no group for {endpoint}:\n{}", report.text()));
    group
        .findings
        .iter()
        .map(|f| (f.check, f.verdict))
        .collect()
}

/// The one finding of `check` for `endpoint`.
fn finding(report: &Report, endpoint: SocketAddr, check: &str) -> doctor::Finding {
    let endpoint = endpoint.to_string();
    report
        .findings()
        .find(|(g, f)| g.endpoint.as_deref() == Some(endpoint.as_str()) && f.check == check)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("no {check} line for {endpoint}:\n{}", report.text()))
}

fn fix(report: &Report, endpoint: SocketAddr, check: &str) -> String {
    finding(report, endpoint, check).fix.unwrap_or_default()
}

/// The seconds in "... after 2.05s; ..." of an idle-timeout line.
fn measured_seconds(found: &str) -> f64 {
    let after = found.split("after ").nth(1).expect("a measured time");
    let number = after.split(['s', 'm']).next().unwrap();
    let value: f64 = number.parse().unwrap();
    if after.starts_with(&format!("{number}ms")) {
        value / 1000.0
    } else {
        value
    }
}

const HTTP_OK: &[(&str, Verdict)] = &[
    ("connect", Pass),
    ("protocol", Pass),
    ("health", Pass),
    ("header-size", Pass),
    ("idle-timeout", Pass),
    ("reuse", Pass),
];

// ---------------------------------------------------------------------------------------------
// Servers

/// A plain HTTP/1.1 app (hyper): 200 on every path, keep-alive without an idle timeout.
async fn http_app() -> Server {
    upstream(|_req| async { http::Response::new(full("ok")) }).await
}

/// An HTTP/2-only app with prior knowledge (hyper's http2 server).
async fn h2c_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("h2 ok")))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// How a raw app behaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Close a connection idle this long after an answer.
    idle: Option<Duration>,
    /// Close after this many answers on a connection (no `Connection: close`).
    max_requests: Option<usize>,
    keep_alive_header: Option<&'static str>,
    /// Header bytes added to every answer.
    padding: usize,
    /// Answer `Upgrade: websocket` requests on this path with 101.
    websocket: Option<&'static str>,
}

/// A request head, or `None` when the connection should end. Bytes that cannot start a
/// request (a TLS ClientHello, an HTTP/2 frame) get a 400 and a close, as HTTP servers do.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        if head.is_empty() && !byte[0].is_ascii_alphabetic() {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

async fn raw_app(behaviour: Behaviour) -> Server {
    let behaviour = Arc::new(behaviour);
    raw_server(move |mut stream| {
        let b = Arc::clone(&behaviour);
        async move {
            let mut answered = 0;
            loop {
                let next = match b.idle {
                    Some(idle) if answered > 0 => {
                        // Idle too long: close.
                        tokio::time::timeout(idle, read_request(&mut stream))
                            .await
                            .unwrap_or_default()
                    }
                    _ => read_request(&mut stream).await,
                };
                let Some(head) = next else { return };
                let lower = head.to_ascii_lowercase();
                if let Some(path) = b.websocket {
                    if lower.starts_with(&format!("get {path} ")) && lower.contains("upgrade: websocket") {
                        let key = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                            .unwrap_or_default();
                        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                            key.trim().as_bytes(),
                        );
                        let answer = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                        let _ = stream.write_all(answer.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                }
                let mut answer = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
                if let Some(header) = b.keep_alive_header {
                    answer.push_str(&format!("Keep-Alive: {header}\r\n"));
                }
                if b.padding > 0 {
                    answer.push_str(&format!("X-Padding: {}\r\n", "p".repeat(b.padding)));
                }
                answer.push_str("\r\nok");
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                answered += 1;
                if b.max_requests == Some(answered) {
                    return;
                }
            }
        }
    })
    .await
}

/// Certificates made here, and their files.
struct Pki {
    ca: TestCa,
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("hitless-doctor-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        Pki { ca, dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A leaf for `names`; `expired`: valid in 2020 only.
    fn leaf(&self, names: &[&str], expired: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        (params.signed_by(&key, &self.ca.issuer).unwrap(), key)
    }
}

/// A TLS app (hyper-util auto: HTTP/1.1 and HTTP/2 by ALPN) with a leaf of `pki`.
async fn tls_app(pki: &Pki, names: &[&str], expired: bool) -> SocketAddr {
    let (cert, key) = pki.leaf(names, expired);
    let chain = vec![cert.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("tls ok")))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A tonic gRPC server with tonic-health: "" and shop.Cart SERVING, shop.Orders NOT_SERVING.
async fn grpc_app() -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("shop.Orders", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    addr
}

/// A DNS responder answering A queries for `api.test.` with 127.0.0.1 and NXDOMAIN for
/// anything else (AAAA: an empty answer).
async fn dns_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let query = &buf[..n];
            let Some(end) = query
                .get(12..)
                .and_then(|q| q.iter().position(|&b| b == 0))
                .map(|p| 12 + p + 5)
                .filter(|&end| end <= n)
            else {
                continue;
            };
            let name = &query[12..end - 4];
            let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
            let known = name == b"\x03api\x04test\x00";
            let records: Vec<Ipv4Addr> = if known && qtype == 1 {
                vec![Ipv4Addr::LOCALHOST]
            } else {
                Vec::new()
            };
            let rcode = if known { 0 } else { 3 };
            let mut out = Vec::new();
            out.extend_from_slice(&query[0..2]);
            out.extend_from_slice(&[0x81, 0x80 | rcode]);
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&(records.len() as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&query[12..end]);
            for ip in records {
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
                out.extend_from_slice(&5u32.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&out, peer).await;
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Cases

#[tokio::test]
async fn plain_http_and_h2c_apps_match_their_protocols_and_are_named_when_they_do_not() {
    let http = http_app().await;
    let h2c = h2c_app().await;
    let (a, b, c, d, e) = tokio::join!(
        url(format!("http://{}/healthz", http.addr), SHORT_PROBE, |_| {}),
        url(format!("h2c://{h2c}/"), SHORT_PROBE, |_| {}),
        url(format!("http://{h2c}/"), SHORT_PROBE, |_| {}),
        url(format!("h2c://{}/", http.addr), SHORT_PROBE, |_| {}),
        url(format!("https://{}/", http.addr), SHORT_PROBE, |_| {}),
    );
    assert_eq!(lines(&a, http.addr), HTTP_OK, "{}", a.text());
    assert_eq!(a.exit_code(), 0);
    assert!(finding(&a, http.addr, "protocol")
        .found
        .starts_with("plaintext HTTP/1.1,"));
    assert_eq!(finding(&a, http.addr, "health").found, "GET /healthz: 200");

    assert_eq!(lines(&b, h2c), HTTP_OK, "{}", b.text());
    assert!(finding(&b, h2c, "protocol")
        .found
        .starts_with("h2c (HTTP/2 prior knowledge),"));

    // An HTTP/2-only app configured as http: named, with the fix; the rest measured over h2c.
    let mut expected = HTTP_OK.to_vec();
    expected[1] = ("protocol", Fail);
    assert_eq!(lines(&c, h2c), expected, "{}", c.text());
    assert_eq!(fix(&c, h2c, "protocol"), "backends.<name>.protocol: h2c");
    assert_eq!(c.exit_code(), 1);
    // And the reverse.
    assert_eq!(lines(&d, http.addr), expected, "{}", d.text());
    assert_eq!(
        fix(&d, http.addr, "protocol"),
        "backends.<name>.protocol: http"
    );
    // Plaintext where TLS is configured (the TLS ClientHello gets an HTTP answer).
    assert_eq!(lines(&e, http.addr), expected, "{}", e.text());
    assert_eq!(
        fix(&e, http.addr, "protocol"),
        "backends.<name>.protocol: http"
    );
}

#[tokio::test]
async fn tls_certificates_expired_and_for_another_name_are_named_with_their_fix() {
    let pki = Pki::new("certs");
    let good = tls_app(&pki, &["b.test"], false).await;
    let expired = tls_app(&pki, &["b.test"], true).await;
    let other = tls_app(&pki, &["other.test"], false).await;
    let ca = pki.ca_file();
    let with_ca = |o: &mut Options| {
        o.ca_file = Some(ca.clone());
        o.server_name = Some("b.test".into());
    };
    let (a, b, c, d, e) = tokio::join!(
        url(format!("https://{good}/"), SHORT_PROBE, with_ca),
        url(format!("https://{expired}/"), SHORT_PROBE, with_ca),
        url(format!("https://{other}/"), SHORT_PROBE, with_ca),
        // No CA file: the public roots do not know the test CA.
        url(format!("https://{good}/"), SHORT_PROBE, |o| o.server_name =
            Some("b.test".into())),
        // TLS where plaintext is configured.
        url(format!("http://{good}/"), SHORT_PROBE, |_| {}),
    );
    let tls_ok: Vec<(&str, Verdict)> = vec![
        ("connect", Pass),
        ("protocol", Pass),
        ("tls", Pass),
        ("certificate", Pass),
        ("verify", Pass),
        ("health", Pass),
        ("header-size", Pass),
        ("idle-timeout", Pass),
        ("reuse", Pass),
    ];
    assert_eq!(lines(&a, good), tls_ok, "{}", a.text());
    assert!(
        finding(&a, good, "tls").found.contains("ALPN h2"),
        "{}",
        a.text()
    );
    let certificate = finding(&a, good, "certificate").found;
    assert!(
        certificate.starts_with("[b.test], expires on "),
        "{certificate}"
    );

    let mut expect = tls_ok.clone();
    expect[3] = ("certificate", Fail);
    assert_eq!(lines(&b, expired), expect, "{}", b.text());
    assert!(finding(&b, expired, "certificate")
        .found
        .contains("expired on 2021-01-01"));
    assert!(
        finding(&b, expired, "verify")
            .found
            .contains("its dates aside"),
        "the name and issuer are still checked: {}",
        b.text()
    );

    let mut expect = tls_ok.clone();
    expect[4] = ("verify", Fail);
    assert_eq!(lines(&c, other), expect, "{}", c.text());
    assert_eq!(
        fix(&c, other, "verify"),
        "backends.<name>.tls.server_name: other.test"
    );

    assert_eq!(lines(&d, good), expect, "{}", d.text());
    assert!(fix(&d, good, "verify").starts_with("backends.<name>.tls.ca_file: "));

    let tls_for_http: Vec<(&str, Verdict)> = vec![
        ("connect", Pass),
        ("protocol", Fail),
        ("tls", Pass),
        ("health", Pass),
        ("header-size", Pass),
        ("idle-timeout", Pass),
        ("reuse", Pass),
    ];
    assert_eq!(lines(&e, good), tls_for_http, "{}", e.text());
    assert_eq!(fix(&e, good, "protocol"), "backends.<name>.protocol: https");
}

#[tokio::test]
async fn the_idle_timeout_is_measured_and_compared_with_the_pool() {
    let ka = raw_app(Behaviour {
        idle: Some(Duration::from_secs(2)),
        keep_alive_header: Some("timeout=2"),
        ..Behaviour::default()
    })
    .await;
    let yaml = |pool: &str| {
        format!(
            "backends:\n  ka: {{endpoints: [\"{}\"], pool: {{idle_timeout: {pool}}}}}\nroutes:\n  - backend: ka\n",
            ka.addr
        )
    };
    let (racing_yaml, thin_yaml) = (yaml("2s"), yaml("1800ms"));
    let (default, racing, thin) = tokio::join!(
        url(format!("http://{}/", ka.addr), IDLE_PROBE, |_| {}),
        config(&racing_yaml, IDLE_PROBE),
        config(&thin_yaml, IDLE_PROBE),
    );
    // The default pool idle (1.5 s) is 75% of the app's 2 s: nothing to say.
    let expected = vec![
        ("connect", Pass),
        ("protocol", Pass),
        ("health", Pass),
        ("header-size", Pass),
        ("keep-alive-header", Pass),
        ("idle-timeout", Pass),
        ("reuse", Pass),
    ];
    assert_eq!(lines(&default, ka.addr), expected, "{}", default.text());
    let measured = measured_seconds(&finding(&default, ka.addr, "idle-timeout").found);
    assert!((1.7..2.6).contains(&measured), "measured {measured}s");

    // A pool that keeps connections as long as the app: the keep-alive race.
    let mut expected_racing = expected.clone();
    expected_racing[4] = ("keep-alive-header", Warn);
    expected_racing[5] = ("idle-timeout", Fail);
    assert_eq!(
        lines(&racing, ka.addr),
        expected_racing,
        "{}",
        racing.text()
    );
    let idle_fix = fix(&racing, ka.addr, "idle-timeout");
    assert!(
        idle_fix.starts_with("backends.ka.pool.idle_timeout: 1")
            && idle_fix.contains("ms (below the measured"),
        "{idle_fix}"
    );
    assert_eq!(
        fix(&racing, ka.addr, "keep-alive-header"),
        "backends.ka.pool.idle_timeout: 1500ms"
    );
    assert_eq!(racing.exit_code(), 1);

    // Within 25% of it: a warning.
    let mut expected_thin = expected_racing.clone();
    expected_thin[5] = ("idle-timeout", Warn);
    assert_eq!(lines(&thin, ka.addr), expected_thin, "{}", thin.text());
    assert_eq!(thin.exit_code(), 0);
}

#[tokio::test]
async fn closes_after_each_response_or_after_n_requests_are_counted() {
    let each = raw_app(Behaviour {
        max_requests: Some(1),
        ..Behaviour::default()
    })
    .await;
    let five = raw_app(Behaviour {
        max_requests: Some(5),
        ..Behaviour::default()
    })
    .await;
    let (a, b) = tokio::join!(
        url(format!("http://{}/", each.addr), SHORT_PROBE, |_| {}),
        url(format!("http://{}/", five.addr), SHORT_PROBE, |_| {}),
    );
    // No idle-timeout line: a close with the answer is not an idle timeout.
    assert_eq!(
        lines(&a, each.addr),
        [
            ("connect", Pass),
            ("protocol", Pass),
            ("health", Pass),
            ("header-size", Pass),
            ("reuse", Warn),
        ],
        "{}",
        a.text()
    );
    assert!(finding(&a, each.addr, "reuse")
        .found
        .contains("after each response"));
    assert_eq!(a.exit_code(), 0, "no reuse costs connects, not 502s");

    let mut expected = HTTP_OK.to_vec();
    expected[5] = ("reuse", Warn);
    assert_eq!(lines(&b, five.addr), expected, "{}", b.text());
    let reuse = finding(&b, five.addr, "reuse").found;
    assert!(
        reuse.contains("after 5 requests") && reuse.contains("re-sent by hitless"),
        "{reuse}"
    );
}

#[tokio::test]
async fn refused_and_black_holed_connects_fail_with_nothing_else_said() {
    let refused = refused_addr().await;
    let (hole, _fillers, _socket) = blackhole().await;
    let yaml = format!(
        "backends:\n  api: {{endpoints: [\"{refused}\", \"{hole}\"]}}\nroutes:\n  - backend: api\n"
    );
    let report = config(&yaml, SHORT_PROBE).await;
    assert_eq!(
        lines(&report, refused),
        [("connect", Fail)],
        "{}",
        report.text()
    );
    assert_eq!(
        lines(&report, hole),
        [("connect", Fail)],
        "{}",
        report.text()
    );
    assert!(finding(&report, refused, "connect")
        .found
        .starts_with("refused"));
    let black = finding(&report, hole, "connect");
    assert!(
        black.found.contains("SYNs unanswered") && black.found.contains("black hole"),
        "{black:?}"
    );
    assert!(
        fix(&report, hole, "connect").starts_with(&format!("backends.api.endpoints: drop {hole}"))
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn grpc_health_is_asked_with_the_grpc_health_protocol() {
    let grpc = grpc_app().await;
    let (whole, cart, orders, unknown) = tokio::join!(
        url(format!("grpc://{grpc}"), SHORT_PROBE, |_| {}),
        url(format!("grpc://{grpc}/shop.Cart"), SHORT_PROBE, |_| {}),
        url(format!("grpc://{grpc}/shop.Orders"), SHORT_PROBE, |_| {}),
        url(format!("grpc://{grpc}/shop.Nothing"), SHORT_PROBE, |_| {}),
    );
    let expected = vec![
        ("connect", Pass),
        ("protocol", Pass),
        ("grpc-health", Pass),
        ("header-size", Pass),
        ("idle-timeout", Pass),
        ("reuse", Pass),
    ];
    assert_eq!(lines(&whole, grpc), expected, "{}", whole.text());
    assert_eq!(lines(&cart, grpc), expected, "{}", cart.text());
    assert_eq!(
        finding(&cart, grpc, "grpc-health").found,
        "grpc.health.v1.Health/Check(\"shop.Cart\"): SERVING"
    );
    let mut failing = expected.clone();
    failing[2] = ("grpc-health", Fail);
    assert_eq!(lines(&orders, grpc), failing, "{}", orders.text());
    assert!(finding(&orders, grpc, "grpc-health")
        .found
        .contains("NOT_SERVING"));
    assert_eq!(lines(&unknown, grpc), failing, "{}", unknown.text());
    assert!(
        fix(&unknown, grpc, "grpc-health").starts_with("backends.<name>.health_check.grpc_service")
    );
}

#[tokio::test]
async fn large_heads_and_websocket_upgrades() {
    let app = raw_app(Behaviour {
        websocket: Some("/ws"),
        ..Behaviour::default()
    })
    .await;
    let big = raw_app(Behaviour {
        padding: 70_000,
        ..Behaviour::default()
    })
    .await;
    let near = raw_app(Behaviour {
        padding: 52_000,
        ..Behaviour::default()
    })
    .await;
    let (ws, refused, a, b) = tokio::join!(
        url(format!("http://{}/", app.addr), SHORT_PROBE, |o| o
            .websocket =
            Some("/ws".into())),
        url(format!("http://{}/", app.addr), SHORT_PROBE, |o| o
            .websocket =
            Some("/other".into())),
        url(format!("http://{}/", big.addr), SHORT_PROBE, |_| {}),
        url(format!("http://{}/", near.addr), SHORT_PROBE, |_| {}),
    );
    let mut expected = HTTP_OK.to_vec();
    expected.push(("websocket", Pass));
    assert_eq!(lines(&ws, app.addr), expected, "{}", ws.text());
    expected[6] = ("websocket", Fail);
    assert_eq!(lines(&refused, app.addr), expected, "{}", refused.text());
    assert!(finding(&refused, app.addr, "websocket")
        .found
        .contains("200, not 101"));

    let mut expected = HTTP_OK.to_vec();
    expected[3] = ("header-size", Fail);
    assert_eq!(lines(&a, big.addr), expected, "{}", a.text());
    assert_eq!(
        fix(&a, big.addr, "header-size"),
        "limits.max_response_header_bytes: 131072"
    );
    expected[3] = ("header-size", Warn);
    assert_eq!(lines(&b, near.addr), expected, "{}", b.text());
}

/// A config whose settings match every app: nothing but ok, exit 0. Then DNS discovery: the
/// discovered endpoint is probed, a name that does not resolve is a FAIL for its backend.
#[tokio::test]
async fn a_config_that_matches_its_apps_has_no_finding_and_discovery_is_followed() {
    let pki = Pki::new("matching");
    let http = http_app().await;
    let h2c = h2c_app().await;
    let tls = tls_app(&pki, &["b.test"], false).await;
    let grpc = grpc_app().await;
    let ka = raw_app(Behaviour {
        idle: Some(Duration::from_secs(2)),
        keep_alive_header: Some("timeout=2"),
        ..Behaviour::default()
    })
    .await;
    let dns = dns_server().await;
    let yaml = format!(
        r#"backends:
  web: {{endpoints: ["{web}"], health_check: {{path: /healthz}}}}
  h2: {{endpoints: ["{h2c}"], protocol: h2c}}
  secure:
    endpoints: ["{tls}"]
    protocol: https
    tls: {{ca_file: "{ca}", server_name: b.test}}
  rpc: {{endpoints: ["{grpc}"], protocol: grpc, health_check: {{grpc_service: shop.Cart}}}}
  ka: {{endpoints: ["{ka}"]}}
  found:
    discovery: {{dns: {{name: "api.test.:{port}", nameservers: ["{dns}"]}}}}
routes:
  - backend: web
"#,
        web = http.addr,
        ca = pki.ca_file().display(),
        ka = ka.addr,
        port = http.addr.port(),
    );
    let report = config(&yaml, IDLE_PROBE).await;
    let not_ok: Vec<_> = report
        .findings()
        .filter(|(_, f)| f.verdict != Pass)
        .collect();
    assert!(not_ok.is_empty(), "{}", report.text());
    assert_eq!(report.exit_code(), 0);
    // Every endpoint was probed, the discovered one too (twice: web and found share it).
    let endpoints: Vec<_> = report
        .groups
        .iter()
        .filter_map(|g| g.endpoint.clone())
        .collect();
    assert_eq!(endpoints.len(), 6, "{}", report.text());
    let found: Vec<_> = report
        .groups
        .iter()
        .filter(|g| g.backend.as_deref() == Some("found"))
        .map(|g| g.title.clone())
        .collect();
    assert_eq!(
        found,
        [
            format!("backend found (dns api.test.:{})", http.addr.port()),
            format!("backend found, endpoint {} (protocol http)", http.addr),
        ]
    );
    assert_eq!(lines(&report, tls)[4], ("verify", Pass));
    assert_eq!(lines(&report, grpc)[2], ("grpc-health", Pass));

    let missing = format!(
        "backends:\n  gone:\n    discovery: {{dns: {{name: \"missing.test.:80\", nameservers: [\"{dns}\"]}}}}\nroutes:\n  - backend: gone\n"
    );
    let report = config(&missing, SHORT_PROBE).await;
    let lines: Vec<_> = report
        .findings()
        .map(|(g, f)| (g.endpoint.clone(), f.check, f.verdict))
        .collect();
    assert_eq!(lines, [(None, "endpoints", Fail)], "{}", report.text());
    assert_eq!(
        report.findings().next().unwrap().1.fix.as_deref(),
        Some("backends.gone.discovery")
    );
}

/// A Kubernetes API server answering the EndpointSlice list of Service `shop/cart`: one ready
/// endpoint (127.0.0.1) and one terminating (127.0.0.2, not to be probed), port `http`.
async fn api_server(port: u16) -> Server {
    upstream(move |req: http::Request<hyper::body::Incoming>| async move {
        let listed = req.uri().path() == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
            && req.uri().query().unwrap_or_default().contains("service-name%3Dcart");
        if !listed {
            let mut answer = http::Response::new(full(
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
            ));
            *answer.status_mut() = http::StatusCode::NOT_FOUND;
            return answer;
        }
        let list = serde_json::json!({
            "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": "7"},
            "items": [{
                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"name": "cart-x1", "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": "cart"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["127.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                    {"addresses": ["127.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}
                ]
            }]
        });
        let mut answer = http::Response::new(full(list.to_string()));
        answer.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        answer
    })
    .await
}

#[tokio::test]
async fn kubernetes_endpoints_are_listed_once_and_probed() {
    let http = http_app().await;
    let api = api_server(http.addr.port()).await;
    let gone = refused_addr().await;
    let dir = std::env::temp_dir().join(format!("hitless-doctor-k8s-{}", std::process::id()));
    let kubeconfig = |name: &str, server: SocketAddr| {
        write(
            &dir,
            name,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{server}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester, namespace: shop}}\ncurrent-context: fake\nusers:\n- name: tester\n  user: {{token: test-token}}\n"
            ),
        )
    };
    let (good, broken) = (
        kubeconfig("good.yaml", api.addr),
        kubeconfig("broken.yaml", gone),
    );
    let yaml = format!(
        "backends:\n  cart:\n    discovery: {{kubernetes: {{service: cart, port: http, kubeconfig: \"{}\"}}}}\n  lost:\n    discovery: {{kubernetes: {{service: cart, kubeconfig: \"{}\"}}}}\nroutes:\n  - backend: cart\n",
        good.display(),
        broken.display()
    );
    let report = config(&yaml, SHORT_PROBE).await;
    let summary: Vec<_> = report
        .findings()
        .filter(|(g, _)| g.endpoint.is_none())
        .map(|(g, f)| (g.backend.clone().unwrap(), f.check, f.verdict))
        .collect();
    assert_eq!(
        summary,
        [
            ("cart".to_string(), "endpoints", Pass),
            ("lost".to_string(), "endpoints", Fail)
        ],
        "{}",
        report.text()
    );
    let endpoints: Vec<_> = report
        .groups
        .iter()
        .filter_map(|g| g.endpoint.clone())
        .collect();
    assert_eq!(
        endpoints,
        [http.addr.to_string()],
        "the terminating one is not probed"
    );
    assert_eq!(lines(&report, http.addr), HTTP_OK, "{}", report.text());
    assert_eq!(report.exit_code(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_urls_flags_and_backend_names_are_usage_errors() {
    for bad in ["ftp://a/", "no-scheme", "http://"] {
        assert!(doctor::run(Options::url(bad)).await.is_err(), "{bad}");
    }
    let mut options = Options::url("http://127.0.0.1:1/");
    options.idle_probe = Duration::from_secs(3600);
    assert!(doctor::run(options).await.is_err());
    let config = Config::from_yaml(
        "backends:\n  a: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - backend: a\n",
    )
    .unwrap();
    let error = doctor::run(Options::config(config, Some("b")))
        .await
        .unwrap_err();
    assert!(error.0.contains("no such backend"), "{error}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The real binary: exit status, text and JSON.
#[tokio::test]
async fn the_binary_prints_lines_and_json_and_exits_by_the_worst_verdict() {
    let http = http_app().await;
    let refused = refused_addr().await;
    let dir = std::env::temp_dir().join(format!("hitless-doctor-bin-{}", std::process::id()));
    let good = write(
        &dir,
        "good.yaml",
        &format!(
            "backends:\n  api: {{endpoints: [\"{}\"]}}\nroutes:\n  - backend: api\n",
            http.addr
        ),
    );
    let bad = write(
        &dir,
        "bad.yaml",
        &format!(
            "backends:\n  api: {{endpoints: [\"{}\", \"{refused}\"]}}\nroutes:\n  - backend: api\n",
            http.addr
        ),
    );
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || hitless_bin().args(&args).output().unwrap())
    };
    let s = |x: &str| x.to_string();
    let (ok, failing, json, usage, invalid) = tokio::join!(
        run(vec![
            s("doctor"),
            s("--config"),
            good.display().to_string(),
            s("--idle-probe"),
            s("2s")
        ]),
        run(vec![
            s("doctor"),
            s("--config"),
            bad.display().to_string(),
            s("--idle-probe"),
            s("2s")
        ]),
        run(vec![
            s("doctor"),
            s("--config"),
            bad.display().to_string(),
            s("--idle-probe"),
            s("2s"),
            s("--json")
        ]),
        run(vec![s("doctor"), s("gopher://x/")]),
        run(vec![s("doctor")]),
    );
    let (ok, failing, json, usage, invalid) = (
        ok.unwrap(),
        failing.unwrap(),
        json.unwrap(),
        usage.unwrap(),
        invalid.unwrap(),
    );

    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with(&format!(
            "backend api, endpoint {} (protocol http)\n  ok   connect: connected in ",
            http.addr
        )),
        "{text}"
    );
    assert!(
        text.contains("  ok   protocol: plaintext HTTP/1.1, as protocol http expects\n"),
        "{text}"
    );
    assert!(text.ends_with("0 FAIL, 0 warn, 6 ok\n"), "{text}");

    let text = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "backend api, endpoint {refused} (protocol http)\n  FAIL connect: refused: nothing listens there (a stopped pod, or the wrong port) -> fix: backends.api.endpoints: the address and port the app listens on\n"
        )),
        "{text}"
    );
    assert!(
        text.ends_with("1 FAIL, 0 warn, 6 ok: requests would fail (exit 1)\n"),
        "{text}"
    );

    assert_eq!(json.status.code(), Some(1));
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 7);
    let refused_line = list
        .iter()
        .find(|l| l["endpoint"] == refused.to_string())
        .unwrap();
    assert_eq!(refused_line["backend"], "api");
    assert_eq!(refused_line["check"], "connect");
    assert_eq!(refused_line["verdict"], "FAIL");
    assert_eq!(
        refused_line["fix"],
        "backends.api.endpoints: the address and port the app listens on"
    );
    assert!(list.iter().all(|l| l["found"].is_string()));

    assert_eq!(usage.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("the scheme must be"));
    assert_eq!(invalid.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(&dir);
}
