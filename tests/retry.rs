//! Retries to the next endpoint: connect failures never reach the client while another endpoint
//! answers; a reset or a 503 is retried for idempotent requests only; the retry budget caps the
//! extra load when everything is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::Request;
use support::*;

fn two_endpoints(a: std::net::SocketAddr, b: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "backends:\n  app:\n    endpoints: [\"{a}\", \"{b}\"]\n    balance: round_robin\n{extra}routes:\n  - backend: app\n"
    )
}

#[tokio::test]
async fn connect_failure_goes_to_the_next_endpoint_for_any_method() {
    let dead = refused_addr().await;
    let good = named_upstream("good").await;
    // Round-robin would send every other first try to the dead endpoint; its first refusal
    // takes it out of rotation (a certainty, not a guess: no ejection needed).
    let app = start_proxy(&two_endpoints(dead, good.addr, "")).await;
    let c = client();
    for i in 0..20 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}/", app.traffic_addrs[0]))
            .body(full("payload"))
            .unwrap();
        let answer = send(&c, request).await;
        assert_eq!(answer.status, 200, "{method}: {}", answer.body);
        assert_eq!(answer.body, "good");
    }
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_proxy_errors_total{cause=\"connect_refused\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &page,
            "hitless_backend_endpoints_unreachable{backend=\"app\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "hitless_outlier_ejections_total{backend=\"app\"}"),
        Some(0.0),
        "{page}"
    );
    // Only the first try met the dead endpoint.
    assert_eq!(
        metric(
            &page,
            "hitless_retries_total{backend=\"app\",reason=\"connect_refused\"}"
        ),
        Some(1.0),
        "{page}"
    );
}

/// An upstream that reads each request whole (one read, as servers do), counts it, then
/// closes the connection without answering: it died after reading (a FIN, not an RST).
async fn counting_dropper() -> (Server, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let server = raw_server(move |mut stream| {
        let counter = Arc::clone(&counter);
        async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = Vec::new();
            // Until the head and its Content-Length body are in.
            loop {
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (server, seen)
}

#[tokio::test]
async fn a_request_read_then_dropped_is_retried_for_get_but_a_post_is_not_sent_twice() {
    let (resetter, seen) = counting_dropper().await;
    let good = named_upstream("good").await;
    let app = start_proxy(&two_endpoints(resetter.addr, good.addr, "")).await;
    let c = client();
    // Round-robin: the first try of each request goes to the resetting endpoint.
    let answer = get(&c, app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "good");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let post = Request::post(format!("http://{}/orders", app.traffic_addrs[0]))
        .body(full("{\"item\": 1}"))
        .unwrap();
    let answer = send(&c, post).await;
    assert_eq!(answer.status, 502);
    assert!(answer.header("proxy-status").contains("upstream_reset"));
    // The application read the POST once; hitless did not send it anywhere else.
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(
        good.connections(),
        1,
        "the POST must not reach the second endpoint"
    );

    // With an Idempotency-Key the client declares it safe: retried.
    let keyed = Request::post(format!("http://{}/orders", app.traffic_addrs[0]))
        .header("idempotency-key", "k-1")
        .body(full(""))
        .unwrap();
    assert_eq!(send(&c, keyed).await.status, 200);
}

#[tokio::test]
async fn a_503_answer_is_retried_elsewhere_for_get() {
    let busy = upstream(|_req| async move {
        let mut r = http::Response::new(full("busy"));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let good = named_upstream("good").await;
    let app = start_proxy(&two_endpoints(busy.addr, good.addr, "")).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "good");
}

#[tokio::test]
async fn attempts_1_disables_retries() {
    let dead = refused_addr().await;
    let good = named_upstream("good").await;
    let config = format!(
        "retry: {{attempts: 1}}\n{}",
        two_endpoints(dead, good.addr, "")
    );
    let app = start_proxy(&config).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 502);
    assert!(answer.header("proxy-status").contains("connect_refused"));
}

#[tokio::test]
async fn retry_budget_caps_extra_load_when_everything_is_down() {
    let (a, seen_a) = counting_dropper().await;
    let (b, seen_b) = counting_dropper().await;
    let budget = "    retry_budget: {ratio: 0.2, min_per_second: 0}\n";
    let app = start_proxy(&two_endpoints(a.addr, b.addr, budget)).await;
    let c = client();
    for _ in 0..50 {
        let answer = get(&c, app.traffic_addrs[0], "x", "/").await;
        assert_eq!(answer.status, 502);
    }
    let reached = seen_a.load(Ordering::SeqCst) + seen_b.load(Ordering::SeqCst);
    // 50 first attempts + 20% of 50 in retries, exactly: not 150 (3 attempts each).
    assert_eq!(reached, 60);
}

/// An upstream that answers 503 to everything, counting the bodies it received.
async fn busy_upstream() -> Server {
    upstream(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let _ = req.into_body().collect().await;
        let mut r = http::Response::new(full("busy"));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await
}

/// An upstream that answers with the request body it received.
async fn body_echo() -> Server {
    upstream(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        http::Response::new(full(body))
    })
    .await
}

fn put(addr: std::net::SocketAddr, body: &'static str) -> Request<Body> {
    Request::put(format!("http://{addr}/doc"))
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn put_body_is_kept_and_replayed_to_the_next_endpoint_after_a_503() {
    let busy = busy_upstream().await;
    let good = body_echo().await;
    let app = start_proxy(&two_endpoints(busy.addr, good.addr, "")).await;
    let answer = send(&client(), put(app.traffic_addrs[0], "the document")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "the document", "the whole body, sent again");
}

#[tokio::test]
async fn body_beyond_max_replay_bytes_streams_and_is_not_replayed() {
    let busy = busy_upstream().await;
    let good = body_echo().await;
    let config = format!(
        "retry: {{max_replay_bytes: 8}}\n{}",
        two_endpoints(busy.addr, good.addr, "")
    );
    let app = start_proxy(&config).await;
    let answer = send(&client(), put(app.traffic_addrs[0], "longer than eight")).await;
    assert_eq!(
        answer.status, 503,
        "the app's answer passes: {}",
        answer.body
    );
    assert_eq!(answer.body, "busy");
}

#[tokio::test]
async fn post_is_not_retried_after_a_503() {
    let busy = busy_upstream().await;
    let good = body_echo().await;
    let app = start_proxy(&two_endpoints(busy.addr, good.addr, "")).await;
    let post = Request::post(format!("http://{}/orders", app.traffic_addrs[0]))
        .body(full("order=1"))
        .unwrap();
    let answer = send(&client(), post).await;
    assert_eq!(answer.status, 503);
    assert_eq!(good.connections(), 0, "never sent to the other endpoint");
}

/// An upstream that keeps its connections and answers each GET whole; to a POST, once read
/// whole (counted), it writes the start of an answer and resets the connection (it crashed
/// while answering).
async fn crashing_mid_answer() -> (Server, Arc<AtomicUsize>) {
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&posts);
    let server = raw_server(move |mut stream| {
        let counter = Arc::clone(&counter);
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut got = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                // One request: its head and its Content-Length body.
                let (end, length) = loop {
                    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + length {
                            break (end, length);
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let post = got.starts_with(b"POST");
                got.drain(..end + 4 + length);
                if post {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-len").await;
                    let _ =
                        socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
                    return;
                }
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    (server, posts)
}

/// A POST whose answer had begun when the connection was reset was read by the application:
/// it is not sent again, on a reused connection too (where a reset with nothing back proves
/// the opposite), by both engines.
#[tokio::test]
async fn a_post_whose_answer_had_begun_is_not_sent_again() {
    for engine in ["", "runtime: {direct_path: false}\n"] {
        let (a, posts_a) = crashing_mid_answer().await;
        let (b, posts_b) = crashing_mid_answer().await;
        let app = start_proxy(&format!("{engine}{}", two_endpoints(a.addr, b.addr, ""))).await;
        let c = client();
        // One GET to each endpoint: each keeps a pooled connection.
        for _ in 0..2 {
            let answer = get(&c, app.traffic_addrs[0], "x", "/").await;
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (200, "ok"),
                "{engine}"
            );
        }
        let post = Request::post(format!("http://{}/orders", app.traffic_addrs[0]))
            .body(full("{\"item\": 1}"))
            .unwrap();
        let answer = send(&c, post).await;
        assert_eq!(answer.status, 502, "{engine}: {}", answer.body);
        let sent = posts_a.load(Ordering::SeqCst) + posts_b.load(Ordering::SeqCst);
        assert_eq!(
            sent, 1,
            "{engine}: the POST reached the applications {sent} times"
        );
        assert_eq!(
            a.connections() + b.connections(),
            2,
            "{engine}: pooled connections"
        );
    }
}
