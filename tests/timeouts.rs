//! Client-side limits: idle keep-alive connections are closed after `timeouts.idle`, a
//! request head that trickles in is cut after `timeouts.header_read`, oversized request
//! headers get 431.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
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

/// One request on an open connection, kept alive; the answer's status.
async fn one_request(s: &mut TcpStream, close: bool) -> Vec<u8> {
    let req: &[u8] = if close {
        b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"
    };
    s.write_all(req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    buf.truncate(n);
    buf
}

/// hitless (the binary: it binds its own listeners with the configured backlog) with
/// `limits`, in front of one upstream; its traffic and admin addresses.
async fn hitless_with_limits(
    limits: &str,
    upstream: SocketAddr,
) -> (ChildProxy, SocketAddr, SocketAddr) {
    let traffic: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listeners:\n  - bind: \"{traffic}\"\nadmin: {{bind: \"{admin}\"}}\naccess_log: false\nlimits: {limits}\n{}",
        simple_config(upstream)
    );
    let path = std::env::temp_dir().join(format!("hitless-limits-{}.yaml", traffic.port()));
    std::fs::write(&path, config).unwrap();
    let child = spawn_hitless(&["run", "--config", path.to_str().unwrap()]);
    wait_ready(admin).await;
    (child, traffic, admin)
}

#[tokio::test]
async fn max_connections_queues_the_next_client_until_one_closes() {
    let server = named_upstream("a").await;
    let (_proxy, traffic, admin) = hitless_with_limits("{max_connections: 3}", server.addr).await;
    assert_eq!(metric_at(admin, "hitless_max_connections").await, 3.0);

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(traffic).await.unwrap();
        assert!(one_request(&mut s, false)
            .await
            .starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // The fourth connects (the kernel queues it) but is not served while three are open.
    let mut fourth = TcpStream::connect(traffic).await.unwrap();
    fourth
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    wait_metric(admin, "hitless_connection_limit_reached_total", 1.0).await;
    let mut buf = [0u8; 64];
    if let Ok(read) = tokio::time::timeout(Duration::from_millis(300), fourth.read(&mut buf)).await
    {
        panic!(
            "a connection beyond limits.max_connections was served: {read:?} {}",
            String::from_utf8_lossy(&buf)
        );
    }
    // One closes: the fourth is accepted and answered, nothing lost.
    drop(held.pop());
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fourth.read_to_end(&mut out))
        .await
        .expect("the queued connection was never served")
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        metric_at(admin, "hitless_downstream_connections_open").await,
        2.0,
        "two held, the fourth answered and closed"
    );
}

#[tokio::test]
async fn a_connection_burst_waits_in_the_listen_backlog_and_is_served() {
    // One connection at a time is served, so every other connect of the burst must be
    // held by the kernel: with the old default backlog (128) the handshakes beyond it
    // never complete while the first connection stays open.
    const BURST: usize = 400;
    let server = named_upstream("a").await;
    let (_proxy, traffic, admin) =
        hitless_with_limits("{max_connections: 1, listen_backlog: 1000}", server.addr).await;
    let mut first = TcpStream::connect(traffic).await.unwrap();
    assert!(one_request(&mut first, false)
        .await
        .starts_with(b"HTTP/1.1 200"));

    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        connects.spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(traffic)).await
        });
    }
    let mut queued = Vec::new();
    while let Some(done) = connects.join_next().await {
        match done.unwrap() {
            Ok(Ok(s)) => queued.push(s),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => panic!(
                "{} of {BURST} connects completed; the rest were dropped by a full listen queue",
                queued.len()
            ),
        }
    }
    // Every queued client sends its request now; they are served one after another, in the
    // order the kernel queued them, as the one before closes.
    for s in &mut queued {
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
    }
    drop(first);
    let mut answered = 0;
    for mut s in queued {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("a queued connection was never served")
            .unwrap();
        if out.starts_with(b"HTTP/1.1 200") {
            answered += 1;
        }
    }
    assert_eq!(answered, BURST);
    assert_eq!(metric_at(admin, "hitless_accept_errors_total").await, 0.0);
}
