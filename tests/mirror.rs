//! `routes[].mirror`: a copy of each request goes to the mirror backend, body included, and
//! the client never waits for it: a mirror that does not answer costs the client nothing
//! (copies beyond 64 in flight to a mirror backend are dropped, counted; its answers are not
//! held); bodies not held in memory are not copied (counted), and a request left out of the
//! share is not held; a mirror that refuses connections changes no answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::Semaphore;

/// What the mirror received: (method, path, body, its `x-hitless-mirror` mark).
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

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
            let mark = parts
                .headers
                .get("x-hitless-mirror")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            record.lock().unwrap().push((
                parts.method.to_string(),
                path.clone(),
                String::from_utf8_lossy(&body).into_owned(),
                mark,
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
    let mut expected: Vec<(String, String, String, String)> = (0..200)
        .map(|n| {
            if n % 2 == 0 {
                ("GET".into(), format!("/get/{n}"), String::new(), "1".into())
            } else {
                (
                    "POST".into(),
                    format!("/post/{n}"),
                    format!("body {n}"),
                    "1".into(),
                )
            }
        })
        .collect();
    expected.sort();
    assert_eq!(
        copies, expected,
        "each request copied once, with its body, marked"
    );

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
    assert!(!seen.lock().unwrap().iter().any(|(_, p, _, _)| p == "/big"));
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

/// A mirror that serves large answers costs the proxy a buffer per copy, not the answers:
/// 20 copies each get 16 MiB from a mirror that holds the last byte until all 20 are nearly
/// done (an answer held whole would be 20 x 16 MiB resident at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serving_large_answers_costs_no_memory() {
    const COPIES: usize = 20;
    const SIZE: usize = 16 << 20;
    let all_sent = Arc::new(tokio::sync::Barrier::new(COPIES));
    let large = raw_server(move |mut stream| {
        let all_sent = Arc::clone(&all_sent);
        async move {
            use tokio::io::AsyncWriteExt;
            read_head(&mut stream).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let chunk = vec![b'm'; 64 * 1024];
            for _ in 0..SIZE / chunk.len() - 1 {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            all_sent.wait().await;
            let _ = stream.write_all(&chunk).await;
        }
    })
    .await;
    let primary = reading_primary().await;
    let (proxy, admin, (traffic, path)) = spawn_ready(|attempt| {
        let (traffic, admin) = (free_port(), free_port());
        let yaml = format!(
            "listeners:\n  - bind: \"127.0.0.1:{traffic}\"\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\naccess_log: false\n{}",
            config(primary.addr, large.addr)
        );
        let path = std::env::temp_dir().join(format!("hitless-mirror-{traffic}-{attempt}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let args = vec!["run".into(), "--config".into(), path.to_string_lossy().into_owned()];
        let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let traffic: std::net::SocketAddr = format!("127.0.0.1:{traffic}").parse().unwrap();
        (args, admin, (traffic, path))
    })
    .await;
    let c = client();
    assert_eq!(get(&c, traffic, "x", "/warm").await.body, "primary");
    let (_, baseline) = memory_kib(proxy.child.id());
    for n in 1..COPIES {
        let answer = get(&c, traffic, "x", &format!("/{n}")).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "primary"));
    }
    let answered =
        "hitless_mirrored_requests_total{route=\"app\",backend=\"shadow\",result=\"answered\"}";
    wait_metric(admin, answered, COPIES as f64).await;
    let (peak, _) = memory_kib(proxy.child.id());
    let grown_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("{COPIES} mirrored answers of {SIZE} bytes: grown {grown_mib:.1} MiB");
    assert!(
        grown_mib < 64.0,
        "hitless grew by {grown_mib:.1} MiB for {COPIES} mirrored answers of {} MiB",
        SIZE >> 20
    );
    let _ = std::fs::remove_file(&path);
}

/// A request the mirror's share leaves out is not held for a copy: with retries off, its
/// body streams to the backend as it comes (the backend sees the request before the client
/// has sent all of it), as on a route without a mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_copied_streams_its_body() {
    let (head_seen, mut heads) = tokio::sync::mpsc::channel::<()>(4);
    let primary = upstream(move |req: Request<hyper::body::Incoming>| {
        let head_seen = head_seen.clone();
        async move {
            let _ = head_seen.send(()).await;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            http::Response::new(full(format!("{} bytes", body.len())))
        }
    })
    .await;
    let (shadow, seen) = shadow(Arc::new(Semaphore::new(0))).await;
    let yaml = format!(
        "backends:\n  primary: {{endpoints: [\"{}\"]}}\n  shadow: {{endpoints: [\"{}\"]}}\nroutes:\n  - name: app\n    backend: primary\n    retry: {{attempts: 1}}\n    mirror: {{backend: shadow, percent: 0}}\n",
        primary.addr, shadow.addr
    );
    let app = start_proxy(&yaml).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(data)), rx))
    });
    let body = http_body_util::StreamBody::new(frames);
    let request = Request::post(format!("http://{}/upload", app.traffic_addrs[0]))
        .header("content-length", "8")
        .body(http_body_util::combinators::BoxBody::new(body))
        .unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let answer = tokio::spawn(async move { c.request(request).await });
    tx.send(Bytes::from_static(b"half")).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), heads.recv())
        .await
        .expect("the backend saw the request before its whole body")
        .unwrap();
    tx.send(Bytes::from_static(b"rest")).await.unwrap();
    drop(tx);
    let response = answer.await.unwrap().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "8 bytes");
    assert!(seen.lock().unwrap().is_empty(), "nothing copied at 0%");
}
