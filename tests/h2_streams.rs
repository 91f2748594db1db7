//! HTTP/2 clients to HTTP/1.1 (`http`) backends: hyper's engine reads the streams and the raw
//! transport (`proxy/stream.rs`) carries each request on a pooled raw connection, its
//! response body read as frames (`upstream/raw_body.rs`). What a client sees must be what
//! the backend said: every framing (length, chunked with trailers, until the close, none),
//! large bodies under flow control, a body cut short as a reset stream (never a clean end),
//! and connections reused, or retried when the backend closed them, at load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client got: status, headers, the body's bytes (or the error that ended it) and
/// the trailers.
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Result<Bytes, String>,
    trailers: Option<http::HeaderMap>,
}

async fn fetch(client: &Client, request: Request<Body>) -> Got {
    let response = client.request(request).await.expect("request failed");
    let (head, body) = response.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (Ok(collected.to_bytes()), trailers)
        }
        Err(e) => (Err(e.to_string()), None),
    };
    Got {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
        trailers,
    }
}

fn get_of(addr: SocketAddr, path: &str) -> Request<Body> {
    Request::get(format!("http://{addr}{path}"))
        .body(full(""))
        .unwrap()
}

/// A backend that answers each request on a connection with `answer(path)`, as raw bytes,
/// keeping the connection while `answer` says so.
async fn scripted_keepalive(answer: fn(&str) -> (Vec<u8>, bool)) -> Server {
    raw_server(move |mut stream| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            let line = String::from_utf8_lossy(&head).into_owned();
            let path = line.split(' ').nth(1).unwrap_or("/").to_string();
            let (bytes, keep) = answer(&path);
            if stream.write_all(&bytes).await.is_err() || !keep {
                let _ = stream.shutdown().await;
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn http2_requests_arrive_as_http1_on_one_reused_connection() {
    // Echoes the request line, the headers the backend saw and the body.
    let backend = upstream(|req: Request<Incoming>| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for name in [
            "host",
            "content-length",
            "x-forwarded-proto",
            "te",
            "connection",
        ] {
            if let Some(v) = req.headers().get(name) {
                text.push_str(&format!("{name}: {}\n", v.to_str().unwrap()));
            }
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        text.push_str(&format!("body: {}", String::from_utf8_lossy(&body)));
        Response::builder()
            .header("x-answer", "yes")
            .body(full(text))
            .unwrap()
    })
    .await;
    let app = start_proxy(&simple_config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let c = h2c_client();
    for i in 0..30 {
        let got = fetch(&c, get_of(proxy, &format!("/get/{i}?q=1"))).await;
        assert_eq!(got.status, 200);
        let body = String::from_utf8(got.body.unwrap().to_vec()).unwrap();
        assert!(
            body.starts_with(&format!("GET /get/{i}?q=1 HTTP/1.1\nhost: {proxy}\n")),
            "{body}"
        );
        assert!(
            !body.contains("content-length"),
            "a GET without a body has no length: {body}"
        );
        assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
        assert!(body.ends_with("body: "), "{body}");
        assert_eq!(got.headers["x-answer"], "yes");
        assert!(!got.headers["x-request-id"].is_empty());

        let post = Request::post(format!("http://{proxy}/post"))
            .body(full(format!("payload-{i}")))
            .unwrap();
        let got = fetch(&c, post).await;
        let body = String::from_utf8(got.body.unwrap().to_vec()).unwrap();
        let length = format!("payload-{i}").len();
        assert!(body.starts_with("POST /post HTTP/1.1\n"), "{body}");
        assert!(
            body.contains(&format!("content-length: {length}\n")),
            "{body}"
        );
        assert!(body.ends_with(&format!("body: payload-{i}")), "{body}");

        let head = Request::head(format!("http://{proxy}/head"))
            .body(full(""))
            .unwrap();
        let got = fetch(&c, head).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.unwrap().len(), 0, "no body for HEAD");
    }
    // One request at a time: one upstream connection carried all 90.
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn every_response_framing_reaches_http2_clients_as_sent() {
    let backend = scripted_keepalive(|path| match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"a b\"\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n"
                .to_vec(),
            true,
        ),
        "/chunked-hop" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nconnection: x\r\nx-ok: 1\r\n\r\n"
                .to_vec(),
            true,
        ),
        "/chunked-plain" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            true,
        ),
        "/empty" => (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(), true),
        "/interim" => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                .to_vec(),
            true,
        ),
        "/close" => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
            bytes.extend((0..100_000u32).map(|i| b'a' + (i % 26) as u8));
            (bytes, false)
        }
        _ => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope".to_vec(), true),
    })
    .await;
    let app = start_proxy(&simple_config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let c = h2c_client();

    let got = fetch(&c, get_of(proxy, "/chunked")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.unwrap(), "hello world");
    assert!(got.headers.get("transfer-encoding").is_none());
    let trailers = got.trailers.expect("the backend's trailers");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(trailers["x-more"], "1");

    let got = fetch(&c, get_of(proxy, "/chunked-plain")).await;
    assert_eq!(got.body.unwrap(), "abc");
    assert!(got.trailers.is_none());

    // A connection-specific trailer is not HTTP/2's: left out, the others kept.
    let got = fetch(&c, get_of(proxy, "/chunked-hop")).await;
    assert_eq!(got.body.unwrap(), "hi");
    let trailers = got.trailers.expect("the backend's other trailer");
    assert_eq!(trailers["x-ok"], "1");
    assert!(trailers.get("connection").is_none());

    let got = fetch(&c, get_of(proxy, "/empty")).await;
    assert_eq!(got.status, 204);
    assert_eq!(got.body.unwrap().len(), 0);

    let got = fetch(&c, get_of(proxy, "/interim")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.unwrap(), "ok");

    let got = fetch(&c, get_of(proxy, "/missing")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.body.unwrap(), "nope");

    // Keep-alive so far: one connection for the six answers above.
    assert_eq!(backend.connections(), 1);

    let got = fetch(&c, get_of(proxy, "/close")).await;
    assert_eq!(got.status, 200);
    let body = got.body.unwrap();
    assert_eq!(
        body.len(),
        100_000,
        "a body delimited by the close arrives whole"
    );
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == b'a' + (i % 26) as u8));

    // The closed connection is not reused: the next answer comes on a new one.
    let got = fetch(&c, get_of(proxy, "/chunked-plain")).await;
    assert_eq!(got.body.unwrap(), "abc");
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_a_reset_stream_never_a_clean_end() {
    let backend = scripted_keepalive(|path| match path {
        // Announces 100 bytes, sends 10, closes.
        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec(), false),
        // A chunk size that is not hex.
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nxx\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        // The chunked body's last chunk never comes.
        "/unfinished" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
            false,
        ),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true),
    })
    .await;
    let app = start_proxy(&simple_config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let c = h2c_client();
    for path in ["/short", "/bad-chunk", "/unfinished"] {
        // The stream is reset: before the head when the cut is found in the same turn (the
        // head was queued, not sent), else during the body. Never a complete answer.
        match c.request(get_of(proxy, path)).await {
            Err(e) => assert!(format!("{e:?}").contains("Reset"), "{path}: {e:?}"),
            Ok(response) => {
                let body = response.into_body().collect().await;
                assert!(body.is_err(), "{path}: the client must see the cut");
            }
        }
        // The same client connection goes on serving.
        let got = fetch(&c, get_of(proxy, "/ok")).await;
        assert_eq!(got.body.unwrap(), "ok", "{path}");
    }
}

#[tokio::test]
async fn large_bodies_both_ways_stream_under_flow_control() {
    const SIZE: usize = 4 << 20;
    fn byte(i: usize) -> u8 {
        (i % 251) as u8
    }
    // A length-delimited answer of SIZE bytes, a chunked one (streamed in 16 KiB frames), and
    // an echo of what was posted.
    let backend = upstream(|req: Request<Incoming>| async move {
        match req.uri().path() {
            "/length" => {
                let data: Vec<u8> = (0..SIZE).map(byte).collect();
                Response::new(full(data))
            }
            "/chunked" => {
                let frames = (0..SIZE / 16384).map(|n| {
                    let data: Vec<u8> = (n * 16384..(n + 1) * 16384).map(byte).collect();
                    Ok::<_, hyper::Error>(Frame::data(Bytes::from(data)))
                });
                let body = StreamBody::new(futures_util::stream::iter(frames));
                Response::new(BodyExt::boxed(body))
            }
            _ => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Response::new(full(body))
            }
        }
    })
    .await;
    let app = start_proxy(&simple_config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let c = h2c_client();
    for path in ["/length", "/chunked"] {
        let got = fetch(&c, get_of(proxy, path)).await;
        let body = got.body.unwrap();
        assert_eq!(body.len(), SIZE, "{path}");
        assert!(
            body.iter().enumerate().all(|(i, &b)| b == byte(i)),
            "{path}"
        );
    }
    // A body over retry.max_replay_bytes streams through hyper's transport; one under it is
    // held and goes on the raw one: both arrive whole.
    for size in [60_000, 300_000] {
        let data: Vec<u8> = (0..size).map(byte).collect();
        let post = Request::post(format!("http://{proxy}/echo"))
            .body(full(data.clone()))
            .unwrap();
        let got = fetch(&c, post).await;
        assert_eq!(got.body.unwrap(), data, "{size}");
    }
}

/// A backend that closes each connection right after its first answer, without saying so:
/// every pooled connection is stale by the time it is used again.
async fn one_answer_per_connection() -> Server {
    raw_server(|mut stream: TcpStream| async move {
        let head = read_head(&mut stream).await;
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if let Some(n) = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            let mut body = vec![0; n];
            let _ = stream.read_exact(&mut body).await;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        // Close right away: the answer said keep-alive, so the proxy pools the connection.
        drop(stream);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_cost_no_request_at_load() {
    let backend = one_answer_per_connection().await;
    let app = start_proxy(&simple_config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    // 4 HTTP/2 connections x 10 concurrent streams, 2,000 requests, half of them POSTs (not
    // idempotent: a POST is re-sent only when the connection proves it unread).
    let clients: Vec<Client> = (0..4).map(|_| h2c_client()).collect();
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for stream in 0..40 {
        let c = clients[stream % 4].clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for i in 0..50 {
                let request = if i % 2 == 0 {
                    get_of(proxy, "/g")
                } else {
                    Request::post(format!("http://{proxy}/p"))
                        .body(full("x=1"))
                        .unwrap()
                };
                let got = tokio::time::timeout(Duration::from_secs(10), fetch(&c, request))
                    .await
                    .expect("an answer within 10 s");
                if got.status != 200 || got.body.as_deref().ok() != Some(&b"ok"[..]) {
                    failed.push((got.status, got.headers.get("proxy-status").cloned()));
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    assert!(
        failed.is_empty(),
        "{} of 2000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // Each answer closed its connection: about one connection per request (and the stale
    // ones were retried on fresh ones, not answered with 502s).
    assert!(backend.connections() >= 2000, "{}", backend.connections());
    eprintln!("2000 requests in {elapsed:?}");
}

#[tokio::test]
async fn an_early_answer_to_a_large_body_is_passed_on_at_once() {
    // Reads the head only, answers 413 and keeps the connection open without reading the
    // body (as an app with a body limit does).
    let backend = raw_server(|mut stream: TcpStream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let config = format!(
        "retry: {{max_replay_bytes: 16777216}}\ntimeouts: {{backend_request: 5s}}\nbackends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - backend: app\n",
        backend.addr
    );
    let app = start_proxy(&config).await;
    let proxy = app.traffic_addrs[0];
    let c = h2c_client();
    let post = Request::post(format!("http://{proxy}/upload"))
        .body(full(vec![b'x'; 8 << 20]))
        .unwrap();
    let start = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(4), c.request(post))
        .await
        .expect("the 413 must not wait for the try's timeout")
        .expect("an answer");
    assert_eq!(response.status(), 413);
    eprintln!("413 after {:?}", start.elapsed());
}
