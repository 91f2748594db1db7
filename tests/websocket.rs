//! HTTP/1.1 Upgrade through hitless: a real WebSocket echo server (tokio-tungstenite) and a
//! real WebSocket client; text, binary, a 1 MiB message, the close handshake, the tunnel
//! metrics, and a refused upgrade passed through as an ordinary answer.

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
