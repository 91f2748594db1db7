//! Client-side limits: idle keep-alive connections are closed after `timeouts.idle`, a
//! request head that trickles in is cut after `timeouts.header_read`, oversized request
//! headers get 431.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_client_connection_is_closed_after_idle_timeout() {
    let server = named_upstream("a").await;
    let config = format!(
        "timeouts: {{idle: 400ms, header_read: 5s}}\n{}",
        simple_config(server.addr)
    );
    let app = start_proxy(&config).await;
    let mut s = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let out = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("connection was not closed");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn connection_in_use_is_not_idle() {
    // A request that takes longer than the idle timeout completes.
    let server = upstream(|_req| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        http::Response::new(full("slow but fine"))
    })
    .await;
    let config = format!(
        "timeouts: {{idle: 300ms, header_read: 5s}}\n{}",
        simple_config(server.addr)
    );
    let app = start_proxy(&config).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "slow but fine");
}

#[tokio::test]
async fn trickling_request_head_is_cut_after_header_read() {
    let server = named_upstream("a").await;
    let config = format!(
        "timeouts: {{idle: 60s, header_read: 400ms}}\n{}",
        simple_config(server.addr)
    );
    let app = start_proxy(&config).await;
    let mut s = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("slow head was not cut");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // An idle connection that sent nothing is governed by `idle` (60 s), not `header_read`.
    let mut quiet = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    assert!(read_until_closed(&mut quiet, Duration::from_millis(1200))
        .await
        .is_none());
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let server = named_upstream("a").await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let mut s = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    let big = "x".repeat(100 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n");
    let _ = s.write_all(request.as_bytes()).await;
    let out = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(server.connections(), 0);
    // Headers under the limit pass.
    let ok = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(ok.status, 200);
}
