//! `routes[].mirror`: a copy of each request goes to the mirror backend, body included, and
//! the client never waits for it: a mirror that does not answer costs the client nothing
//! (copies beyond 64 in flight are dropped, counted); bodies not held in memory are not
//! copied (counted); a mirror that refuses connections changes no answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::Semaphore;

/// What the mirror received: (method, path, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A mirror backend that records each request; requests under `/stuck` wait for a permit of
/// `gate` (none until the test adds them).
async fn shadow(gate: Arc<Semaphore>) -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let server = upstream(move |req: Request<hyper::body::Incoming>| {
        let record = Arc::clone(&record);
        let gate = Arc::clone(&gate);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            record.lock().unwrap().push((
                parts.method.to_string(),
                path.clone(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            if path.starts_with("/stuck") {
                let _permit = gate.acquire().await.unwrap();
            }
            http::Response::new(full("shadow"))
        }
    })
    .await;
    (server, seen)
}

/// The primary backend: reads each request's body to the end, as an application does, then
/// answers "primary" (one that answers before reading resets a 200 KiB upload mid-way).
async fn reading_primary() -> Server {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        http::Response::new(full("primary"))
    })
    .await
}

fn config(primary: std::net::SocketAddr, mirror: std::net::SocketAddr) -> String {
    format!(
        "backends:\n  primary: {{endpoints: [\"{primary}\"]}}\n  shadow: {{endpoints: [\"{mirror}\"]}}\nroutes:\n  - name: app\n    backend: primary\n    timeouts: {{backend_request: 30s, request: 30s}}\n    mirror: {{backend: shadow}}\n"
    )
}

async fn post(client: &Client, addr: std::net::SocketAddr, path: &str, body: Bytes) -> Answer {
    let request = Request::post(format!("http://{addr}{path}"))
        .header("host", "shop.example.com")
        .body(full(body))
        .unwrap();
    send(client, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_copied_with_its_body_and_the_client_never_waits() {
    let primary = reading_primary().await;
    let gate = Arc::new(Semaphore::new(0));
    let (mirror, seen) = shadow(Arc::clone(&gate)).await;
    let app = start_proxy(&config(primary.addr, mirror.addr)).await;
    let addr = app.traffic_addrs[0];
    let series = |result: &str| {
        format!(
            "hitless_mirrored_requests_total{{route=\"app\",backend=\"shadow\",result=\"{result}\"}}"
        )
    };

    // 200 requests over 8 connections, HTTP/1.1 and HTTP/2, half of them POSTs with a body.
    let mut tasks = Vec::new();
    for worker in 0..8 {
        tasks.push(tokio::spawn(async move {
            let c = if worker % 2 == 0 {
                client()
            } else {
                h2c_client()
            };
            for i in 0..25 {
                let n = worker * 25 + i;
                let answer = if n % 2 == 0 {
                    get(&c, addr, "shop.example.com", &format!("/get/{n}")).await
                } else {
                    post(
                        &c,
                        addr,
                        &format!("/post/{n}"),
                        Bytes::from(format!("body {n}")),
                    )
                    .await
                };
                assert_eq!((answer.status, answer.body.as_str()), (200, "primary"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_metric(app.admin_addr, &series("answered"), 200.0).await;
    let mut copies = seen.lock().unwrap().clone();
    copies.sort();
    let mut expected: Vec<(String, String, String)> = (0..200)
        .map(|n| {
            if n % 2 == 0 {
                ("GET".into(), format!("/get/{n}"), String::new())
            } else {
                ("POST".into(), format!("/post/{n}"), format!("body {n}"))
            }
        })
        .collect();
    expected.sort();
    assert_eq!(copies, expected, "each request copied once, with its body");

    // A mirror that does not answer: the client's answers come anyway; 64 copies wait, the
    // other 36 are dropped.
    for n in 0..100 {
        let answer = get(&client(), addr, "shop.example.com", &format!("/stuck/{n}")).await;
        assert_eq!(answer.body, "primary");
    }
    assert_eq!(metric_at(app.admin_addr, &series("dropped")).await, 36.0);
    gate.add_permits(64);
    wait_metric(app.admin_addr, &series("answered"), 264.0).await;

    // A body longer than retry.max_replay_bytes (64 KiB) streams to the primary, uncopied.
    let big = Bytes::from(vec![b'x'; 200 * 1024]);
    let answer = post(&client(), addr, "/big", big).await;
    assert_eq!(answer.body, "primary");
    assert_eq!(metric_at(app.admin_addr, &series("skipped")).await, 1.0);
    assert!(!seen.lock().unwrap().iter().any(|(_, p, _)| p == "/big"));
}

#[tokio::test]
async fn a_mirror_that_refuses_changes_no_answer() {
    let primary = named_upstream("primary").await;
    let refused = refused_addr().await;
    let app = start_proxy(&config(primary.addr, refused)).await;
    let addr = app.traffic_addrs[0];
    for n in 0..50 {
        let answer = get(&client(), addr, "shop.example.com", &format!("/{n}")).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "primary"));
    }
    let failed =
        "hitless_mirrored_requests_total{route=\"app\",backend=\"shadow\",result=\"failed\"}";
    wait_metric(app.admin_addr, failed, 50.0).await;
}
