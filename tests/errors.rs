//! Every proxy-generated error, each produced by a real condition: the status, the
//! `Proxy-Status` header (RFC 9209 type + hitless cause), and the cause counted in /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::time::Duration;

use http::Request;
use support::*;

async fn expect_error(config: &str, status: u16, error_type: &str, cause: &str) -> Answer {
    let app = start_proxy(config).await;
    let client = client();
    let answer = get(&client, app.traffic_addrs[0], "example.com", "/x").await;
    assert_eq!(answer.status, status, "body: {}", answer.body);
    let proxy_status = answer.header("proxy-status");
    assert!(
        proxy_status.starts_with(&format!("hitless; error={error_type}; details=\"{cause}")),
        "proxy-status was {proxy_status:?}"
    );
    assert!(answer.body.contains(cause), "body: {}", answer.body);
    assert_eq!(answer.header("x-request-id").len(), 32);
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            &format!("hitless_proxy_errors_total{{cause=\"{cause}\"}}")
        ),
        Some(1.0),
        "{page}"
    );
    answer
}

#[tokio::test]
async fn nothing_listening_is_connect_refused() {
    let addr = refused_addr().await;
    // Without a hold the first refusal is the answer (with it: tests/resilience.rs).
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{addr}\"]\n    hold_timeout: 0s\nroutes:\n  - backend: app\n"
    );
    let answer = expect_error(&config, 502, "connection_refused", "connect_refused").await;
    assert!(answer.header("proxy-status").contains(&addr.to_string()));
}

#[tokio::test]
async fn unanswered_syn_is_connect_timeout() {
    let (addr, _fillers, _socket) = blackhole().await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{addr}\"]\n    connect_timeout: 300ms\n    hold_timeout: 0s\nroutes:\n  - backend: app\n"
    );
    let started = std::time::Instant::now();
    expect_error(&config, 502, "connection_timeout", "connect_timeout").await;
    // Bounded by the connect timeout, not the OS's minutes of SYN retries.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn reset_before_response_is_upstream_reset() {
    let server = resetting_upstream().await;
    expect_error(
        &simple_config(server.addr),
        502,
        "connection_terminated",
        "upstream_reset",
    )
    .await;
}

#[tokio::test]
async fn close_without_response_is_upstream_reset() {
    let server = scripted_upstream(b"").await;
    expect_error(
        &simple_config(server.addr),
        502,
        "connection_terminated",
        "upstream_reset",
    )
    .await;
}

#[tokio::test]
async fn garbage_is_upstream_protocol_error() {
    let server = scripted_upstream(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    expect_error(
        &simple_config(server.addr),
        502,
        "http_protocol_error",
        "upstream_protocol_error",
    )
    .await;
}

#[tokio::test]
async fn silent_backend_is_backend_timeout() {
    let server = silent_upstream().await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\"]\nroutes:\n  - backend: app\n    timeouts: {{backend_request: 300ms, request: 5s}}\n",
        server.addr
    );
    expect_error(&config, 504, "http_response_timeout", "backend_timeout").await;
}

#[tokio::test]
async fn request_deadline_is_request_timeout() {
    let server = silent_upstream().await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\"]\nroutes:\n  - backend: app\n    timeouts: {{backend_request: 5s, request: 300ms}}\n",
        server.addr
    );
    expect_error(&config, 504, "http_response_timeout", "request_timeout").await;
}

#[tokio::test]
async fn huge_response_head_is_upstream_header_too_large() {
    // 200 KiB of headers against the default 64 KiB limit.
    let head: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let server = scripted_upstream(head).await;
    expect_error(
        &simple_config(server.addr),
        502,
        "http_response_header_section_size",
        "upstream_header_too_large",
    )
    .await;
}

#[tokio::test]
async fn large_but_allowed_response_head_passes() {
    // 48 KiB of headers: nginx's default buffers would 502 here; hitless passes it.
    let server = upstream(|_req| async move {
        let mut r = http::Response::new(full("ok"));
        r.headers_mut()
            .insert("x-big", "b".repeat(48 * 1024).parse().unwrap());
        r
    })
    .await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let answer = get(&client(), app.traffic_addrs[0], "example.com", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-big").len(), 48 * 1024);
}

#[tokio::test]
async fn backend_without_endpoints_is_no_endpoints() {
    let config = "backends:\n  app:\n    endpoints: []\nroutes:\n  - backend: app\n";
    expect_error(config, 503, "destination_unavailable", "no_endpoints").await;
}

#[tokio::test]
async fn unmatched_request_is_no_route() {
    let config =
        "routes:\n  - match: {host: other.example}\n    respond: {status: 200, body: hi}\n";
    expect_error(config, 404, "destination_not_found", "no_route").await;
}

#[tokio::test]
async fn grpc_request_gets_grpc_status_unavailable() {
    let addr = refused_addr().await;
    let app = start_proxy(&simple_config(addr)).await;
    let request = Request::post(format!(
        "http://{}/pkg.Service/Method",
        app.traffic_addrs[0]
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(full(""))
    .unwrap();
    let answer = send(&h2c_client(), request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), "14");
    let message = answer.header("grpc-message");
    assert!(message.contains("connect_refused"), "{message}");
}

#[tokio::test]
async fn client_that_dies_mid_upload_is_client_body_error() {
    // The upstream waits for the whole body; the client sends half and disappears.
    let server = upstream(|req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let _ = req.into_body().collect().await;
        http::Response::new(full("done"))
    })
    .await;
    let app = start_proxy(&simple_config(server.addr)).await;
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(app.traffic_addrs[0])
            .await
            .unwrap();
        s.write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\nhalf")
            .await
            .unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client is gone; what hitless did shows in the metric, which must settle on exactly 1.
    let series = "hitless_proxy_errors_total{cause=\"client_body_error\"}";
    for _ in 0..100 {
        let page = admin_get(app.admin_addr, "/metrics").await.body;
        if metric(&page, series) == Some(1.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("client_body_error was not counted");
}
