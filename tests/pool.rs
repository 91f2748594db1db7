//! Upstream connection pooling: connections are reused, idle ones are closed before the
//! configured idle timeout lets them meet an upstream's own close, and load is spread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let server = named_upstream("a").await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, app.traffic_addrs[0], "x", "/").await.status, 200);
    }
    assert_eq!(server.connections(), 1);
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_upstream_connections_opened_total{backend=\"app\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&page, "hitless_upstream_connections_idle{backend=\"app\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn idle_connection_is_not_reused_past_pool_idle_timeout() {
    let server = named_upstream("a").await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\"]\n    pool: {{idle_timeout: 200ms}}\nroutes:\n  - backend: app\n",
        server.addr
    );
    let app = start_proxy(&config).await;
    let c = client();
    assert_eq!(get(&c, app.traffic_addrs[0], "x", "/").await.status, 200);
    // Wait well past the idle timeout; the reaper also closes it in the background.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(&page, "hitless_upstream_connections_idle{backend=\"app\"}"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(get(&c, app.traffic_addrs[0], "x", "/").await.status, 200);
    assert_eq!(server.connections(), 2);
}

/// Keep-alive shorter than the upstream's: the app closes idle connections after 2 s
/// (gunicorn's default). With hitless's default pool idle timeout (1.5 s) it is hitless that
/// closes the idle connection, before the app does, so no request can be written into a
/// connection at the moment the app closes it.
#[tokio::test]
async fn pool_closes_idle_connections_before_a_2s_upstream_does() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let closed_by_proxy = Arc::new(AtomicUsize::new(0));
    let closed_by_app = Arc::new(AtomicUsize::new(0));
    let (by_proxy, by_app) = (Arc::clone(&closed_by_proxy), Arc::clone(&closed_by_app));
    let server = raw_server(move |mut stream| {
        let (by_proxy, by_app) = (Arc::clone(&by_proxy), Arc::clone(&by_app));
        async move {
            use tokio::io::AsyncWriteExt;
            loop {
                if read_head(&mut stream).await.is_empty() {
                    by_proxy.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let mut probe = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(2), stream.peek(&mut probe)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    Ok(_) => {
                        by_proxy.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => {
                        by_app.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    })
    .await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200);
    // Bounded wait for the connection to end one way or the other.
    for _ in 0..60 {
        if closed_by_proxy.load(Ordering::SeqCst) + closed_by_app.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed_by_proxy.load(Ordering::SeqCst), 1);
    assert_eq!(closed_by_app.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn round_robin_alternates_endpoints() {
    let a = named_upstream("a").await;
    let b = named_upstream("b").await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\", \"{}\"]\n    balance: round_robin\nroutes:\n  - backend: app\n",
        a.addr, b.addr
    );
    let app = start_proxy(&config).await;
    let c = client();
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push(get(&c, app.traffic_addrs[0], "x", "/").await.body);
    }
    assert_eq!(bodies, ["a", "b", "a", "b", "a", "b"]);
}

#[tokio::test]
async fn p2c_prefers_the_endpoint_with_fewer_outstanding_requests() {
    // One endpoint holds every request for 300 ms, the other answers at once. With requests
    // in flight on the slow one, P2C sends the rest to the fast one.
    let slow = upstream(|_req| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        http::Response::new(full("slow"))
    })
    .await;
    let fast = named_upstream("fast").await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\", \"{}\"]\nroutes:\n  - backend: app\n",
        slow.addr, fast.addr
    );
    let app = start_proxy(&config).await;
    let addr = app.traffic_addrs[0];
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(tokio::spawn(async move {
            get(&client(), addr, "x", "/").await.body
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut slow_count = 0;
    for t in tasks {
        if t.await.unwrap() == "slow" {
            slow_count += 1;
        }
    }
    // Round-robin would send 20 to the slow endpoint; P2C sends it only a few.
    assert!(slow_count <= 10, "slow endpoint got {slow_count} of 40");
}

/// An upstream that announces `Keep-Alive: timeout=1`: hitless keeps its connections idle
/// at most 750 ms from then on, whatever the configured pool idle timeout.
#[tokio::test]
async fn announced_keepalive_timeout_lowers_the_pool_idle_timeout() {
    let server = upstream(|_req| async move {
        let mut r = http::Response::new(full("a"));
        r.headers_mut().insert(
            "keep-alive",
            http::HeaderValue::from_static("timeout=1, max=100"),
        );
        r
    })
    .await;
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\"]\n    pool: {{idle_timeout: 30s}}\nroutes:\n  - backend: app\n",
        server.addr
    );
    let app = start_proxy(&config).await;
    let c = client();
    let first = get(&c, app.traffic_addrs[0], "x", "/").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("keep-alive"),
        "",
        "hop-by-hop: not passed to the client"
    );
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let learned = format!(
        "hitless_upstream_keepalive_learned_seconds{{backend=\"app\",endpoint=\"{}\"}}",
        server.addr
    );
    assert_eq!(metric(&page, &learned), Some(0.75), "{page}");
    // Idle past 750 ms (but well within the configured 30 s): not reused.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get(&c, app.traffic_addrs[0], "x", "/").await.status, 200);
    assert_eq!(server.connections(), 2);
}
