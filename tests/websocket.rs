//! HTTP/1.1 Upgrade through hitless: a real WebSocket echo server (tokio-tungstenite) and a
//! real WebSocket client; text, binary, a 1 MiB message, the close handshake, the tunnel
//! metrics, and a refused upgrade passed through as an ordinary answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn connect(proxy: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{proxy}/chat"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    ws
}

#[tokio::test]
async fn websocket_text_binary_and_large_messages_pass_both_ways() {
    let (echo, _task) = ws_echo().await;
    let app = start_proxy(&simple_config(echo)).await;
    let mut ws = connect(app.traffic_addrs[0]).await;

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB echoed intact"),
        other => panic!("expected binary, got {other:?}"),
    }
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(metric(&page, "hitless_tunnels_open"), Some(1.0), "{page}");

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // Half-closes are passed on: the tunnel ends when the client's side closes too.
    drop(ws);
    // The tunnel ends with the connection, and its bytes are counted.
    let mut page = String::new();
    for _ in 0..100 {
        page = admin_get(app.admin_addr, "/metrics").await.body;
        if metric(&page, "hitless_tunnels_open") == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&page, "hitless_tunnels_open"), Some(0.0), "{page}");
    let up = metric(&page, "hitless_tunnel_bytes_total{direction=\"up\"}").unwrap_or(0.0);
    assert!(up > 1_048_576.0, "{page}");
}

#[tokio::test]
async fn refused_upgrade_is_passed_through() {
    let plain = named_upstream("no websockets here").await;
    let app = start_proxy(&simple_config(plain.addr)).await;
    let stream = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    let url = format!("ws://{}/chat", app.traffic_addrs[0]);
    match tokio_tungstenite::client_async(url, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 200, "the backend's own answer");
        }
        other => panic!("expected the backend's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_pong_passes_and_an_idle_tunnel_is_closed() {
    let (echo, _task) = ws_echo().await;
    let config = format!("timeouts: {{tunnel_idle: 300ms}}\n{}", simple_config(echo));
    let app = start_proxy(&config).await;
    let mut ws = connect(app.traffic_addrs[0]).await;
    ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }
    // Silent both ways past tunnel_idle: hitless closes the tunnel.
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
    let ended = !matches!(end, Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))));
    assert!(ended, "the idle tunnel was not closed: {end:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(metric(&page, "hitless_tunnels_open"), Some(0.0), "{page}");
}

/// A WebSocket echo server that records the handshake it was sent and picks the `chat.v2`
/// subprotocol when offered.
// The handshake callback's Result type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn recording_ws_echo() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<http::Request<()>>>>,
) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let callback = |req: &Request, mut response: Response| {
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if offered.split(',').any(|p| p.trim() == "chat.v2") {
                        response
                            .headers_mut()
                            .insert("sec-websocket-protocol", "chat.v2".parse().unwrap());
                    }
                    let mut copy = http::Request::new(());
                    *copy.method_mut() = req.method().clone();
                    *copy.uri_mut() = req.uri().clone();
                    *copy.version_mut() = req.version();
                    *copy.headers_mut() = req.headers().clone();
                    record.lock().unwrap().push(copy);
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An RFC 8441 extended CONNECT from an HTTP/2 client.
async fn h2_connect(proxy: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = || {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{proxy}{path}"))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat.v1, chat.v2")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) must have arrived first.
    let mut last = None;
    for _ in 0..100 {
        sender.ready().await.unwrap();
        match sender.send_request(request()).await {
            Ok(response) => return response,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    panic!("extended CONNECT never accepted: {last:?}");
}

#[tokio::test]
async fn websocket_over_http2_reaches_an_http1_backend() {
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let (echo, handshakes) = recording_ws_echo().await;
    let app = start_proxy(&simple_config(echo)).await;
    let mut response = h2_connect(app.traffic_addrs[0], "/chat?room=7").await;
    assert_eq!(
        response.status(),
        200,
        "the backend's 101 is the HTTP/2 client's 200"
    );
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
    assert!(response.headers().contains_key("x-request-id"));
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "256 KiB echoed intact"),
        other => panic!("expected binary, got {other:?}"),
    }
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(metric(&page, "hitless_tunnels_open"), Some(1.0), "{page}");
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    // The backend got a plain HTTP/1.1 WebSocket handshake.
    let seen = handshakes.lock().unwrap();
    let h = &seen[0];
    assert_eq!(h.method(), http::Method::GET);
    assert_eq!(h.uri().to_string(), "/chat?room=7");
    assert_eq!(h.headers()["upgrade"], "websocket");
    assert_eq!(h.headers()["sec-websocket-version"], "13");
    assert_eq!(h.headers()["sec-websocket-key"].len(), 24);
    assert_eq!(
        h.headers()["host"],
        app.traffic_addrs[0].to_string().as_str()
    );
}

#[tokio::test]
async fn an_http2_websocket_to_a_backend_that_does_not_switch_is_an_error() {
    let plain = named_upstream("no websockets here").await;
    let app = start_proxy(&simple_config(plain.addr)).await;
    let response = h2_connect(app.traffic_addrs[0], "/chat").await;
    // A 200 would tell the client its tunnel is open.
    assert_eq!(response.status(), 502);
    let status = response.headers()["proxy-status"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(status.contains("instead of 101"), "{status}");
}

#[tokio::test]
async fn an_open_websocket_keeps_its_place_under_max_connections() {
    let (echo, _task) = ws_echo().await;
    let app = start_proxy(&format!(
        "limits: {{max_connections: 1}}\n{}",
        simple_config(echo)
    ))
    .await;
    let proxy = app.traffic_addrs[0];
    let mut ws = connect(proxy).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // The upgraded connection is a tunnel now, still a client connection: the cap is reached.
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(&page, "hitless_downstream_connections_open"),
        Some(1.0),
        "{page}"
    );
    let mut second = TcpStream::connect(proxy).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    second
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    wait_metric(
        app.admin_addr,
        "hitless_connection_limit_reached_total",
        1.0,
    )
    .await;
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), second.read(&mut buf))
            .await
            .is_err(),
        "served beyond the cap while a WebSocket was open"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        second.read_to_end(&mut out),
    )
    .await
    .expect("never served after the WebSocket closed")
    .unwrap();
    assert!(!out.is_empty());
}
