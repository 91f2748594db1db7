//! Fault injection (`routes[].fault`, `x-hitless-fault`): injected answers counted within
//! statistical bounds over a fixed seed at load, the forcing header on both HTTP versions,
//! each fault marked in `Proxy-Status` and the metrics, and nothing injected unless configured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream counting the requests it served, echoing `x-hitless-fault` back if it got one.
async fn counted() -> (Server, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&served);
    let server = upstream(move |req: Request<hyper::body::Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let header = req
                .headers()
                .get("x-hitless-fault")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            http::Response::new(full(format!("ok {header}")))
        }
    })
    .await;
    (server, served)
}

fn config(addr: std::net::SocketAddr, fault: &str) -> String {
    format!(
        "backends:\n  app:\n    endpoints: [\"{addr}\"]\nroutes:\n  - name: app\n    backend: app\n{fault}"
    )
}

fn forced(value: &'static str) -> Request<Body> {
    Request::builder()
        .uri("/x")
        .header("host", "example.com")
        .header("x-hitless-fault", value)
        .body(full(""))
        .unwrap()
}

fn at(app: &hitless::app::App, request: Request<Body>) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{}{}", app.traffic_addrs[0], parts.uri)
        .parse()
        .unwrap();
    Request::from_parts(parts, body)
}

#[tokio::test]
async fn nothing_is_injected_unless_configured() {
    let (server, served) = counted().await;
    let app = start_proxy(&config(server.addr, "")).await;
    let client = client();
    for value in ["abort=503", "reset", "delay=10s"] {
        let answer = send(&client, at(&app, forced(value))).await;
        assert_eq!(answer.status, 200);
        // Not hitless's header on this route: passed on untouched.
        assert_eq!(answer.body, format!("ok {value}"));
        assert_eq!(answer.header("proxy-status"), "");
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert!(!page.contains("hitless_faults_injected_total{"), "{page}");
    assert_eq!(
        metric(
            &page,
            "hitless_proxy_errors_total{cause=\"fault_injected\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_header_forces_abort_delay_and_reset_on_a_route_with_fault() {
    let (server, served) = counted().await;
    // `fault: {}`: no random faults, the header only.
    let app = start_proxy(&config(server.addr, "    fault: {}\n")).await;
    let client = client();

    let answer = send(&client, at(&app, forced("abort=503"))).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .header("proxy-status")
            .starts_with("hitless; error=proxy_internal_response; details=\"fault_injected"),
        "{}",
        answer.header("proxy-status")
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "an abort never reaches the backend"
    );

    let started = Instant::now();
    let answer = send(&client, at(&app, forced("delay=300ms"))).await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Consumed by hitless: the backend does not see it.
    assert_eq!(answer.body, "ok ");
    assert_eq!(
        answer.header("proxy-status"),
        "hitless; details=\"fault_injected delay\""
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Reset: the connection is dropped without an answer (HTTP/1.1, raw socket).
    let mut s = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: example.com\r\nx-hitless-fault: reset\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the connection stayed open")
        .ok();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    // HTTP/2: the stream is reset, the connection serves the next request.
    let h2 = h2c_client();
    let reset = h2.request(at(&app, forced("reset"))).await;
    assert!(
        reset.is_err(),
        "an injected reset answered {:?}",
        reset.map(|r| r.status())
    );
    let answer = send(&h2, at(&app, forced("abort=502"))).await;
    assert_eq!(answer.status, 502);

    let answer = send(&client, at(&app, forced("explode"))).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("x-hitless-fault"), "{}", answer.body);
    assert_eq!(served.load(Ordering::SeqCst), 1);

    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let count = |kind: &str| {
        metric(
            &page,
            &format!("hitless_faults_injected_total{{route=\"app\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(count("abort"), Some(2.0));
    assert_eq!(count("delay"), Some(1.0));
    assert_eq!(count("reset"), Some(2.0));
    assert_eq!(
        metric(
            &page,
            "hitless_proxy_errors_total{cause=\"fault_injected\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_aborts_at_load_stay_within_statistical_bounds() {
    const REQUESTS: usize = 4_000;
    const CONNS: usize = 32;
    let (server, served) = counted().await;
    let app = start_proxy(&config(
        server.addr,
        "    fault: {abort: {status: 502, percent: 10}, delay: {duration: 1ms, percent: 5}, seed: 42}\n",
    ))
    .await;
    let addr = app.traffic_addrs[0];
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let (mut ok, mut aborted) = (0usize, 0usize);
            let mut buf = vec![0u8; 8192];
            while next.fetch_add(1, Ordering::SeqCst) < REQUESTS {
                s.write_all(b"GET /x HTTP/1.1\r\nhost: example.com\r\n\r\n")
                    .await
                    .unwrap();
                // One answer per request; each is small and has a Content-Length.
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed");
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap();
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                if got.starts_with(b"HTTP/1.1 200") {
                    ok += 1;
                } else if got.starts_with(b"HTTP/1.1 502") {
                    aborted += 1;
                } else {
                    panic!("{}", String::from_utf8_lossy(&got));
                }
            }
            (ok, aborted)
        });
    }
    let (mut ok, mut aborted) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, a) = done.unwrap();
        ok += o;
        aborted += a;
    }
    assert_eq!(ok + aborted, REQUESTS);
    // Binomial(4000, 0.1): sd 19; 5 sd either side.
    assert!((400 - 95..=400 + 95).contains(&aborted), "{aborted} aborts");
    assert_eq!(
        served.load(Ordering::SeqCst),
        ok,
        "every other request served"
    );
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_faults_injected_total{route=\"app\",kind=\"abort\"}"
        ),
        Some(aborted as f64),
        "each injected answer counted once"
    );
    let delays = metric(
        &page,
        "hitless_faults_injected_total{route=\"app\",kind=\"delay\"}",
    )
    .unwrap_or(0.0);
    // Binomial(4000, 0.05): sd 14.
    assert!(
        (200.0 - 70.0..=200.0 + 70.0).contains(&delays),
        "{delays} delays"
    );
}
