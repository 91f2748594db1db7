//! h2c and gRPC backends: HTTP/2 prior knowledge to the backend, one multiplexed connection
//! per endpoint, request and response trailers passed end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpListener;

/// An HTTP/2-only backend: answers with the protocol version it saw and the request body,
/// then a `grpc-status: 0` trailer.
async fn h2c_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let version = format!("{:?} ", req.version());
                    let body = req.into_body().collect().await.map(|c| c.to_bytes());
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from(version))),
                        Ok(Frame::data(body.unwrap_or_default())),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures_util::stream::iter(frames));
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, conns)
}

fn h2c_config(addr: SocketAddr, protocol: &str) -> String {
    format!("backends:\n  app: {{protocol: {protocol}, endpoints: [\"{addr}\"]}}\nroutes:\n  - backend: app\n")
}

#[tokio::test]
async fn http1_clients_reach_an_h2c_backend_over_one_connection() {
    let (backend, conns) = h2c_backend().await;
    let app = start_proxy(&h2c_config(backend, "h2c")).await;
    let c = client();
    let target = app.traffic_addrs[0];
    let answers: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let request = Request::post(format!("http://{target}/echo"))
                    .body(full(format!("n{i}")))
                    .unwrap();
                send(&c, request).await
            })
        })
        .collect();
    for (i, a) in answers.into_iter().enumerate() {
        let answer = a.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("HTTP/2.0 n{i}"));
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "streams multiplexed on one connection"
    );
}

#[tokio::test]
async fn grpc_trailers_pass_end_to_end() {
    let (backend, _) = h2c_backend().await;
    let app = start_proxy(&h2c_config(backend, "grpc")).await;
    let request = Request::post(format!("http://{}/pkg.Svc/Call", app.traffic_addrs[0]))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let response = h2c_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert!(collected.to_bytes().starts_with(b"HTTP/2.0"));
}

#[tokio::test]
async fn unknown_or_tls_protocols_are_config_errors_with_their_path() {
    let load = |protocol| {
        hitless::config::Config::from_yaml(&h2c_config("127.0.0.1:1".parse().unwrap(), protocol))
            .unwrap_err()
            .to_string()
    };
    let e = load("spdy");
    assert!(
        e.contains("backends.app.protocol: expected one of http, h2c, grpc, https, grpcs"),
        "{e}"
    );
    // Without a CA file, an https backend is verified against the public web roots.
    let c =
        hitless::config::Config::from_yaml(&h2c_config("127.0.0.1:1".parse().unwrap(), "https"));
    assert!(c.is_ok(), "{:?}", c.err().map(|e| e.to_string()));
}

#[tokio::test]
async fn grpc_timeout_is_the_deadline_and_the_answer_is_deadline_exceeded() {
    let silent = silent_upstream().await;
    let app = start_proxy(&simple_config(silent.addr)).await;
    let request = Request::post(format!("http://{}/pkg.Svc/Slow", app.traffic_addrs[0]))
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "200m")
        .body(full(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let started = std::time::Instant::now();
    let answer = send(&client(), request).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "gRPC errors are trailers-only answers");
    assert_eq!(answer.header("grpc-status"), "4", "DEADLINE_EXCEEDED");
    assert!(answer.header("grpc-message").contains("request_timeout"));
    assert!(took >= std::time::Duration::from_millis(190), "{took:?}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

async fn mismatch(config: String, speaks: &str, fix: &str) {
    let app = start_proxy(&config).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    let ps = answer.header("proxy-status").to_string();
    assert!(ps.contains("error=http_protocol_error"), "{ps}");
    assert!(ps.contains("protocol_mismatch"), "{ps}");
    assert!(
        ps.contains(&format!(
            "the backend speaks {speaks}; set the backend's {fix}"
        )),
        "{ps}"
    );
}

#[tokio::test]
async fn an_http_backend_that_speaks_tls_is_a_named_mismatch() {
    // What a TLS server answers to a plaintext request: an alert record.
    let tls = scripted_upstream(b"\x15\x03\x01\x00\x02\x02\x46").await;
    mismatch(simple_config(tls.addr), "TLS", "protocol: https").await;
}

#[tokio::test]
async fn an_http_backend_that_speaks_only_http2_is_a_named_mismatch() {
    let (h2_only, _) = h2c_backend().await;
    mismatch(simple_config(h2_only), "HTTP/2 only", "protocol: h2c").await;
}

#[tokio::test]
async fn an_h2c_backend_that_speaks_http1_is_a_named_mismatch() {
    // nginx, Node and most HTTP/1.1 servers answer the HTTP/2 preface with a 400...
    let answers = raw_server(|mut stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Read what the client sends (preface and SETTINGS) before answering, as nginx does.
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), stream.read(&mut buf))
            .await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
    })
    .await;
    mismatch(
        h2c_config(answers.addr, "h2c"),
        "HTTP/1.1",
        "protocol: http",
    )
    .await;
    // ...hyper's just closes the connection, without a byte.
    let closes = named_upstream("h1").await;
    mismatch(
        h2c_config(closes.addr, "grpc"),
        "no HTTP/2 (it closed the connection on the HTTP/2 preface without a byte)",
        "protocol: http",
    )
    .await;
}

/// An HTTP/2 backend answering every call with a trailers-only UNAVAILABLE.
async fn unavailable_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async move {
                    let mut r = Response::new(http_body_util::Empty::<Bytes>::new());
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    r.headers_mut()
                        .insert("grpc-status", HeaderValue::from_static("14"));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_unavailable_is_retried_on_another_endpoint_for_idempotent_routes() {
    let down = unavailable_backend().await;
    let (up, _) = h2c_backend().await;
    let config = format!(
        "backends:\n  app: {{protocol: grpc, balance: round_robin, endpoints: [\"{down}\", \"{up}\"]}}\nroutes:\n  - {{backend: app, retry: {{idempotent: true}}}}\n"
    );
    let app = start_proxy(&config).await;
    for _ in 0..4 {
        let request = Request::post(format!("http://{}/pkg.Svc/Get", app.traffic_addrs[0]))
            .header("content-type", "application/grpc")
            .body(full(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let response = h2c_client().request(request).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected
            .trailers()
            .cloned()
            .expect("trailers from the healthy endpoint");
        assert_eq!(trailers["grpc-status"], "0");
    }
}

/// Bidirectional streaming (what gRPC client-, server- and bidi-streaming calls are on the
/// wire): each message goes through hitless and comes back before the next one is sent, so
/// nothing is buffered in either direction.
#[tokio::test]
async fn bidirectional_streams_are_not_buffered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Echo the request body as the response body, frame by frame.
                let service = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(req.into_body()))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let app = start_proxy(&h2c_config(backend, "grpc")).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(rx));
    let request = Request::post(format!("http://{}/chat.Chat/Talk", app.traffic_addrs[0]))
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(app.traffic_addrs[0])
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let mut echoes = response.into_body();
    for i in 0..5 {
        let message = Bytes::from(format!("message {i}"));
        tx.send(Ok(Frame::data(message.clone()))).await.unwrap();
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), echoes.frame())
            .await
            .expect("echo arrives before the next message is sent")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), message);
    }
}

/// An mpsc receiver as a `Stream` (without tokio-stream).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
